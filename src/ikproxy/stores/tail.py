"""Follow many run logs over one Redis connection: one blocking `XREAD` for all of them.

A web instance streaming runs produced elsewhere (Celery workers) would hold a
connection per follower, each blocked in its own `XREAD`. `LogTail` keeps one
per event loop instead: its reader blocks on every followed log at once (and on
a wake-up stream of its own, so that a new follower joins at once), and hands
each entry to the followers of that log. A follower reads as with
`RedisStore.read_events`: its events after `after`, waiting up to a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import weakref
from typing import Any

from redis.exceptions import RedisError

from ikproxy.stores.base import StoreUnavailable
from ikproxy.stores.connections import MAX_BLOCK, LoopClients

__all__ = ["LogTail", "TailReader"]

logger = logging.getLogger("ikproxy")

Events = list[tuple[int, dict[str, Any]]]


class TailReader:
    """One follower of one run's log: `read` its events after `after`; `close` when done."""

    def __init__(self, tail: _LoopTail, key: str) -> None:
        self._tail = tail
        self.key = key
        #: The last event number fetched from Redis for this follower.
        self.cursor = 0
        #: The last event number this follower was given.
        self.consumed = 0
        self.queue: asyncio.Queue[tuple[int, dict[str, Any]] | BaseException] = asyncio.Queue()

    async def read(self, run: str, after: int, *, timeout: float, limit: int = 1000) -> Events:
        """Up to `limit` events after `after`, waiting up to `timeout` s for one (`[]` then)."""
        if after != self.consumed:  # a new position: fetch from there
            while not self.queue.empty():
                self.queue.get_nowait()
            self.cursor = self.consumed = after
            self._tail.changed()
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return []
        items = [first]
        while len(items) < limit and not self.queue.empty():
            items.append(self.queue.get_nowait())
        events: Events = []
        for item in items:
            if isinstance(item, BaseException):
                raise StoreUnavailable(f"following a run log failed: {item}")
            events.append(item)
        if events:
            self.consumed = events[-1][0]
        return events

    def close(self) -> None:
        """Stop following (the reader forgets the log at its next round)."""
        self._tail.remove(self)


class _LoopTail:
    """The reader of one event loop: the followed logs, and the task that reads them."""

    def __init__(self, clients: LoopClients, prefix: str) -> None:
        self.clients = clients
        self.wake_key = f"{prefix}:tail:{secrets.token_hex(8)}"
        self.readers: dict[str, list[TailReader]] = {}
        self._task: asyncio.Task[None] | None = None
        self._waking: asyncio.Task[None] | None = None
        self._blocked = False

    def add(self, key: str) -> TailReader:
        reader = TailReader(self, key)
        self.readers.setdefault(key, []).append(reader)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read())
        else:
            self.changed()
        return reader

    def remove(self, reader: TailReader) -> None:
        readers = self.readers.get(reader.key, [])
        if reader in readers:
            readers.remove(reader)
        if not readers:
            self.readers.pop(reader.key, None)

    def changed(self) -> None:
        """A follower joined or moved: wake the blocked read (one write, however many)."""
        if self._blocked and (self._waking is None or self._waking.done()):
            self._waking = asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        try:
            async with self.clients.commands.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": b"1"}, maxlen=16, approximate=True)
                pipe.pexpire(self.wake_key, int(MAX_BLOCK * 4000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("waking the run log reader failed: %s", exc)

    async def _read(self) -> None:
        wake_last = "0-0"
        backoff = 0.05
        while self.readers:
            streams: dict[Any, Any] = {self.wake_key: wake_last}
            for key, readers in self.readers.items():
                streams[key] = f"{min(r.cursor for r in readers)}-0"
            self._blocked = True
            try:
                reply: Any = await self.clients.blocking.xread(
                    streams, count=1000, block=int(MAX_BLOCK * 1000)
                )
                backoff = 0.05
            except (RedisError, OSError) as exc:
                for readers in self.readers.values():
                    for reader in readers:
                        reader.queue.put_nowait(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            finally:
                self._blocked = False
            for name, entries in reply or []:
                key = name.decode() if isinstance(name, bytes) else name
                if key == self.wake_key:
                    wake_last = entries[-1][0].decode()
                    continue
                for entry_id, fields in entries:
                    number = int(entry_id.split(b"-", 1)[0])
                    event = json.loads(fields[b"e"])
                    for reader in self.readers.get(key, []):
                        if number > reader.cursor:
                            reader.cursor = number
                            reader.queue.put_nowait((number, event))


class LogTail:
    """The run logs of one Redis (a `RedisStore`'s `url` and `prefix`), followed per event loop."""

    def __init__(self, url: str, *, prefix: str = "ikproxy", timeout: float = 1.0) -> None:
        self.prefix = prefix
        self._clients = LoopClients(url, timeout)
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopTail] = (
            weakref.WeakKeyDictionary()
        )

    def follow(self, run: str) -> TailReader:
        """A reader of run `run`'s log, for one follower (close it when done)."""
        loop = asyncio.get_running_loop()
        tail = self._by_loop.get(loop)
        if tail is None:
            tail = self._by_loop[loop] = _LoopTail(self._clients, self.prefix)
        return tail.add(f"{self.prefix}:run:{{{run}}}:log")
