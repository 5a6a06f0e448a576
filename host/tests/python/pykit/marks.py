"""The `marks` behaviour (host/tests/fresh_instances.rs): reports what earlier
requests left in this instance, then leaves this request's `mark` in a module
global, a class attribute and a large list kept in a module global. With
`then = trap` it traps after marking (`os.abort()`); with `then = spin` it
spins until the host's deadline stops it."""

import os

NONE = "none"
HEAP_SLOTS = 1 << 20  # 8 MiB of references

mark_global = None
heap = None


class Kept:
    mark = None


def marks(inputs):
    global mark_global, heap
    mark = inputs.require("mark")
    seen = {
        "global": mark_global or NONE,
        "class": Kept.mark or NONE,
        "heap": NONE if heap is None else f"{heap[-1]} x {len(heap)}",
    }
    mark_global = mark
    Kept.mark = mark
    heap = [mark] * HEAP_SLOTS
    then = inputs.get("then")
    if then == "trap":
        os.abort()
    if then == "spin":
        while True:
            pass
    return seen
