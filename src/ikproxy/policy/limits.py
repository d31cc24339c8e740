"""Rate limits: how often a client may start runs, in this process or shared through a store.

A rate is a number of requests per unit of time: in code `TokenBucket(rate=3 / 60,
burst=3)` (`rate` in requests per second), or in words, as Django REST framework
and `limits` write it: `TokenBucket.parse("3/minute")`, or `rate_limit="3/m"` in a
`Policy`.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar, Union

from ikproxy.stores import Store

__all__ = ["MaybeAwaitable", "RateLimiter", "SharedTokenBucket", "TokenBucket", "parse_rate"]

R = TypeVar("R")
MaybeAwaitable = Union[R, Awaitable[R]]

#: The seconds in each unit a rate may be written in ("3/m", "3/minute"...).
PERIODS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}
_RATE = re.compile(r"\s*([0-9]{1,9})\s*/\s*([a-z]+)\s*")


def parse_rate(text: str) -> tuple[int, int]:
    """`"3/minute"` as `(3, 60)`: a number of requests, and the period in seconds.

    The units are those of Django REST framework and `limits`: s, sec, second,
    m, min, minute, h, hour, d, day. Anything else raises `ValueError` saying
    what was expected.
    """
    match = _RATE.fullmatch(text.lower()) if isinstance(text, str) else None
    if match is None or match[2] not in PERIODS or int(match[1]) < 1:
        raise ValueError(
            f"invalid rate {text!r}: expected N/unit with N >= 1 and unit one of "
            "s, sec, second, m, min, minute, h, hour, d, day (for example '3/minute')"
        )
    return int(match[1]), PERIODS[match[2]]


class RateLimiter:
    """The rate-limit hook's shape: `acquire(key)` gives None (go) or seconds to wait.

    `acquire` may also be `async` (a shared store such as Redis, say). The proxy
    calls it once per accepted run, and `refund(key)` when that run then failed to
    start upstream (the default `refund` gives nothing back).
    """

    def acquire(self, key: str) -> MaybeAwaitable[float | None]:  # pragma: no cover - interface
        raise NotImplementedError

    def refund(self, key: str) -> MaybeAwaitable[None]:
        """Give back the token `acquire(key)` took (its run did not start); may be async."""
        return None


class TokenBucket(RateLimiter):
    """An in-memory token bucket per client key: `burst` requests at once, `rate` per second.

    `rate` is in requests per second (`3 / 60`: three a minute), `burst` a number
    of requests; `TokenBucket.parse("3/minute")` gives the same from words.
    Per process: with several worker processes each has its own buckets (a
    shared store holds them for all: see `SharedTokenBucket`). Keys idle long
    enough to have refilled are forgotten, so memory stays bounded.
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

    @classmethod
    def parse(cls, text: str, *, max_keys: int = 100_000) -> TokenBucket:
        """A bucket from a rate in words: `"3/minute"` allows 3 at once, then one every 20 s.

        `N/unit`: `N` requests per unit (s, sec, second, m, min, minute, h, hour,
        d, day), all `N` available at once (`burst=N`, `rate=N / seconds`).
        """
        count, seconds = parse_rate(text)
        return cls(rate=count / seconds, burst=count, max_keys=max_keys)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"

    def refund(self, key: str) -> None:
        with self._lock:
            held = self._buckets.get(key)
            if held is not None:
                self._buckets[key] = (min(float(self.burst), held[0] + 1.0), held[1])

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
    (`RedisStore`): each take is one atomic step in the store. `rate` is in
    requests per second, `burst` a number of requests, as for `TokenBucket`.
    """

    def __init__(self, store: Store, rate: float = 1.0, burst: int = 10) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("TokenBucket needs rate > 0 and burst >= 1")
        self.store = store
        self.rate = rate
        self.burst = burst

    async def acquire(self, key: str) -> float | None:
        return await self.store.acquire_token(key, rate=self.rate, burst=self.burst)

    async def refund(self, key: str) -> None:
        await self.store.refund_token(key, rate=self.rate, burst=self.burst)
