"""Resumable runs: a run whose events outlive the connection that started it.

With `Policy(resume_window=60)`, each run is read by a task of its own and its
events are kept; every event id is `<token>:<n>`, where the token is long and
random. A client that lost its connection sends the last id it saw as
`Last-Event-ID` (a browser's `EventSource` does so by itself) and gets the
events after it, then the live ones. A run with no client for `resume_window`
seconds is stopped; a finished run is forgotten `resume_window` seconds after
its end. Runs live in the memory of one process: with several workers, resume
needs sticky sessions.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio

from .errors import IkproxyError, UpstreamError, WorkflowFailed
from .model import Progress, State
from .server import StreamItem, aclose, deadline, error_code

__all__ = ["RunRegistry", "SharedRun"]

logger = logging.getLogger("ikproxy")


class _Failed(IkproxyError):
    """A run's terminal error, replayed to each client that follows it (logged once)."""

    logged = True

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class SharedRun:
    """One run read by a task of its own, with every event kept for its followers."""

    def __init__(
        self,
        registry: RunRegistry,
        token: str,
        stream: AsyncIterator[StreamItem],
        *,
        request_id: str,
        timeout: float | None,
    ) -> None:
        self.token = token
        self.request_id = request_id
        self.items: list[dict[str, Any]] = []
        self.failure: _Failed | None = None
        self.done = False
        self.followers = 0
        self._registry = registry
        self._changed = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._task = asyncio.get_running_loop().create_task(self._produce(stream, timeout))

    async def _produce(self, stream: AsyncIterator[StreamItem], timeout: float | None) -> None:
        try:
            with deadline(timeout):
                async for item in stream:
                    obj = item.to_json() if isinstance(item, Progress) else dict(item)
                    if obj.get("state") == State.FAILURE:
                        raise WorkflowFailed("the upstream reported a FAILURE state")
                    self.items.append(obj)
                    self._notify()
                    if obj.get("results") is not None:
                        break
                else:
                    raise UpstreamError("the run ended without results")
        except Exception as exc:
            code = error_code(exc)
            logger.error("run failed [request_id=%s code=%s]", self.request_id, code, exc_info=exc)
            self.failure = _Failed(code)
        finally:
            with anyio.CancelScope(shield=True):
                await aclose(stream)
            self.done = True
            self._notify()
            self._expire_later()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _expire_later(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self._registry.window, self._expire)

    def _expire(self) -> None:
        """Forget the run; stop it first if it is still going (nobody followed it in time)."""
        self._expiry = None
        if not self.done:
            if self.followers:
                return
            self._task.cancel()
        self._registry.forget(self.token)

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The events after the first `after`, then the live ones; the failure, raised last."""
        self.followers += 1
        if self._expiry is not None and not self.done:
            self._expiry.cancel()
            self._expiry = None
        try:
            index = after
            while True:
                while index < len(self.items):
                    yield self.items[index]
                    index += 1
                if self.done:
                    if self.failure is not None:
                        raise self.failure
                    return
                await self._changed.wait()
        finally:
            self.followers -= 1
            if not self.followers and not self.done:
                self._expire_later()

    def cancel(self) -> None:
        self._task.cancel()


class RunRegistry:
    """The resumable runs of one proxy, by token; bounded in number."""

    def __init__(self, window: float, max_runs: int = 10_000) -> None:
        if window <= 0:
            raise ValueError("resume_window must be a positive number of seconds")
        self.window = window
        self.max_runs = max_runs
        self._runs: dict[str, SharedRun] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def start(
        self, stream: AsyncIterator[StreamItem], *, request_id: str, timeout: float | None
    ) -> SharedRun:
        """Read `stream` in a task of its own and keep its events under a new token."""
        while len(self._runs) >= self.max_runs:
            # Memory stays bounded: the oldest run is stopped and forgotten.
            oldest = next(iter(self._runs))
            self._runs.pop(oldest).cancel()
        token = secrets.token_urlsafe(18)
        run = SharedRun(self, token, stream, request_id=request_id, timeout=timeout)
        self._runs[token] = run
        return run

    def get(self, token: str) -> SharedRun | None:
        return self._runs.get(token)

    def forget(self, token: str) -> None:
        self._runs.pop(token, None)


def parse_position(last_event_id: str) -> tuple[str, int] | None:
    """(token, number of events seen) from a `Last-Event-ID` of the form `<token>:<n>`."""
    token, sep, number = last_event_id.rpartition(":")
    if not sep or not token or not number.isdigit():
        return None
    return token, int(number)
