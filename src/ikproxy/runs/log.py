"""The store side of shared runs: each run's log, and the writer that batches their events.

Kept apart from the registry: the writer only needs what `LoggedRun` says of a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from ikproxy.stores import Append, Store, StoreUnavailable

__all__ = ["LogWriter", "LoggedRun", "RunLog", "is_terminal"]

logger = logging.getLogger("ikproxy")


class LoggedRun(Protocol):
    """What `LogWriter` needs of a run: its token, its events, and how far it got."""

    token: str
    #: Whether the run has ended.
    done: bool
    #: Whether another instance took the run over (this one writes it no more).
    disowned: bool
    #: The run's store log.
    log: RunLog | None
    #: Set once the run has ended and its every event is in the store.
    flushed: asyncio.Event

    @property
    def count(self) -> int: ...

    def log_events(self) -> list[dict[str, Any]]:
        """The events as logged in the store: the items, then the failure if any."""
        ...


def is_terminal(event: Mapping[str, Any]) -> bool:
    """Whether a logged event ends its run: a result, or an error (`{"error": code}`)."""
    return event.get("results") is not None or "error" in event


class RunLog:
    """The store side of one run: its token, metadata, and how many events the store holds.

    Events are wire objects; a failure is logged as `{"error": code}`. The
    registry's `LogWriter` writes them.
    """

    def __init__(self, store: Store, token: str, meta: Mapping[str, Any], ttl: float) -> None:
        self.store = store
        self.token = token
        self.meta = dict(meta)
        self.ttl = ttl
        #: How many events the store is known to hold.
        self.written = 0

    async def create(self) -> None:
        await self.store.create_run(self.token, self.meta, ttl=self.ttl)
        self.written = 0

    async def delete(self) -> None:
        await self.store.delete_run(self.token)


class LogWriter:
    """Writes the new events of every run of a registry to the store, many runs per round trip.

    One task per registry: it wakes when a run has new events, waits `linger`
    seconds for others, and sends every pending event of every run in one
    `append_many`, so that a busy instance writes in batches. It renews the TTL
    of running runs (a heartbeat), re-sends what a store lost (a restart), and
    retries while the store is unreachable; the runs' own followers read from
    memory and never wait for it.
    """

    #: The most events sent in one round trip (a larger backlog takes several).
    batch = 1000
    #: Seconds a write waits for more events to join it: the store (and followers
    #: on other instances) may lag the run by this much; its local followers do not.
    linger = 0.005

    def __init__(self, store: Store, window: float) -> None:
        self.store = store
        self.window = window
        self._dirty: dict[str, LoggedRun] = {}
        self._live: dict[str, LoggedRun] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def mark(self, run: LoggedRun) -> None:
        """`run` has events (or an end) the store has not got yet."""
        self._dirty[run.token] = run
        self._live[run.token] = run
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def drop(self, token: str) -> None:
        self._dirty.pop(token, None)
        self._live.pop(token, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while self._live:
            if not self._dirty:
                beat = loop.call_later(self.window / 3, self._heartbeat)
                await self._wake.wait()
                beat.cancel()
            self._wake.clear()
            # Let the events of other runs gather: one round trip carries them all.
            await asyncio.sleep(self.linger)
            batch = self._take()
            try:
                await self._flush(batch)
                backoff = 0.05
            except StoreUnavailable as exc:
                logger.warning("writing run events failed, retrying: %s", exc)
                for run in batch:
                    if run.token in self._live:
                        self._dirty.setdefault(run.token, run)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _heartbeat(self) -> None:
        """A quiet third of the window: renew the TTL of every running run."""
        self._dirty.update(self._live)
        self._wake.set()

    def _take(self) -> list[LoggedRun]:
        batch: list[LoggedRun] = []
        size = 0
        while self._dirty and size < self.batch:
            token = next(iter(self._dirty))
            run = self._dirty.pop(token)
            if run.disowned:
                self.drop(token)  # another instance writes it now
                continue
            batch.append(run)
            size += max(1, run.count + 1 - (run.log.written if run.log else 0))
        return batch

    async def _flush(self, batch: list[LoggedRun]) -> None:
        appends: list[Append] = []
        plans: list[tuple[LoggedRun, int, bool]] = []
        for run in batch:
            log = run.log
            assert log is not None
            events = run.log_events()
            final = run.done and bool(events) and is_terminal(events[-1])
            if run.done and not final:
                # Stopped (abandoned or evicted): nobody may resume it anywhere.
                await self.store.delete_run(run.token)
                self._finished(run)
                continue
            pending = events[log.written :]
            appends.append(Append(run.token, log.written + 1, pending, final))
            plans.append((run, log.written + len(pending), final))
        counts = await self.store.append_many(appends, ttl=self.window) if appends else []
        for (run, expected, final), count in zip(plans, counts, strict=True):
            log = run.log
            assert log is not None
            if run.disowned:
                continue
            if count == -1:
                if run.token not in self._live:
                    continue  # stopped and deleted meanwhile: leave it gone
                # The store lost the run (it restarted): create it again, then re-send.
                await log.create()
                self._dirty[run.token] = run
            elif count != expected:
                log.written = count
                self._dirty[run.token] = run
            else:
                log.written = count
                if final:
                    self._finished(run)

    def _finished(self, run: LoggedRun) -> None:
        self.drop(run.token)
        run.flushed.set()
