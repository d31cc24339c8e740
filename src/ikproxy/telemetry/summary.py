"""A finished run, as the run-end hook sees it: what ran, for whom, how it ended, what it cost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Union

__all__ = ["RunEndHook", "RunSummary"]


@dataclass(frozen=True)
class RunSummary:
    """One stream of a run, once its terminal event went out (or its client left).

    `outcome` is `"result"`, the error event's code (`"upstream_failed"`,
    `"timeout"`, ...), `"disconnected"` when the client left first, or
    `"cancelled"` when the server stopped the run. Times are Unix timestamps
    and seconds; `events` and `bytes` count what was written to this client.
    A run resumed on another connection reports each stream, the resumed ones
    with `resumed=True` (and `taken_over=True` when this instance took the run
    over from a producer that died).
    """

    task: str | None
    outcome: str
    caller_key: str | None
    request_id: str
    started_at: float
    ended_at: float
    duration: float
    events: int
    bytes: int
    upstream_run_id: str | None
    resumed: bool
    taken_over: bool


#: `on_run_end(request, summary)`: called once per started run, after its end; sync or async.
RunEndHook = Callable[[Any, RunSummary], Union[Awaitable[None], None]]
