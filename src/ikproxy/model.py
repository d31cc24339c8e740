"""What a run reports (`Progress`) and returns (`Results`), and their JSON wire form.

The wire form, used by every layer and documented in docs/protocol.md:

    Progress: {"state": "STARTED", "eta": [lower_ms, upper_ms], "run_id": "...",
               "uuid": "..." | null, "name": "..." | null, "fraction": 0.4 | null,
               "results": {...}}            # "results" on the final progress only
    Results:  {"uuid": "..." | null, "outputs": [{"image": "<base64>"}, ...]}

Results carry the outputs only: the inputs of a run are never echoed back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union, overload

from ikproxy.io import BaseIO, io_from_json

__all__ = ["Eta", "Progress", "Results", "State", "StreamItem"]

T = TypeVar("T", bound=BaseIO)

Eta = tuple[int | None, int | None]
"""A pair of milliseconds `(lower, upper)`; either bound may be unknown (None)."""


class State:
    """Run states. Upstreams may report others: a state is any string."""

    BLOCKING = "BLOCKING"
    SENDING = "SENDING"
    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclass(frozen=True, eq=True)
class Results:
    """The outputs of a finished run, typed by their wire key."""

    outputs: tuple[BaseIO, ...] = ()
    uuid: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.outputs, tuple):
            object.__setattr__(self, "outputs", tuple(self.outputs))

    @overload
    def get_output(self, index: int = 0) -> BaseIO: ...
    @overload
    def get_output(self, index: int = 0, *, expect: type[T]) -> T: ...
    def get_output(self, index: int = 0, *, expect: type[BaseIO] | None = None) -> BaseIO:
        """Output `index`; with `expect=ImageIO` (say), a `TypeError` unless it is one."""
        try:
            output = self.outputs[index]
        except IndexError:
            raise IndexError(
                f"output index {index} out of range: the run has {len(self.outputs)} output(s)"
            ) from None
        if expect is not None and not isinstance(output, expect):
            raise TypeError(
                f"output {index} is {type(output).__name__} ({output.kind!r}), "
                f"not {expect.__name__}"
            )
        return output

    def get_outputs(self) -> list[BaseIO]:
        """All outputs, in order."""
        return list(self.outputs)

    def __iter__(self) -> Iterator[BaseIO]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "outputs": [o.to_json() for o in self.outputs]}

    @classmethod
    def from_json(cls, obj: Any) -> Results:
        """Results from their wire form; `ValueError` saying what is wrong otherwise."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"results must be a JSON object, not {type(obj).__name__}")
        outputs = obj.get("outputs", [])
        if not isinstance(outputs, list):
            raise ValueError("results.outputs must be a list")
        return cls(
            outputs=tuple(io_from_json(o) for o in outputs),
            uuid=_optional_str(obj, "uuid", "results"),
        )


@dataclass(frozen=True, eq=True)
class Progress:
    """One state report of a run. The final one has `results` set (or a FAILURE state)."""

    state: str
    eta: Eta = (None, None)
    run_id: str | None = None
    uuid: str | None = None
    name: str | None = None
    fraction: float | None = None
    results: Results | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.fraction is not None and not (0.0 <= self.fraction <= 1.0):
            raise ValueError(f"fraction must be between 0 and 1, not {self.fraction!r}")

    @property
    def done(self) -> bool:
        """True on the final progress, the one that carries the results."""
        return self.results is not None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "state": self.state,
            "eta": list(self.eta),
            "run_id": self.run_id,
            "uuid": self.uuid,
            "name": self.name,
            "fraction": self.fraction,
        }
        if self.results is not None:
            obj["results"] = self.results.to_json()
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> Progress:
        """A progress from its wire form; `ValueError` saying what is wrong otherwise."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"progress must be a JSON object, not {type(obj).__name__}")
        state = obj.get("state")
        if not isinstance(state, str):
            raise ValueError("progress.state must be a string")
        fraction = obj.get("fraction")
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not math.isfinite(fraction)
        ):
            raise ValueError("progress.fraction must be a number or null")
        results = obj.get("results")
        return cls(
            state=state,
            eta=parse_eta(obj.get("eta")),
            run_id=_optional_str(obj, "run_id", "progress"),
            uuid=_optional_str(obj, "uuid", "progress"),
            name=_optional_str(obj, "name", "progress"),
            fraction=None if fraction is None else float(fraction),
            results=None if results is None else Results.from_json(results),
        )


def parse_eta(value: Any) -> Eta:
    """An ETA from its wire form (`[lower, upper]` in ms, null allowed anywhere)."""
    if value is None:
        return (None, None)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError("eta must be a list of two numbers (milliseconds) or nulls")
    lower, upper = (_eta_bound(v) for v in value)
    return (lower, upper)


def _eta_bound(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("eta must be a list of two numbers (milliseconds) or nulls")
    return round(value)


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string or null")
    return value


StreamItem = Union[Progress, Mapping[str, Any]]
"""What a run's stream carries: progress, or a wire object (a terminal `error`, say)."""
