"""Which stream a new run is read from, and which stores a proxy uses, by the deployment's kind.

A deployment whose runs log themselves (`SupportsRunLog`: Celery workers) is
followed through its log in the shared store, not re-logged by the instance.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ikproxy.concurrency import aclose
from ikproxy.deployments import Deployment, SupportsRunLog
from ikproxy.model import Progress
from ikproxy.policy.config import Policy
from ikproxy.proxy.request import RunSpec
from ikproxy.runs.log import RunLog
from ikproxy.stores import MemoryStore, Store

if TYPE_CHECKING:
    from ikproxy.stores.outputs import SharedOutputs

__all__ = ["open_stream", "prepend", "shared_outputs_for", "store_for"]


def store_for(policy: Policy, deployment: Deployment) -> Store:
    """The policy's store; else that of a deployment whose runs log themselves there."""
    if policy.store is not None:
        return policy.store
    if isinstance(deployment, SupportsRunLog):
        return deployment.store
    return MemoryStore()


def open_stream(
    deployment: Deployment,
    spec: RunSpec,
    policy: Policy,
    log: RunLog | None,
    window: float | None,
) -> tuple[AsyncIterator[Progress], bool]:
    """The run's progress stream, and whether its producer writes `log` itself.

    With a log (resumable runs in a shared store, `window` their TTL) and a
    deployment that `SupportsRunLog`, the run is submitted to write that log.
    """
    if log is not None and window is not None and isinstance(deployment, SupportsRunLog):
        stream = deployment.run_logged(
            log.token,
            *spec.inputs,
            parameters=spec.parameters,
            task=policy.task,
            timeout=policy.timeout,
            ttl=window,
        )
        return stream, True
    stream = deployment.run_stream(
        *spec.inputs, parameters=spec.parameters, task=policy.task, timeout=policy.timeout
    )
    return stream, False


def shared_outputs_for(store: Store) -> SharedOutputs | None:
    """The output store every instance shares, with a `RedisStore` (None otherwise)."""
    redis_store = sys.modules.get("ikproxy.stores.redis")  # imported only with redis-py
    if redis_store is None or not isinstance(store, redis_store.RedisStore):
        return None
    from ikproxy.stores.outputs import SharedOutputs

    return SharedOutputs(store.url, prefix=store.prefix, timeout=store.timeout)


async def prepend(first: Progress | None, rest: AsyncIterator[Progress]) -> AsyncIterator[Progress]:
    """`first` (a run's first progress, read before the 200), then the rest of the run."""
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        await aclose(rest)
