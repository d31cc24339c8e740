"""Deployments: anything that turns a run request into an async stream of `Progress`.

Two ship with ikproxy: `ScaleDeployment` (the async SCALE client, also
exported as `ikproxy.Client`) and `LocalDeployment` (plain Python callables).
The proxy core accepts any object that has this shape. A deployment whose
runs live upstream, beyond the process that submitted them, may also be
`SupportsAttach`: the proxy then resumes its runs on any instance. One that
sends files to remote storage may be `SupportsStreamingUpload`: the proxy
then stores a browser's file while it arrives. One whose runs are produced
elsewhere and write their own events to a shared store (Celery workers) is
`SupportsRunLog`: the proxy then follows that log instead of writing one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any, Protocol, runtime_checkable

from ikproxy.io import FileIO, InputLike
from ikproxy.model import Progress, Results
from ikproxy.stores import Store

__all__ = [
    "Deployment",
    "StreamingUpload",
    "SupportsAttach",
    "SupportsRunLog",
    "SupportsStreamingUpload",
    "results_of",
]


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


class StreamingUpload(Protocol):
    """A file being stored while it arrives (see `SupportsStreamingUpload`)."""

    async def write(self, data: bytes) -> None:
        """Send the next bytes; waits while the storage is behind (backpressure)."""
        ...

    async def finish(self, file: FileIO) -> FileIO:
        """The input to run with, once every byte was written; `file` is the same bytes
        on disk, sent the usual way by the run if storing them on the way failed."""
        ...


@runtime_checkable
class SupportsStreamingUpload(Protocol):
    """An optional capability: store a browser's file upload while it still arrives.

    The proxy writes the file to disk as always and, alongside, to the
    upload opened here; leaving the context without `finish()` (the body
    was cut, refused, or its client left) aborts it, and storage keeps
    nothing. Only a run started with what `finish()` returned uses it.
    """

    def streaming_upload(self, content_type: str) -> AbstractAsyncContextManager[StreamingUpload]:
        """Open the upload of a file of this type."""
        ...


@runtime_checkable
class SupportsRunLog(Protocol):
    """An optional capability: runs produced elsewhere that write their own log in `store`.

    `run_logged(token, ...)` keeps `run_stream`'s contract, for a run whose log
    `token` the caller created in `store` (empty, with a TTL of `ttl` seconds):
    the run's producer (a worker) appends its events there and holds its owner
    lease, and the stream follows that log. With a shared store and
    `resume_window`, the proxy starts runs so, and every instance follows the
    same log (`ikproxy.runs`).
    """

    store: Store

    def run_logged(
        self,
        token: str,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
        ttl: float,
    ) -> AsyncIterator[Progress]: ...


async def results_of(stream: AsyncIterator[Progress]) -> Results:
    """The results of a run's stream, read to its end (what a deployment's `run` returns)."""
    async with aclosing(stream):  # type: ignore[type-var]
        async for progress in stream:
            if progress.results is not None:
                return progress.results
    raise RuntimeError("the run ended without results")  # pragma: no cover
