"""Which stream a new run is read from, and which store a proxy uses, by the deployment's kind.

A deployment whose runs log themselves (`SupportsRunLog`: Celery workers) is
followed through its log in the shared store, not re-logged by the instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ikproxy.deployments import Deployment, SupportsRunLog
from ikproxy.model import Progress
from ikproxy.policy.config import Policy
from ikproxy.proxy.request import RunSpec
from ikproxy.runs.log import RunLog
from ikproxy.stores import MemoryStore, Store

__all__ = ["open_stream", "store_for"]


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
