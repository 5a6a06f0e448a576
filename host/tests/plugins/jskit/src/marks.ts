// The `marks` behaviour (host/tests/fresh_instances.rs): reports what earlier
// requests left in this instance, then leaves this request's `mark` in a
// globalThis property, a closure's captured variable and a large array kept
// in a module variable. With `then = trap` it traps after marking (the engine
// runs out of memory); with `then = spin` it spins until the host's deadline.
import type { Inputs } from "optech-sdk";

const NONE = "none";
/** 1 Mi slots: 8 MiB of the engine's heap. */
const HEAP_SLOTS = 1 << 20;

const closure = (() => {
  let captured: string | undefined;
  return (next: string): string => {
    const before = captured ?? NONE;
    captured = next;
    return before;
  };
})();

let heap: string[] | undefined;

type Marked = typeof globalThis & { optechMark?: string };

export function marks(inputs: Inputs): Record<string, string> {
  const mark = inputs.require("mark");
  const global = globalThis as Marked;
  const seen = {
    global: global.optechMark ?? NONE,
    closure: closure(mark),
    heap: heap === undefined ? NONE : `${heap[HEAP_SLOTS - 1]} x ${heap.length}`,
  };
  global.optechMark = mark;
  heap = new Array<string>(HEAP_SLOTS).fill(mark);
  switch (inputs.get("then")) {
    case "trap":
      return exhaust();
    case "spin":
      for (;;) {
        // Until the host's deadline stops it.
      }
  }
  return seen;
}

/** Keeps allocating until the engine gives up: under the plugin's `memory`, a trap. */
function exhaust(): never {
  const hoard: unknown[] = [];
  for (let i = 0; ; i++) {
    hoard.push({ i, pad: new Array(64).fill(i) });
  }
}
