"""The async Ikomia SCALE client: run a deployment and stream its progress.

    async with Client("https://xyz.scale.ikomia.ai") as client:   # token from IKOMIA_TOKEN
        async for progress in client.run_stream("photo.jpg", parameters={"strength": 0.5}):
            print(progress.state, progress.eta)
        results = progress.results

It speaks the SCALE protocol exactly, as the official `ikomia-client` does: the API token
is exchanged for a short-lived JWT, the run is submitted with `PUT /api/run`, and
its results are polled at the pace the deployment advises. `SyncClient` is the
same for scripts and threads.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import uuid as uuid_module
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import anyio
import httpx
from anyio.from_thread import BlockingPortal

from ikproxy.concurrency import PortalThread, iterate
from ikproxy.deployments.scale.http import USER_AGENT, ScaleHTTP
from ikproxy.deployments.scale.inputs import InputOptions, StreamedUpload, prepare_inputs
from ikproxy.deployments.scale.protocol import (
    MAX_POLLS,
    Answer,
    OutputSpec,
    Workflow,
    encode_parameters,
    parse_poll_answer,
    parse_run_answer,
    run_body,
    scale_poll_schedule,
)
from ikproxy.deployments.scale.storage import DEFAULT_SCALEFS_URL, Storage, SyncStorage
from ikproxy.errors import (
    RunNotFound,
    RunTimeout,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
)
from ikproxy.io import InputLike
from ikproxy.model import Progress, Results
from ikproxy.telemetry.spans import span

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_HTTP_TIMEOUT",
    "USER_AGENT",
    "Client",
    "OutputSpec",
    "ScaleDeployment",
    "SyncClient",
    "scale_poll_schedule",
]

logger = logging.getLogger("ikproxy.deployments.scale")

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_API_URL = "https://scale.ikomia.ai"
DEFAULT_HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""Per request; a long poll is held open by the deployment well within it."""

DEFAULT_MAX_INPUT_BYTES = 2 * 1024**3
"""The largest URL input fetched (2 GiB): it goes to a temporary file, never to memory."""

DEFAULT_FETCH_TIMEOUT = 300.0
"""Seconds a URL input may take to download, redirects included."""

RETRIED_STATUSES = frozenset({502, 503, 504})
"""Poll answers that mean "try again": a gateway or an overloaded deployment."""

MAX_RETRY_DELAY = 10.0

_RUN_IDS = uuid_module.UUID("b8fd625b-f700-4baa-b21e-3ba1cadbbbe3")
"""The namespace of run ids, derived from upstream uuids (uuid5)."""


class Client:
    """An async client for one Ikomia SCALE deployment endpoint (a `Deployment`).

    `url` is the endpoint URL. The API token defaults to the `IKOMIA_TOKEN`
    environment variable and the SCALE API URL (where the token is exchanged for
    a JWT) to `IKOMIA_URL`, else `https://scale.ikomia.ai`. `timeout` is the
    default overall deadline of a run in seconds (None: none); `http_timeout`
    bounds each request. Polls that fail on the network or with HTTP 502/503/504
    are retried `max_retries` times, waiting `retry_backoff` s, then twice that,
    and so on (capped at 10 s). Nothing else is retried: a run is never submitted
    twice. `poll_schedule(n)` gives the seconds to wait before poll `n` when the
    deployment gives no advice.

    SCALE storage (for video, file and folder inputs, and `storage`) is at
    `scalefs_url`, else `IKOMIA_SCALEFS_URL`, else `https://scalefs.ikomia.ai`.
    URL inputs are fetched by this process: at most `max_input_bytes`, within
    `fetch_timeout` seconds; `allow_private_urls` (default True: the
    application chose its inputs) lets them reach private addresses.

    One pooled HTTP connection set per client, opened on first use: share a
    client between runs, within one event loop, and close it with `aclose()` or
    `async with`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        api_url: str | None = None,
        scalefs_url: str | None = None,
        timeout: float | None = None,
        http_timeout: httpx.Timeout | float = DEFAULT_HTTP_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        poll_schedule: Callable[[int], float] = scale_poll_schedule,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        allow_private_urls: bool = True,
    ) -> None:
        token = token if token is not None else os.environ.get("IKOMIA_TOKEN")
        if not token:
            raise ValueError(
                "no SCALE API token: pass token= or set the IKOMIA_TOKEN environment variable"
            )
        api_url = api_url if api_url is not None else os.environ.get("IKOMIA_URL", DEFAULT_API_URL)
        if scalefs_url is None:
            scalefs_url = os.environ.get("IKOMIA_SCALEFS_URL", DEFAULT_SCALEFS_URL)
        _check_url(url, "url")
        _check_url(api_url, "api_url")
        _check_url(scalefs_url, "scalefs_url")
        _check_timeout(timeout)
        _check_timeout(fetch_timeout)
        if (
            isinstance(max_input_bytes, bool)
            or not isinstance(max_input_bytes, int)
            or (max_input_bytes < 1)
        ):
            raise ValueError(f"max_input_bytes must be an integer >= 1, not {max_input_bytes!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {max_retries!r}")
        if not (retry_backoff >= 0 and math.isfinite(retry_backoff)):
            raise ValueError(
                f"retry_backoff must be a number of seconds >= 0, not {retry_backoff!r}"
            )
        if not isinstance(http_timeout, httpx.Timeout):
            http_timeout = httpx.Timeout(http_timeout)
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.poll_schedule = poll_schedule
        self._http = ScaleHTTP(url, api_url, token, timeout=http_timeout, transport=transport)
        self._workflow: Workflow | None = None
        self._workflow_lock = anyio.Lock()
        self._inputs = InputOptions(max_input_bytes, fetch_timeout, allow_private_urls)
        #: SCALE storage, with this client's JWT and connections.
        self.storage = Storage(self._http, scalefs_url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for a SCALE deployment>"  # no URL, no token

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections. The client cannot run anything afterwards."""
        await self._http.aclose()

    # -- runs -----------------------------------------------------------------

    async def run(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        task_index: int | None = None,
        outputs: Sequence[OutputSpec] | None = None,
        timeout: float | None = None,
        save_temporary: bool = False,
        store_outputs: bool = False,
    ) -> Results:
        """Run the deployment and return its results (see `run_stream`)."""
        stream = self.run_stream(
            *inputs,
            parameters=parameters,
            task=task,
            task_index=task_index,
            outputs=outputs,
            timeout=timeout,
            save_temporary=save_temporary,
            store_outputs=store_outputs,
        )
        async with aclosing(stream):
            async for progress in stream:
                if progress.results is not None:
                    return progress.results
        raise AssertionError("unreachable: a run stream ends with its results or raises")

    async def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        task_index: int | None = None,
        outputs: Sequence[OutputSpec] | None = None,
        timeout: float | None = None,
        save_temporary: bool = False,
        store_outputs: bool = False,
    ) -> AsyncGenerator[Progress, None]:
        """Run the deployment, yielding its progress; the last item carries the results.

        `inputs`: paths (files or folders), URLs (`https://...`, or any fsspec
        URL with `ikproxy[fsspec]`), `FileIO`s, image bytes, PIL images,
        `ImageIO`s, a previous `Results` (to chain runs) or raw one-key wire
        dicts. Images go inline; videos, other files and folders (zipped) are
        uploaded to SCALE storage first and sent as `storage_object`s, their
        data type taken from the workflow's input (as the official client;
        `FileIO(data_type=...)` overrides it). `save_temporary` sends every
        file and image input through storage; `store_outputs` asks the
        deployment to keep the outputs there (they come back as
        `StorageObjectIO`s: read them with `client.storage.read`).

        `parameters` go to the run's task, checked against the workflow (`InvalidParameter`
        names the valid ones) and sent as strings (bools as "true"/"false"). `task` picks a
        task by name, `task_index` among several of that name (default: the workflow's first
        final task). `outputs` lists what to return: output indexes of the task, task names
        (all their outputs) or `(task name, output index)` pairs; by default all outputs of
        the task. `timeout` overrides the client's overall deadline (`RunTimeout`).

        The first item comes once the deployment accepted the run, so a refusal
        raises from the first `__anext__()`. Closing the generator stops polling.
        """
        timeout = self.timeout if timeout is None else timeout
        _check_timeout(timeout)
        deadline = None if timeout is None else anyio.current_time() + timeout
        limit = _Limit(deadline, timeout)

        workflow = await limit.run(self._get_workflow)
        target = workflow.resolve(task, task_index)
        wanted = workflow.outputs(target, outputs)
        encoded = encode_parameters(target, parameters)
        values = await limit.run(
            prepare_inputs,
            inputs,
            workflow=workflow,
            storage=self.storage,
            options=self._inputs,
            save_temporary=save_temporary,
        )
        if store_outputs:
            wanted = [entry | {"save_temporary": True} for entry in wanted]
        body = run_body(values, wanted, target, encoded)
        with span("ikproxy.scale.submit"):
            _, raw = await limit.run(
                self._http.request,
                "PUT",
                "/api/run",
                "the run request",
                params={"advice": "true"},
                body=body,
            )
        answer = parse_run_answer(raw)
        uuid = answer.uuid
        assert uuid is not None
        logger.debug("run accepted as %s", uuid)
        async with aclosing(self._track(uuid, target.name, answer, limit)) as updates:
            async for progress in updates:
                yield progress

    @asynccontextmanager
    async def streaming_upload(self, content_type: str) -> AsyncIterator[StreamedUpload]:
        """Store a file while it arrives, as a temporary object (`SupportsStreamingUpload`).

        A run given what `finish()` returns sends that object, uploaded once.
        """
        async with self.storage.upload_stream(content_type) as stream:
            yield StreamedUpload(stream, self.storage.url)

    async def attach(
        self,
        uuid: str,
        *,
        task: str | None = None,
        task_index: int | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[Progress, None]:
        """Follow a run submitted elsewhere (another client, process or machine) by its uuid.

        The same contract as `run_stream`: the first item is the run's current
        state, once the deployment answered a first poll, so an unknown uuid
        raises `RunNotFound` from the first `__anext__()`; the last item carries
        the results (at once, if the run is already done). `task` and
        `task_index` name the run's task as `run_stream` does, for the `name` of
        each progress; `timeout` bounds the following. Closing it stops polling;
        the run itself goes on upstream.
        """
        if not isinstance(uuid, str) or not uuid:
            raise ValueError("uuid must be a non-empty string: the deployment's id of the run")
        timeout = self.timeout if timeout is None else timeout
        _check_timeout(timeout)
        limit = _Limit(None if timeout is None else anyio.current_time() + timeout, timeout)
        workflow = await limit.run(self._get_workflow)
        target = workflow.resolve(task, task_index)
        answer = await self._poll(uuid, False, limit)
        async with aclosing(self._track(uuid, target.name, answer, limit, polls=1)) as updates:
            async for progress in updates:
                yield progress

    async def _track(
        self, uuid: str, name: str, answer: Answer, limit: _Limit, polls: int = 0
    ) -> AsyncGenerator[Progress, None]:
        """The progress of run `uuid` from its latest `answer` on, polled until it is done.

        Every client that follows the same uuid reports the same `run_id`.
        """
        run_id = uuid_module.uuid5(_RUN_IDS, uuid).hex

        def progress(answer: Answer, results: Results | None = None) -> Progress:
            return Progress(
                state=answer.state,
                eta=answer.eta,
                run_id=run_id,
                uuid=uuid,
                name=name,
                results=results,
            )

        while True:
            if answer.outputs is not None:
                yield progress(answer, Results(outputs=answer.outputs, uuid=uuid))
                return
            yield progress(answer)
            if answer.next_poll_in is not None:
                delay, long = answer.next_poll_in, answer.next_poll_long
            elif polls >= MAX_POLLS:
                raise UpstreamError(f"the deployment gave no results after {MAX_POLLS} polls")
            else:
                delay, long = self.poll_schedule(polls), False
            await limit.run(anyio.sleep, delay)
            answer = await self._poll(uuid, long, limit)
            polls += 1

    async def _poll(self, uuid: str, long: bool, limit: _Limit) -> Answer:
        """One poll, retried with backoff on network errors and HTTP 502/503/504."""
        path = "/api/results/" + quote(uuid, safe="")
        params = {"advice": "true", "long": "true" if long else "false"}
        failures = 0
        while True:
            try:
                with span("ikproxy.scale.poll"):
                    status, raw = await limit.run(
                        self._http.request, "GET", path, "the poll", params=params
                    )
                return parse_poll_answer(status, raw)
            except (UpstreamConnectionError, UpstreamTimeout, UpstreamHTTPError) as exc:
                if isinstance(exc, UpstreamHTTPError) and exc.status_code == 404:
                    raise RunNotFound(
                        "the deployment does not know this run (HTTP 404)", status_code=404
                    ) from exc
                retryable = (
                    not isinstance(exc, UpstreamHTTPError) or exc.status_code in RETRIED_STATUSES
                )
                if not retryable or failures >= self.max_retries:
                    raise
                delay = min(self.retry_backoff * 2**failures, MAX_RETRY_DELAY)
                failures += 1
                logger.debug("poll failed (%s); retry %d in %.3f s", exc.message, failures, delay)
            await limit.run(anyio.sleep, delay)

    async def _get_workflow(self) -> Workflow:
        """`GET /workflow`, fetched once per client (concurrent first runs share it)."""
        if self._workflow is None:
            async with self._workflow_lock:
                if self._workflow is None:
                    _, raw = await self._http.request("GET", "/workflow", "the workflow request")
                    self._workflow = Workflow.from_json(raw)
        return self._workflow


ScaleDeployment = Client
"""The SCALE client under its `Deployment` name."""


class SyncClient:
    """The blocking twin of `Client`, for scripts and worker threads.

    Same arguments and methods, without `await`. Runs happen in an event loop
    of its own, in a daemon thread started on first use and stopped by `close()`
    (or `with SyncClient(...) as client:`). Safe to share between threads; do
    not call it from inside an event loop (use `Client` there).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        api_url: str | None = None,
        scalefs_url: str | None = None,
        timeout: float | None = None,
        http_timeout: httpx.Timeout | float = DEFAULT_HTTP_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        poll_schedule: Callable[[int], float] = scale_poll_schedule,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        allow_private_urls: bool = True,
    ) -> None:
        self._client = Client(
            url,
            token,
            api_url=api_url,
            scalefs_url=scalefs_url,
            timeout=timeout,
            http_timeout=http_timeout,
            transport=transport,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            poll_schedule=poll_schedule,
            max_input_bytes=max_input_bytes,
            fetch_timeout=fetch_timeout,
            allow_private_urls=allow_private_urls,
        )
        self._lock = threading.Lock()
        self._loop: PortalThread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        #: SCALE storage, blocking, through this client's loop thread.
        self.storage = SyncStorage(self._client.storage, self._portal)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for a SCALE deployment>"

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections and stop the loop thread."""
        with self._lock:
            loop, self._loop, self._closed = self._loop, None, True
        if self._finalizer is not None:
            self._finalizer.detach()
        if loop is not None:
            loop.stop(self._client.aclose)

    def _portal(self) -> BlockingPortal:
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed")
            if self._loop is None:
                self._loop = PortalThread("ikproxy-sync-client")
                self._finalizer = weakref.finalize(self, self._loop.stop_soon, self._client.aclose)
            return self._loop.portal

    def run(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        task_index: int | None = None,
        outputs: Sequence[OutputSpec] | None = None,
        timeout: float | None = None,
        save_temporary: bool = False,
        store_outputs: bool = False,
    ) -> Results:
        """Run the deployment and return its results (see `Client.run_stream`)."""
        call = functools.partial(
            self._client.run,
            *inputs,
            parameters=parameters,
            task=task,
            task_index=task_index,
            outputs=outputs,
            timeout=timeout,
            save_temporary=save_temporary,
            store_outputs=store_outputs,
        )
        results: Results = self._portal().call(call)
        return results

    def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        task_index: int | None = None,
        outputs: Sequence[OutputSpec] | None = None,
        timeout: float | None = None,
        save_temporary: bool = False,
        store_outputs: bool = False,
    ) -> Iterator[Progress]:
        """Run the deployment, yielding its progress (see `Client.run_stream`).

        Closing the iterator (`close()`, or leaving a `for` loop early and
        dropping it) stops the run's polling.
        """
        stream = self._client.run_stream(
            *inputs,
            parameters=parameters,
            task=task,
            task_index=task_index,
            outputs=outputs,
            timeout=timeout,
            save_temporary=save_temporary,
            store_outputs=store_outputs,
        )
        return iterate(self._portal(), stream, stream.aclose)

    def attach(
        self,
        uuid: str,
        *,
        task: str | None = None,
        task_index: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Progress]:
        """Follow a run submitted elsewhere by its uuid (see `Client.attach`).

        Closing the iterator stops polling; the run itself goes on upstream.
        """
        stream = self._client.attach(uuid, task=task, task_index=task_index, timeout=timeout)
        return iterate(self._portal(), stream, stream.aclose)


class _Limit:
    """A run's overall deadline, applied to each request and sleep in turn.

    A cancel scope must not span a `yield` of an async generator, so the run is
    not wrapped in one: each awaited step gets its own scope with the time left.
    """

    def __init__(self, deadline: float | None, timeout: float | None) -> None:
        self.deadline = deadline
        self.timeout = timeout

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.deadline is None:
            return await fn(*args, **kwargs)
        remaining = self.deadline - anyio.current_time()
        if remaining > 0:
            with anyio.move_on_after(remaining):
                return await fn(*args, **kwargs)
        raise RunTimeout(f"the run did not finish within {self.timeout:g} s")


def _check_url(url: object, name: str) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http:// or https:// URL")


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (timeout > 0 and math.isfinite(timeout))
    ):
        raise ValueError(f"timeout must be a number of seconds > 0 or None, not {timeout!r}")
