"""The app `benchmarks/stores.py` serves: resumable runs on the store named by the environment.

`IKPROXY_BENCH_REDIS` set: a `RedisStore` on it; unset: the in-memory default.
`/run?n=N&pace=S` is a run of N progress events S seconds apart, then a result.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ikproxy import Progress, Results, TaskIO
from ikproxy.asgi import create_app


class Ticks:
    async def run_stream(
        self, *inputs: Any, parameters: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncIterator[Progress]:
        params = dict(parameters or {})
        n, pace = int(params.get("n", 1)), float(params.get("pace", 0))
        for i in range(n):
            yield Progress("STARTED", (n - i, n - i + 100), run_id="5f0c2a9e", name="generate")
            if pace:
                await asyncio.sleep(pace)
        yield Progress("SUCCESS", run_id="5f0c2a9e", results=Results((TaskIO("text", "done"),)))


def _store() -> Any:
    url = os.environ.get("IKPROXY_BENCH_REDIS")
    if not url:
        return None
    from ikproxy.stores import RedisStore

    return RedisStore(url, prefix="bench")


app = create_app(
    Ticks(),
    parameters={"n": int, "pace": float},
    resume_window=60,
    rate_limit=None,
    store=_store(),
    keepalive=30,
)
