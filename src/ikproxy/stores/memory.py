"""`MemoryStore`: the store of one process, the default; nothing to install."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ikproxy.stores.base import Append, RunInfo

__all__ = ["MemoryStore"]


@dataclass
class _Run:
    meta: dict[str, Any]
    expires: float
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    followed_until: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    """Every run, bucket, slot and lease in this process's memory, with the same TTLs.

    Not shared: the proxy keeps runs and rate limits in memory by itself when
    given this store, so it costs nothing; its methods serve tests and single
    processes that call the store directly.
    """

    shared = False

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.monotonic
        self._runs: dict[str, _Run] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._swept = 0.0

    # -- run logs ---------------------------------------------------------------

    def _run(self, run: str) -> _Run | None:
        entry = self._runs.get(run)
        if entry is not None and entry.expires <= self.clock():
            del self._runs[run]
            entry.changed.set()
            return None
        return entry

    def _sweep(self) -> None:
        now = self.clock()
        if now - self._swept < 1.0:
            return
        self._swept = now
        for name in [k for k, v in self._runs.items() if v.expires <= now]:
            self._runs.pop(name).changed.set()
        for name in [k for k, (_, exp) in self._buckets.items() if exp <= now]:
            del self._buckets[name]
        for name in [k for k, (_, exp) in self._leases.items() if exp <= now]:
            del self._leases[name]

    async def create_run(self, run: str, meta: Mapping[str, Any], *, ttl: float) -> None:
        self._sweep()
        old = self._runs.get(run)
        self._runs[run] = _Run(dict(meta), self.clock() + ttl)
        if old is not None:
            old.changed.set()

    async def append_events(
        self,
        run: str,
        first: int,
        events: Sequence[Mapping[str, Any]],
        *,
        ttl: float,
        final: bool = False,
    ) -> int:
        entry = self._run(run)
        if entry is None:
            return -1
        if len(entry.events) != first - 1 or entry.done:
            return len(entry.events)
        entry.expires = self.clock() + ttl
        if events or final:
            entry.events.extend(dict(e) for e in events)
            entry.done = final
            changed, entry.changed = entry.changed, asyncio.Event()
            changed.set()
        return len(entry.events)

    async def append_many(self, appends: Sequence[Append], *, ttl: float) -> list[int]:
        return [
            await self.append_events(a.run, a.first, a.events, ttl=ttl, final=a.final)
            for a in appends
        ]

    async def read_events(
        self, run: str, after: int, *, timeout: float, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        entry = self._run(run)
        if entry is None:
            return []
        if len(entry.events) <= after and not entry.done:
            try:
                await asyncio.wait_for(entry.changed.wait(), timeout)
            except asyncio.TimeoutError:
                return []
            entry = self._run(run)
            if entry is None:
                return []
        chunk = entry.events[after : after + limit]
        return [(after + i + 1, event) for i, event in enumerate(chunk)]

    async def run_info(self, run: str) -> RunInfo | None:
        entry = self._run(run)
        if entry is None:
            return None
        followed = entry.followed_until > self.clock()
        return RunInfo(len(entry.events), entry.done, followed, dict(entry.meta))

    async def touch_run(self, run: str, *, ttl: float) -> None:
        entry = self._run(run)
        if entry is not None:
            entry.followed_until = self.clock() + ttl

    async def expire_run(self, run: str, *, ttl: float) -> None:
        entry = self._run(run)
        if entry is not None:
            entry.expires = self.clock() + ttl

    async def delete_run(self, run: str) -> None:
        entry = self._runs.pop(run, None)
        if entry is not None:
            entry.changed.set()

    # -- rate limits ---------------------------------------------------------------

    async def acquire_token(self, key: str, *, rate: float, burst: int) -> float | None:
        # GCRA: the bucket is the "theoretical arrival time" of the next request.
        self._sweep()
        now = self.clock()
        interval = 1.0 / rate
        tat = max(self._buckets.get(key, (now, 0.0))[0], now)
        allow_at = tat + interval - burst * interval
        if now < allow_at:
            return allow_at - now
        new_tat = tat + interval
        self._buckets[key] = (new_tat, new_tat)
        return None

    async def refund_token(self, key: str, *, rate: float, burst: int) -> None:
        now = self.clock()
        held = self._buckets.get(key)
        if held is not None and held[0] > now:
            tat = max(held[0] - 1.0 / rate, now)
            self._buckets[key] = (tat, tat)

    # -- active-run slots ----------------------------------------------------------

    async def acquire_slot(self, key: str, slot: str, *, limit: int, ttl: float) -> float | None:
        now = self.clock()
        held = {s: exp for s, exp in self._slots.get(key, {}).items() if exp > now}
        if slot in held or len(held) < limit:
            held[slot] = now + ttl
            self._slots[key] = held
            return None
        self._slots[key] = held
        return max(min(held.values()) - now, 0.0)

    async def renew_slot(self, key: str, slot: str, *, ttl: float) -> bool:
        now = self.clock()
        held = self._slots.get(key, {})
        if held.get(slot, 0.0) <= now:
            held.pop(slot, None)
            return False
        held[slot] = now + ttl
        return True

    async def release_slot(self, key: str, slot: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.pop(slot, None)
            if not held:
                del self._slots[key]

    # -- leases ----------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        now = self.clock()
        holder, expires = self._leases.get(name, ("", 0.0))
        if expires > now and holder != owner:
            return False
        self._leases[name] = (owner, now + ttl)
        return True

    async def renew_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        now = self.clock()
        holder, expires = self._leases.get(name, ("", 0.0))
        if expires <= now or holder != owner:
            return False
        self._leases[name] = (owner, now + ttl)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        if self._leases.get(name, ("", 0.0))[0] == owner:
            del self._leases[name]

    async def lease_owner(self, name: str) -> str | None:
        holder, expires = self._leases.get(name, ("", 0.0))
        return holder if expires > self.clock() else None

    async def aclose(self) -> None:
        return None
