"""A scripted deployment: runs that follow a list of Progress, exceptions and gates."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio

from ikproxy import Progress, Results, TaskIO
from ikproxy.io import InputLike, as_inputs


class ScriptedDeployment:
    """A deployment whose runs follow a script: a list of Progress, exceptions and gates.

    `gate` (an anyio.Event) holds the run before its last item, so a test can
    act while the run is "in progress". `closed` is set when the run's
    iterator is closed, whatever the reason.
    """

    def __init__(
        self,
        script: Sequence[Progress | BaseException] | None = None,
        *,
        refuse: BaseException | None = None,
        hold: bool = False,
    ) -> None:
        self.script = list(script) if script is not None else default_script()
        self.refuse = refuse
        self.hold = hold
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()
        self.closed = threading.Event()
        self.release = threading.Event()

    async def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Progress]:
        self.calls.append(
            {"inputs": as_inputs(*inputs), "parameters": dict(parameters or {}), "task": task}
        )
        try:
            if self.refuse is not None:
                raise self.refuse
            self.started.set()
            for index, item in enumerate(self.script):
                if self.hold and index == len(self.script) - 1:
                    await anyio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed.set()

    async def run(self, *inputs: InputLike, **kwargs: Any) -> Results:
        async for progress in self.run_stream(*inputs, **kwargs):
            if progress.results is not None:
                return progress.results
        raise AssertionError("no results")


def default_script() -> list[Progress]:
    results = Results((TaskIO("answer", {"value": 42}),), uuid="u-1")
    return [
        Progress("PENDING", (2000, 3000), run_id="r-1", uuid="u-1", name="t"),
        Progress("STARTED", (1000, 1500), run_id="r-1", uuid="u-1", name="t", fraction=0.5),
        Progress(
            "SUCCESS", (0, 0), run_id="r-1", uuid="u-1", name="t", fraction=1.0, results=results
        ),
    ]
