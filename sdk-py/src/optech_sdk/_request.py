"""The request a handler receives: its key and its inputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Union

from ._errors import InvalidInput

InputsLike = Union[Mapping[str, str], Iterable[tuple[str, str]]]
"""What `Inputs` can be built from: a mapping, or (name, value) pairs."""


class Inputs(Mapping[str, str]):
    """A request's inputs: names to string values, in the order the request
    gave them.

    It is a read-only mapping, so ``req.inputs.get(name, default=None)``,
    ``name in req.inputs``, ``req.inputs[name]``, ``dict(req.inputs)`` and
    iteration (in request order) work as for a dict.
    A value that was not a JSON string in the request (a number, a boolean)
    arrives as its JSON text: ``12`` is ``"12"``. A name given twice keeps its
    last value.
    """

    __slots__ = ("_values",)

    def __init__(self, values: InputsLike = ()) -> None:
        self._values: dict[str, str] = dict(values)

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def require(self, name: str) -> str:
        """The value of `name`; when the request does not have it, raises
        `InvalidInput` naming it, which the host answers with 400 invalid_input."""
        try:
            return self._values[name]
        except KeyError:
            raise InvalidInput(f"missing input `{name}`") from None

    def __repr__(self) -> str:
        return f"Inputs({self._values!r})"


@dataclass(frozen=True)
class Request:
    """One data request as the handler sees it.

    `key` is the request's key: one plugin may be mapped to several keys.
    """

    key: str
    inputs: Inputs
