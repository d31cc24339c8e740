"""Stores: where runs, rate limits and active-run caps live, in one process or shared.

`MemoryStore` (the default) keeps everything in this process: nothing to
install, nothing to configure, but each worker process is on its own.
`RedisStore(url)` (the `ikproxy[redis]` extra) shares it through Redis across
every worker and machine: a run started on one instance can be resumed on
another, and rate limits and `max_active_runs` hold across all of them.

    from ikproxy.stores import RedisStore
    app = create_app(deployment, resume_window=60, store=RedisStore("redis://redis:6379/0"))

Another shared store implements the `Store` protocol (see `ikproxy.stores.base`),
a handful of coroutines in four groups:

* run logs: `create_run`, `append_events` and `append_many` (atomic, numbered,
  one round trip for any number of runs),
  `read_events` (blocking with a timeout), `run_info`, `touch_run` (a follower
  was seen), `expire_run`, `delete_run`;
* rate limits: `acquire_token(key, rate=, burst=)`, a token bucket held atomically;
* active-run slots: `acquire_slot`, `renew_slot`, `release_slot` (leases with a TTL);
* leases: `acquire_lease`, `renew_lease`, `release_lease`, `lease_owner`.

Every key has a TTL; unreachable stores raise `StoreUnavailable`, which the
proxy answers with 503 `store_unavailable`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ikproxy.stores.base import Append, RunInfo, Store, StoreUnavailable
from ikproxy.stores.memory import MemoryStore

if TYPE_CHECKING:
    from ikproxy.stores.redis import RedisStore

__all__ = ["Append", "MemoryStore", "RedisStore", "RunInfo", "Store", "StoreUnavailable"]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra: imported only when RedisStore is asked for.
    if name == "RedisStore":
        from ikproxy.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
