"""Redis connections per event loop, for the modules that share a `RedisStore`'s Redis.

redis-py's asyncio connections belong to the loop that made them; a Celery
worker runs several loops over its life, a web instance one per thread. Each
loop gets its own pools here: one for commands, one for blocking reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ikproxy.stores.base import StoreUnavailable

__all__ = ["MAX_BLOCK", "LoopClients"]

#: The longest a blocking command waits, so that its connection's timeout stays short.
MAX_BLOCK = 5.0


class _Pair:
    def __init__(self, url: str, timeout: float) -> None:
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 1),
            "protocol": 2,
        }
        self.commands = aioredis.Redis.from_url(
            url, socket_timeout=timeout, max_connections=100, **options
        )
        self.blocking = aioredis.Redis.from_url(
            url, socket_timeout=MAX_BLOCK + timeout, max_connections=2**31, **options
        )


class LoopClients:
    """The Redis clients of `url`, one pair per event loop; failures as `StoreUnavailable`."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pair] = (
            weakref.WeakKeyDictionary()
        )

    def _pair(self) -> _Pair:
        loop = asyncio.get_running_loop()
        pair = self._by_loop.get(loop)
        if pair is None:
            pair = self._by_loop[loop] = _Pair(self.url, self.timeout)
        return pair

    @property
    def commands(self) -> aioredis.Redis:
        """This loop's client for short commands."""
        return self._pair().commands

    @property
    def blocking(self) -> aioredis.Redis:
        """This loop's client for blocking reads (up to `MAX_BLOCK` seconds each)."""
        return self._pair().blocking

    @contextlib.asynccontextmanager
    async def guard(self, what: str) -> AsyncIterator[None]:
        """Turn redis-py's connection failures into `StoreUnavailable` (no URL in the text)."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis is unreachable ({what}): {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close this loop's connections."""
        pair = self._by_loop.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair.commands.aclose()
            await pair.blocking.aclose()
