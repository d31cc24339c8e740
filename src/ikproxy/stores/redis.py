"""`RedisStore`: state shared by every worker and machine through one Redis (redis-py asyncio).

Keys, under `prefix` (default `ikproxy`), with the run token as a Redis Cluster
hash tag so that each script touches one slot:

* `<prefix>:run:{<token>}`: a hash, the run's `count`, `done` and JSON `meta`;
* `<prefix>:run:{<token>}:log`: a stream, event `n` at entry id `n-0`, field `e`;
* `<prefix>:run:{<token>}:seen`: set while a follower reads the run;
* `<prefix>:rate:<key>`: a GCRA rate-limit bucket (its theoretical arrival time);
* `<prefix>:slots:<key>`: a sorted set of active-run slots scored by expiry (ms);
* `<prefix>:lease:<name>`: a lease, its owner as the value.

Every key has a TTL. Each write is one Lua script or one pipeline: one round trip.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import math
import re
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ikproxy.redaction import redact_url
from ikproxy.stores.base import Append, RunInfo, StoreUnavailable
from ikproxy.telemetry.spans import store_call

__all__ = ["RedisStore"]

_APPEND = """
local ttl = ARGV[1]
local out = {}
local a = 2
for r = 1, #KEYS / 2 do
  local info, log = KEYS[2 * r - 1], KEYS[2 * r]
  local first, final, n = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local count = tonumber(redis.call('HGET', info, 'count') or '-1')
  if count >= 0 and count == first - 1 and redis.call('HGET', info, 'done') ~= '1' then
    for i = 0, n - 1 do
      redis.call('XADD', log, (first + i) .. '-0', 'e', ARGV[a + i])
    end
    count = first + n - 1
    redis.call('HSET', info, 'count', count, 'done', final)
    redis.call('PEXPIRE', info, ttl)
    redis.call('PEXPIRE', log, ttl)
  end
  a = a + n
  out[r] = count
end
return out
"""

_GCRA = """
redis.replicate_commands()  -- Redis 5-6: TIME before writes
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = 1 / tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat + interval - tonumber(ARGV[2]) * interval
if now < allow_at then return string.format('%.6f', allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
           'PX', math.max(1, math.ceil((new_tat - now) * 1000)))
return false
"""

_GCRA_REFUND = """
redis.replicate_commands()  -- Redis 5-6: TIME before writes
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat <= now then return false end
tat = math.max(tat - 1 / tonumber(ARGV[1]), now)
if tat <= now then redis.call('DEL', KEYS[1]) return false end
redis.call('SET', KEYS[1], string.format('%.6f', tat),
           'PX', math.max(1, math.ceil((tat - now) * 1000)))
return false
"""

_ACQUIRE_SLOT = """
redis.replicate_commands()  -- Redis 5-6: TIME before writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1])
   or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return false
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(first[2]) - now)
"""

_RENEW_SLOT = """
redis.replicate_commands()  -- Redis 5-6: TIME before writes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_ACQUIRE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

#: A Redis Cluster hash tag: the run token in a key.
_HASH_TAG = re.compile(r"\{[^}]*\}")

#: The longest a blocking read waits, so that its connection's timeout stays short.
_MAX_BLOCK = 5.0


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class _Clients:
    """The connections and scripts of one event loop."""

    def __init__(self, store: RedisStore) -> None:
        options: dict[str, Any] = {
            "socket_connect_timeout": store.timeout,
            "retry": Retry(NoBackoff(), 1),
            "protocol": 2,
        }
        # Commands share a bounded pool. A burst of requests queues for its
        # connections (each is held for one reply, at most `timeout`), so the wait
        # for one is bounded more loosely than Redis itself.
        commands = aioredis.BlockingConnectionPool.from_url(
            store.url,
            max_connections=store.max_connections,
            timeout=10 * store.timeout,
            socket_timeout=store.timeout,
            **options,
        )
        self.redis = aioredis.Redis(connection_pool=commands)
        # A follower's blocking read holds its connection for up to _MAX_BLOCK: one
        # connection per follower on another instance, in a pool of their own.
        reads = aioredis.ConnectionPool.from_url(
            store.url,
            max_connections=2**31,
            socket_timeout=_MAX_BLOCK + store.timeout,
            **options,
        )
        self.blocking = aioredis.Redis(connection_pool=reads)
        script = self.redis.register_script
        self.append = script(_APPEND)
        self.gcra = script(_GCRA)
        self.gcra_refund = script(_GCRA_REFUND)
        self.acquire_slot = script(_ACQUIRE_SLOT)
        self.renew_slot = script(_RENEW_SLOT)
        self.acquire_lease = script(_ACQUIRE_LEASE)
        self.renew_lease = script(_RENEW_LEASE)
        self.release_lease = script(_RELEASE_LEASE)


class RedisStore:
    """Runs, rate limits, active-run slots and leases in one Redis, shared by every instance.

    `url` is a redis-py URL (`redis://host:6379/0`, `rediss://...`,
    `unix:///path`). Connecting and each reply time out after `timeout`
    seconds (blocking reads after their wait plus `timeout`); a failure raises
    `StoreUnavailable`. With `fail_open=True` rate limits and active-run caps
    let requests through while Redis is unreachable instead (the default
    refuses them with 503 `store_unavailable`). Commands share at most
    `max_connections` connections per event loop; each follower reading a run
    produced on another instance holds one more while it reads.
    """

    shared = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "ikproxy",
        timeout: float = 1.0,
        fail_open: bool = False,
        max_connections: int = 100,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.fail_open = fail_open
        self.max_connections = max_connections
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def _c(self) -> _Clients:
        """This event loop's clients (redis-py's connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        clients = self._by_loop.get(loop)
        if clients is None:
            clients = self._by_loop[loop] = _Clients(self)
        return clients

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r})"

    @contextlib.asynccontextmanager
    async def _guard(self, operation: str = "command") -> AsyncIterator[None]:
        """Turn redis-py's failures into `StoreUnavailable`: connection errors, timeouts and
        error replies alike (OOM under `maxmemory`, READONLY on a replica, BUSY scripts);
        time the call (`ikproxy.store.duration`, by `operation`) and count its failures.

        Not chained: redis-py's own exception names the command and its keys (run
        tokens), and a logged traceback would show it; the scrubbed text says the rest.
        """
        with store_call(operation):
            try:
                yield
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                where = self._where()
                raise StoreUnavailable(f"{where} is unreachable: {self._scrub(exc)}") from None
            except RedisError as exc:
                what = f"{self._where()} refused a command ({type(exc).__name__})"
                raise StoreUnavailable(f"{what}: {self._scrub(exc)}") from None

    def _where(self) -> str:
        return f"Redis at {redact_url(self.url)}"

    def _scrub(self, exc: BaseException) -> str:
        """redis-py's message, safe to log: its first line, without the command a pipeline
        names (its keys hold run tokens), any `{hash tag}`, or the URL's password."""
        text = (str(exc).splitlines() or [type(exc).__name__])[0]
        text = text.rpartition(" caused error: ")[2]
        if text.startswith("(") and text.endswith(",)"):  # redis-py 8.1: the reply's args
            with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
                reply = ast.literal_eval(text)
                text = str(reply[0]) if isinstance(reply, tuple) and reply else text
        text = _HASH_TAG.sub("{...}", text)[:200]
        password = urlsplit(self.url).password if "@" in self.url else None
        for secret in {password, unquote(password)} if password else ():
            text = text.replace(secret, "***")
        return text

    def _run_keys(self, run: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:run:{{{run}}}"
        return base, f"{base}:log", f"{base}:seen"

    # -- run logs ---------------------------------------------------------------

    async def create_run(self, run: str, meta: Mapping[str, Any], *, ttl: float) -> None:
        info, log, _ = self._run_keys(run)
        async with self._guard(), self._c.redis.pipeline(transaction=True) as pipe:
            pipe.delete(log)
            pipe.hset(info, mapping={"count": 0, "done": 0, "meta": _dumps(dict(meta))})
            pipe.pexpire(info, _ms(ttl))
            await pipe.execute()

    async def append_events(
        self,
        run: str,
        first: int,
        events: Sequence[Mapping[str, Any]],
        *,
        ttl: float,
        final: bool = False,
    ) -> int:
        return (await self.append_many([Append(run, first, events, final)], ttl=ttl))[0]

    async def append_many(self, appends: Sequence[Append], *, ttl: float) -> list[int]:
        # One script call for every run: one round trip, however many runs and events.
        # (On Redis Cluster, the runs of one call must share a hash slot.)
        keys: list[str] = []
        args: list[Any] = [_ms(ttl)]
        for run, first, events, final in appends:
            info, log, _ = self._run_keys(run)
            keys += (info, log)
            args += (first, 1 if final else 0, len(events))
            args.extend(_dumps(e) for e in events)
        async with self._guard():
            counts = await self._c.append(keys=keys, args=args)
        return [int(c) for c in counts]

    async def read_events(
        self, run: str, after: int, *, timeout: float, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        _, log, _ = self._run_keys(run)
        block = _ms(min(max(timeout, 0.001), _MAX_BLOCK))
        async with self._guard("blocking_read"):
            reply: Any = await self._c.blocking.xread({log: f"{after}-0"}, count=limit, block=block)
        events: list[tuple[int, dict[str, Any]]] = []
        for _name, entries in reply or []:
            for entry_id, fields in entries:
                number = int(entry_id.split(b"-", 1)[0])
                events.append((number, json.loads(fields[b"e"])))
        return events

    async def run_info(self, run: str) -> RunInfo | None:
        info, _, seen = self._run_keys(run)
        async with self._guard(), self._c.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(info)
            pipe.exists(seen)
            fields, followed = await pipe.execute()
        if not fields:
            return None
        meta = json.loads(fields.get(b"meta", b"{}"))
        done = fields.get(b"done") == b"1"
        return RunInfo(int(fields.get(b"count", 0)), done, bool(followed), meta)

    async def touch_run(self, run: str, *, ttl: float) -> None:
        _, _, seen = self._run_keys(run)
        async with self._guard():
            await self._c.redis.set(seen, b"1", px=_ms(ttl))

    async def expire_run(self, run: str, *, ttl: float) -> None:
        info, log, _ = self._run_keys(run)
        async with self._guard(), self._c.redis.pipeline(transaction=False) as pipe:
            pipe.pexpire(info, _ms(ttl))
            pipe.pexpire(log, _ms(ttl))
            await pipe.execute()

    async def delete_run(self, run: str) -> None:
        async with self._guard():
            await self._c.redis.delete(*self._run_keys(run))

    # -- rate limits ---------------------------------------------------------------

    async def acquire_token(self, key: str, *, rate: float, burst: int) -> float | None:
        try:
            async with self._guard():
                wait = await self._c.gcra(keys=[f"{self.prefix}:rate:{key}"], args=[rate, burst])
        except StoreUnavailable:
            if self.fail_open:
                return None
            raise
        return None if wait is None else float(wait)

    async def refund_token(self, key: str, *, rate: float, burst: int) -> None:
        try:
            async with self._guard():
                await self._c.gcra_refund(keys=[f"{self.prefix}:rate:{key}"], args=[rate])
        except StoreUnavailable:
            if not self.fail_open:
                raise

    # -- active-run slots ----------------------------------------------------------

    async def acquire_slot(self, key: str, slot: str, *, limit: int, ttl: float) -> float | None:
        try:
            async with self._guard():
                wait = await self._c.acquire_slot(
                    keys=[f"{self.prefix}:slots:{key}"], args=[slot, limit, _ms(ttl)]
                )
        except StoreUnavailable:
            if self.fail_open:
                return None
            raise
        return None if wait is None else max(float(wait) / 1000, 0.0)

    async def renew_slot(self, key: str, slot: str, *, ttl: float) -> bool:
        async with self._guard():
            kept = await self._c.renew_slot(
                keys=[f"{self.prefix}:slots:{key}"], args=[slot, _ms(ttl)]
            )
        return bool(kept)

    async def release_slot(self, key: str, slot: str) -> None:
        async with self._guard():
            await self._c.redis.zrem(f"{self.prefix}:slots:{key}", slot)

    # -- leases ----------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        async with self._guard():
            got = await self._c.acquire_lease(
                keys=[f"{self.prefix}:lease:{name}"], args=[owner, _ms(ttl)]
            )
        return bool(got)

    async def renew_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        async with self._guard():
            kept = await self._c.renew_lease(
                keys=[f"{self.prefix}:lease:{name}"], args=[owner, _ms(ttl)]
            )
        return bool(kept)

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._guard():
            await self._c.release_lease(keys=[f"{self.prefix}:lease:{name}"], args=[owner])

    async def lease_owner(self, name: str) -> str | None:
        async with self._guard():
            holder: Any = await self._c.redis.get(f"{self.prefix}:lease:{name}")
        return None if holder is None else bytes(holder).decode()

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        clients = self._by_loop.pop(asyncio.get_running_loop(), None)
        if clients is not None:
            await clients.redis.aclose()
            await clients.blocking.aclose()
