"""Rate limits: how often a client may start runs, in this process or shared through a store."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar, Union

from ikproxy.stores import Store

__all__ = ["MaybeAwaitable", "RateLimiter", "SharedTokenBucket", "TokenBucket"]

R = TypeVar("R")
MaybeAwaitable = Union[R, Awaitable[R]]


class RateLimiter:
    """The rate-limit hook's shape: `acquire(key)` gives None (go) or seconds to wait.

    `acquire` may also be `async` (a shared store such as Redis, say).
    """

    def acquire(self, key: str) -> MaybeAwaitable[float | None]:  # pragma: no cover - interface
        raise NotImplementedError


class TokenBucket(RateLimiter):
    """An in-memory token bucket per client key: `burst` requests at once, `rate` per second.

    Per process: with several worker processes each has its own buckets. Keys
    idle long enough to have refilled are forgotten, so memory stays bounded.
    """

    def __init__(self, rate: float = 1.0, burst: int = 10, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("TokenBucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.clock: Callable[[], float] = time.monotonic

    def acquire(self, key: str) -> float | None:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = None
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


class SharedTokenBucket(RateLimiter):
    """A `TokenBucket`'s `rate` and `burst` held in a shared store, for every process at once.

    The proxy uses it in place of a `TokenBucket` when its store is shared
    (`RedisStore`): each take is one atomic step in the store.
    """

    def __init__(self, store: Store, rate: float = 1.0, burst: int = 10) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("TokenBucket needs rate > 0 and burst >= 1")
        self.store = store
        self.rate = rate
        self.burst = burst

    async def acquire(self, key: str) -> float | None:
        return await self.store.acquire_token(key, rate=self.rate, burst=self.burst)
