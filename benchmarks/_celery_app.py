"""The module `benchmarks/celery_latency.py` runs: imported by its Celery workers and web app.

`IKPROXY_BENCH_REDIS`: the broker and the store; the result backend (for the
`celery-progress` way only) is database 1 of the same Redis. Each progress
carries the time the task reported it (microseconds, in the ETA's lower bound),
so the client measures the latency from report to receipt on one clock.
`IKPROXY_BENCH_LOCAL=1` serves the same task as a `LocalDeployment` instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery

from ikproxy import LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.deployments.celery import CeleryDeployment, Update
from ikproxy.stores import RedisStore

REDIS = os.environ.get("IKPROXY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
celery_app = Celery("bench", broker=REDIS, backend=REDIS.rsplit("/", 1)[0] + "/1")
celery_app.conf.update(worker_prefetch_multiplier=1, worker_hijack_root_logger=False)
deployment = CeleryDeployment(celery_app, store=RedisStore(REDIS, prefix="bench"))


def now_us() -> int:
    """The wall clock in microseconds, modulo 10^12 (an ETA stays a modest integer)."""
    return int(time.time() * 1_000_000) % 10**12


@deployment.task
def ticks(*, n: int = 10, pace: float = 0.02) -> Iterator[Any]:
    """`n` progress reports `pace` seconds apart, each stamped with the time it was made."""
    for i in range(n):
        time.sleep(pace)
        yield Update(fraction=(i + 1) / (n + 1), eta=(now_us(), None))
    yield {"text": "done"}


@celery_app.task(bind=True, name="bench.ticks_backend")
def ticks_backend(self: Any, n: int = 10, pace: float = 0.02) -> str:
    """The celery-progress way: each report is `update_state` into the result backend."""
    times: list[float] = []  # every report's time so far: the poller learns what it missed
    for _ in range(n):
        time.sleep(pace)
        times.append(time.time())
        self.update_state(state="PROGRESS", meta={"times": times})
    return "done"


async def local_ticks(*, n: int = 10, pace: float = 0.02) -> Any:
    """The same run as an async generator in the web process (a `LocalDeployment`)."""
    import anyio

    for i in range(n):
        await anyio.sleep(pace)
        yield Update(fraction=(i + 1) / (n + 1), eta=(now_us(), None))
    yield {"text": "done"}


if os.environ.get("IKPROXY_BENCH_LOCAL"):
    served: Any = LocalDeployment({"ticks": local_ticks})
else:
    served = deployment
app = create_app(
    served, task="ticks", parameters={"n": int, "pace": float}, rate_limit=None, timeout=600
)
