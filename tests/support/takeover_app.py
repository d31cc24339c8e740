"""The app of the takeover and sealed-resume tests, served by uvicorn in a process of its own.

One proxy in front of the fake SCALE server at `IKPROXY_TEST_SCALE`, or,
without it, of a local task that reports progress and then works for an hour
(its work dies with the process). Its runs are resumable: through a shared
Redis store (`IKPROXY_TEST_REDIS`, keys under `IKPROXY_TEST_PREFIX`), or,
without one, by sealed ids under `IKPROXY_TEST_SECRET`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio

from ikproxy import Client, LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.deployments import Deployment
from ikproxy.stores import RedisStore


async def endless(*, prompt: str) -> AsyncIterator[Any]:
    yield 0.1
    await anyio.sleep(3600)
    yield {"text": prompt}


def _deployment() -> Deployment:
    scale = os.environ.get("IKPROXY_TEST_SCALE")
    if scale:
        return Client(scale, "fake-token", api_url=scale, poll_schedule=lambda n: 0.1)
    return LocalDeployment({"endless": endless})


redis = os.environ.get("IKPROXY_TEST_REDIS")
app = create_app(
    _deployment(),
    resume_window=30.0,
    store=RedisStore(redis, prefix=os.environ["IKPROXY_TEST_PREFIX"]) if redis else None,
    resume_secret=os.environ.get("IKPROXY_TEST_SECRET"),
    rate_limit=None,
    parameters={"prompt": str},
)
