"""Deployments: anything that turns a run request into an async stream of `Progress`.

Two ship with ikproxy: `ScaleDeployment` (the async SCALE client, also
exported as `ikproxy.Client`) and `LocalDeployment` (plain Python callables).
The proxy core accepts any object that has this shape. A deployment whose
runs live upstream, beyond the process that submitted them, may also be
`SupportsAttach`: the proxy then resumes its runs on any instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

from ..io import InputLike
from ..model import Progress, Results

__all__ = ["Deployment", "SupportsAttach"]


@runtime_checkable
class Deployment(Protocol):
    """What the proxy core needs from a deployment.

    `run_stream` is an async generator with this contract:

    * its first item is yielded only once the upstream has accepted the run,
      so a refusal (an unknown parameter, bad credentials, a dead upstream)
      raises from the first `__anext__()`, before any response is committed;
    * every item carries the same `run_id`; the last one carries `results`;
    * a failed run raises a subclass of `ikproxy.errors.IkproxyError`;
    * closing it (`aclose()`, cancellation) stops the run's work at once.
    """

    def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Progress]: ...

    async def run(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> Results: ...


@runtime_checkable
class SupportsAttach(Protocol):
    """An optional capability: follow a run submitted elsewhere by its upstream id.

    `attach(uuid)` keeps `run_stream`'s contract: its first item is the run's
    current state (an unknown run raises `ikproxy.errors.RunNotFound` from the
    first `__anext__()`), every item carries the `uuid` and the same `run_id`
    as the run's own stream, the last one carries `results`, and closing it
    stops following (the run itself goes on upstream). Runs of such a
    deployment expose their `uuid` from their first progress on.
    """

    def attach(
        self, uuid: str, *, task: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[Progress]: ...
