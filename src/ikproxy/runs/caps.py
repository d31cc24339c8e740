"""Active-run caps: at most `max_active_runs` runs of one client key at once, on every instance.

Each run holds a slot in the store (a lease with a TTL) from its submission to
its end; a slot left by an instance that died frees itself when its TTL runs
out, so slots are renewed while their runs live, in one task per proxy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import TypeVar

import anyio

from ikproxy.concurrency import aclose
from ikproxy.errors import HTTPError
from ikproxy.model import Progress
from ikproxy.stores import Store, StoreUnavailable

__all__ = ["ActiveRuns"]

logger = logging.getLogger("ikproxy")

T = TypeVar("T")

#: The longest `Retry-After` of a refusal, in seconds.
_RETRY_AFTER = 5


class ActiveRuns:
    """The active-run cap of one proxy: `limit` slots per client key, held in `store`."""

    def __init__(self, store: Store, limit: int, *, ttl: float = 30.0) -> None:
        if limit < 1:
            raise ValueError("max_active_runs must be at least 1")
        self.store = store
        self.limit = limit
        self.ttl = ttl
        self._held: dict[str, str] = {}
        self._renewer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    async def acquire(self, key: str) -> str:
        """Hold a slot for a new run of `key`; `HTTPError(429, "too_many_runs")` when all are."""
        slot = secrets.token_urlsafe(12)
        wait = await self.store.acquire_slot(f"{key}", slot, limit=self.limit, ttl=self.ttl)
        if wait is not None:
            # Slots are renewed while their runs live: the earliest expiry is only a
            # bound, and runs end at any time; a client polls a few seconds apart.
            seconds = max(1, min(math.ceil(wait), _RETRY_AFTER))
            raise HTTPError(
                429,
                "too_many_runs",
                f"too many active runs (at most {self.limit}): retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        self._held[slot] = key
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())
        return slot

    async def release(self, slot: str) -> None:
        """Free a slot; if the store is unreachable its TTL frees it."""
        key = self._held.pop(slot, None)
        if key is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self.store.release_slot(key, slot)
            except StoreUnavailable as exc:
                logger.warning("could not free an active-run slot (it will expire): %s", exc)

    async def hold(self, slot: str, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """`stream`, with `slot` freed when it ends, fails or is closed.

        The slot is freed before the result goes out, so that a client may
        start its next run as soon as it has the result of the last one.
        """
        try:
            async for item in stream:
                if _has_results(item):
                    await self.release(slot)
                yield item
        finally:
            try:
                await aclose(stream)
            finally:
                await self.release(slot)

    async def _renew(self) -> None:
        """Renew every held slot a few times per TTL while any is held."""
        while self._held:
            await anyio.sleep(self.ttl / 3)
            for slot, key in list(self._held.items()):
                try:
                    if not await self.store.renew_slot(key, slot, ttl=self.ttl):
                        logger.warning("an active-run slot expired before its run ended")
                except StoreUnavailable as exc:
                    logger.warning("could not renew an active-run slot: %s", exc)
                    break


def _has_results(item: object) -> bool:
    if isinstance(item, Progress):
        return item.results is not None
    return isinstance(item, Mapping) and item.get("results") is not None
