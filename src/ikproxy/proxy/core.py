"""The framework-neutral proxy: a request description in, a status and a byte stream out.

Every surface (the ASGI app, each framework adapter) translates its request
into a `ProxyRequest`, calls `Proxy.handle` (or `handle_sync` on WSGI), and
translates the `ProxyResponse` back. All policy lives here: routing, access
hooks, body limits, parameter validation, content negotiation, and starting
the run before the status is committed.

Order of checks for `/run`: method (405), authorize (401/403), rate limit
(429), body size (413), content type (415), parameters and inputs (400/415),
the active-run cap (429), then the run is submitted (its refusal gives
400/502/504); only then 200. A shared store that cannot be reached gives 503.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Generic, TypeVar, cast
from urllib.parse import parse_qsl

from ikproxy.__about__ import __version__
from ikproxy.concurrency import aclose, blocking_portal, iterate_in_portal
from ikproxy.deployments import Deployment, SupportsAttach
from ikproxy.deployments.scale.storage import Storage
from ikproxy.errors import HTTPError, RunNotFound, public_error
from ikproxy.model import Progress
from ikproxy.policy.config import Policy
from ikproxy.protocol import (
    PROTOCOL_VERSION,
    error_body,
    new_request_id,
    parse_position,
)
from ikproxy.proxy.access import Access
from ikproxy.proxy.outputs import Opener, OutputStore, by_reference, serve, storage_opener
from ikproxy.proxy.parsing import negotiate_format, read_run_request, read_run_request_sync
from ikproxy.proxy.request import ProxyRequest, RunSpec
from ikproxy.proxy.stream import RunStream, StreamFormat, StreamOptions, stream_headers
from ikproxy.proxy.uploads import UploadDir, resolve_inputs
from ikproxy.runs.caps import ActiveRuns
from ikproxy.runs.ownership import Attach
from ikproxy.runs.registry import Followable, RunRegistry
from ikproxy.runs.sealed import SEALED_PREFIX, ExpiredReference, InvalidReference, Sealer
from ikproxy.stores import MemoryStore, Store, StoreUnavailable
from ikproxy.telemetry import RunObserver, default_telemetry
from ikproxy.telemetry.logs import bind_request, install_log_context

__all__ = [
    "METHODS",
    "Proxy",
    "ProxyRequest",
    "ProxyResponse",
    "SyncProxyResponse",
    "error_response",
]

logger = logging.getLogger("ikproxy")

T = TypeVar("T")

#: Static files served next to the run endpoint, by path.
_ASSETS = {
    "/ikproxy.js": ("ikproxy.js", "text/javascript; charset=utf-8"),
    "/ikproxy.d.ts": ("ikproxy.d.ts", "application/typescript; charset=utf-8"),
}
_JSON = "application/json"

#: The methods each endpoint allows (`/outputs/`: every path under it); others get a 405.
_ALLOWED: Final[Mapping[str, tuple[str, ...]]] = {
    "/run": ("GET", "POST"),
    "/health": ("GET", "HEAD"),
    "/outputs/": ("GET", "HEAD"),
    **dict.fromkeys(_ASSETS, ("GET", "HEAD")),
}


#: The methods a surface routes to the core, so that every one gets the same 405.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


B = TypeVar("B")


@dataclass
class _Answer(Generic[B]):
    """A status, headers, and a body: bytes, or a stream of byte chunks of type `B`."""

    status: int
    headers: dict[str, str]
    body: bytes | B = b""

    @property
    def media_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def streaming(self) -> bool:
        return not isinstance(self.body, bytes)

    def headers_without_content_type(self) -> dict[str, str]:
        """The headers but `Content-Type`, which most frameworks take as its own argument."""
        return {k: v for k, v in self.headers.items() if k != "Content-Type"}


@dataclass
class ProxyResponse(_Answer[AsyncIterator[bytes]]):
    """What to send back: a status, headers, and either bytes or an async byte stream."""


@dataclass
class SyncProxyResponse(_Answer[Iterator[bytes]]):
    """`ProxyResponse` for WSGI: the stream is a sync iterator driven through the portal."""


def _json_response(
    status: int, obj: Any, headers: Mapping[str, str] | None = None
) -> ProxyResponse:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return ProxyResponse(status, {"Content-Type": _JSON, **(headers or {})}, body)


def error_response(error: HTTPError, request_id: str | None = None) -> ProxyResponse:
    """The JSON answer to a refused request: `{"error": {...}}`, its status and headers."""
    headers = dict(error.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return _json_response(error.status, error_body(error.code, error.message, request_id), headers)


class Proxy:
    """The proxy core: one deployment, one policy, any number of surfaces."""

    def __init__(
        self, deployment: Deployment, policy: Policy | None = None, **options: Any
    ) -> None:
        if policy is not None and options:
            raise TypeError("pass either a Policy or policy keyword arguments, not both")
        self.deployment = deployment
        self.policy = policy or Policy(**options)
        #: Where runs, rate limits and active-run slots live (`ikproxy.stores`).
        self.store: Store = self.policy.store if self.policy.store is not None else MemoryStore()
        #: Where the runs' traces and metrics go (`ikproxy.telemetry`).
        self.telemetry = self.policy.telemetry or default_telemetry()
        install_log_context()
        window, attach, telemetry = self.policy.resume_window, self._attacher(), self.telemetry
        #: The resumable runs, when `resume_window` is set.
        self.runs: RunRegistry | None = (
            RunRegistry(window, store=self.store, attach=attach, telemetry=telemetry)
            if window
            else None
        )
        cap = self.policy.max_active_runs
        #: The active-run cap, when `max_active_runs` is set.
        self.active_runs: ActiveRuns | None = ActiveRuns(self.store, cap) if cap else None
        secret = self.policy.resume_secret
        sealer = Sealer(secret) if secret is not None else None
        #: Seals upstream run references into event ids: with `resume_secret`, when the
        #: deployment can attach to a run and no shared store keeps runs (it replays more).
        self.sealer = (
            sealer if isinstance(deployment, SupportsAttach) and not self.store.shared else None
        )
        #: The outputs served by reference (`/outputs/<token>/<index>`).
        self.outputs = OutputStore(self.policy.output_window)
        keyed = self.active_runs is not None or self.sealer is not None
        keyed = keyed or self.policy.on_run_end is not None
        #: The access hooks and the rate limit (`ikproxy.proxy.access`).
        self.access = Access(self.policy, self.store, keyed=keyed)

    def _attacher(self) -> Attach | None:
        """How to follow a run of the deployment by its upstream id, when it can."""
        deployment, policy = self.deployment, self.policy
        if not isinstance(deployment, SupportsAttach):
            return None
        return functools.partial(deployment.attach, task=policy.task, timeout=policy.timeout)

    # -- entry points -------------------------------------------------------

    async def handle(
        self, request: ProxyRequest, body: AsyncIterable[bytes] | None = None
    ) -> ProxyResponse:
        """Answer one request; hooks may be sync or async. Never raises for bad input."""
        request_id = bind_request(new_request_id(request.header("x-request-id")))
        obs: RunObserver | None = None
        try:
            route = self._route(request)
            if route is not None:
                return route
            obs = self._observe(request, request_id)
            await _resolve(self.access.admit(request))
            position = self._resume_position(request)
            if position is not None:
                key = self.access.caller_key(request)
                return await self._resume(*position, request_id, key, obs)
            uploads = UploadDir(self.deployment)
            try:
                spec = await read_run_request(request, body, self.policy, request_id, uploads)
                await resolve_inputs(spec.inputs, self.policy, uploads)
                key = self.access.caller_key(request)
                if inspect.isawaitable(key):
                    key = await key
                return await self._start(spec, key, _base(request), uploads, obs)
            except BaseException:
                uploads.close()
                raise
        except HTTPError as exc:
            return self._refuse(exc, request_id, obs)
        except StoreUnavailable as exc:
            return self._refuse(_store_unavailable(exc), request_id, obs)

    def handle_sync(
        self, request: ProxyRequest, body: Iterable[bytes] | None = None
    ) -> SyncProxyResponse:
        """`handle` for sync (WSGI) code: hooks run in the caller's thread, the run in the portal.

        The hooks therefore see the framework's request context (Flask's
        `request`, Django's `request.user`).
        """
        request_id = bind_request(new_request_id(request.header("x-request-id")))
        obs: RunObserver | None = None
        try:
            route = self._route(request)
            if route is not None:
                return _sync(route)
            obs = self._observe(request, request_id)
            pending = self.access.admit(request)
            if inspect.isawaitable(pending):
                blocking_portal().call(_resolve, pending)
            position = self._resume_position(request)
            if position is not None:
                key = self.access.caller_key(request)
                response = blocking_portal().call(self._resume, *position, request_id, key, obs)
            else:
                uploads = UploadDir(self.deployment)
                try:
                    spec = read_run_request_sync(request, body, self.policy, request_id, uploads)
                    blocking_portal().call(resolve_inputs, spec.inputs, self.policy, uploads)
                    key = self.access.caller_key(request)
                    response = blocking_portal().call(
                        self._start_with_key, spec, key, _base(request), uploads, obs
                    )
                except BaseException:
                    uploads.close()
                    raise
        except HTTPError as exc:
            response = self._refuse(exc, request_id, obs)
        except StoreUnavailable as exc:
            response = self._refuse(_store_unavailable(exc), request_id, obs)
        if isinstance(response.body, bytes):
            return SyncProxyResponse(response.status, response.headers, response.body)
        return SyncProxyResponse(
            response.status, response.headers, iterate_in_portal(response.body)
        )

    def _observe(self, request: ProxyRequest, request_id: str) -> RunObserver:
        """The telemetry and accounting of the run `request` asks for."""
        kind = type(self.deployment).__name__
        hook, task = self.policy.on_run_end, self.policy.task
        return RunObserver(
            self.telemetry,
            request_id,
            task=task,
            deployment=kind,
            native=request.native,
            on_end=hook,
        )

    def _refuse(self, error: HTTPError, request_id: str, obs: RunObserver | None) -> ProxyResponse:
        """The answer to a request refused before its stream, counted by its code."""
        if obs is not None:
            obs.refused(error.code)
        else:
            self.telemetry.refused.add(1, {"code": error.code})
        return error_response(error, request_id)

    # -- routing --------------------------------------------------------------

    def _route(self, request: ProxyRequest) -> ProxyResponse | None:
        """The answer for every path but `/run` (None): assets, health, 404 and 405."""
        path = "/" + request.path.strip("/")
        method = request.method.upper()
        output = path.startswith("/outputs/")
        allowed = _ALLOWED.get("/outputs/" if output else path)
        if allowed is None:
            raise HTTPError(404, "not_found", f"no such endpoint: {path}")
        if method not in allowed:
            raise HTTPError(
                405,
                "method_not_allowed",
                f"method {method} not allowed on {'an output' if output else path}",
                headers={"Allow": ", ".join(allowed)},
            )
        if path == "/run":
            return None
        if path == "/health":
            return _json_response(
                200, {"status": "ok", "protocol": PROTOCOL_VERSION, "version": __version__}
            )
        if output:
            status, headers, content = serve(self.outputs, path, method, request.header("range"))
            return ProxyResponse(status, headers, content)
        name, media_type = _ASSETS[path]
        return ProxyResponse(
            200, {"Content-Type": media_type, "Cache-Control": "no-cache"}, _asset(name)
        )

    # -- running ------------------------------------------------------------------

    async def _start_with_key(
        self, spec: RunSpec, key: Any, base: str, uploads: UploadDir, obs: RunObserver
    ) -> ProxyResponse:
        if inspect.isawaitable(key):
            key = await key
        return await self._start(spec, key, base, uploads, obs)

    async def _start(
        self,
        spec: RunSpec,
        key: Any = None,
        base: str = "",
        uploads: UploadDir | None = None,
        obs: RunObserver | None = None,
    ) -> ProxyResponse:
        """Submit the run and wait for its first progress, so a refusal is a real HTTP error.

        The active-run slot and the store's run log are taken first, so that a
        refusal of either leaves no run behind. The run owns `uploads` (its
        files): they are removed when its stream ends.
        """
        with obs.current() if obs is not None else contextlib.nullcontext():
            return await self._submit(spec, key, base, uploads, obs)

    async def _submit(
        self, spec: RunSpec, key: Any, base: str, uploads: UploadDir | None, obs: Any
    ) -> ProxyResponse:
        policy = self.policy
        if obs is not None and key is not None:
            obs.caller_key = str(key)
        slot = await self.active_runs.acquire(str(key)) if self.active_runs is not None else None
        try:
            log = (
                await self.runs.create(request_id=spec.request_id)
                if self.runs is not None
                else None
            )
        except BaseException:
            if slot is not None and self.active_runs is not None:
                await self.active_runs.release(slot)
            raise
        stream = self.deployment.run_stream(
            *spec.inputs, parameters=spec.parameters, task=policy.task, timeout=policy.timeout
        )
        if slot is not None and self.active_runs is not None:
            stream = self.active_runs.hold(slot, stream)
        stream = self._by_reference(stream, base, uploads)
        try:
            first = await _first(stream, spec.request_id)
        except HTTPError:
            if log is not None:
                with contextlib.suppress(StoreUnavailable):
                    await log.delete()
            raise
        headers = stream_headers(spec.format, spec.request_id)
        options = StreamOptions.from_policy(policy, spec.format, spec.request_id, obs)
        if self.sealer is not None and key is not None and first is not None and first.uuid:
            # The upstream keeps the run: its event ids carry a sealed reference to it.
            body = self._sealed(_prepend(first, stream), first.uuid, str(key), options, 0)
            return ProxyResponse(200, headers, body)
        if self.runs is not None:
            run = self.runs.start(
                _prepend(first, stream),
                request_id=spec.request_id,
                timeout=policy.timeout,
                log=log,
            )
            body = self._follow(run, options, after=0)
            return ProxyResponse(200, headers, body)
        return ProxyResponse(200, headers, RunStream(_prepend(first, stream), options))

    async def _by_reference(
        self, stream: AsyncIterator[Progress], base: str, uploads: UploadDir | None
    ) -> AsyncIterator[Progress]:
        """The run's progress, its large outputs replaced by references (`ikproxy.outputs`).

        Whatever ends the run (its end, a failure, a client gone), its uploaded
        files are removed then.
        """
        storage = getattr(self.deployment, "storage", None)
        opener: Opener | None = None
        if isinstance(storage, Storage):
            opener = storage_opener(storage, presigned=self.policy.presigned_outputs)
        try:
            async for progress in stream:
                if progress.results is not None:
                    results = await by_reference(
                        progress.results,
                        self.outputs,
                        inline_limit=self.policy.inline_output_limit,
                        base=base,
                        opener=opener,
                    )
                    progress = dataclasses.replace(progress, results=results)
                yield progress
        finally:
            try:
                await aclose(stream)
            finally:
                if uploads is not None:
                    uploads.close()

    # -- resumable runs -----------------------------------------------------------

    @staticmethod
    def _follow(run: Followable, options: StreamOptions, after: int) -> RunStream:
        # The run's producer holds its deadline and outlives its followers.
        options = dataclasses.replace(options, timeout=None, finish_on_disconnect=False)
        return RunStream(run.follow(after), options, first_id=after + 1, id_prefix=f"{run.token}:")

    def _resume_position(self, request: ProxyRequest) -> tuple[str, int, StreamFormat] | None:
        """(token, events seen, format) of a resume request; None for a new run."""
        if self.runs is None or request.path.strip("/") != "run":
            return None
        query = dict(parse_qsl(str(request.query_string), keep_blank_values=True))
        last_event_id = request.header("last-event-id") or query.get("last_event_id")
        if not last_event_id:
            return None
        position = parse_position(last_event_id)
        if position is None:
            raise HTTPError(400, "invalid_parameter", "Last-Event-ID is not a resume position")
        format = negotiate_format(query.get("format"), request.header("accept"))
        return position[0], position[1], format

    async def _resume(
        self,
        token: str,
        seen: int,
        format: StreamFormat,
        request_id: str,
        key: Any = None,
        obs: RunObserver | None = None,
    ) -> ProxyResponse:
        """The stream of a run resumed after its first `seen` events, on any instance."""
        assert self.runs is not None
        if inspect.isawaitable(key):
            key = await key
        if obs is not None:
            obs.resumed, obs.caller_key = True, None if key is None else str(key)
        options = StreamOptions.from_policy(self.policy, format, request_id, obs)
        if self.sealer is not None and token.startswith(SEALED_PREFIX):
            reference = token[len(SEALED_PREFIX) :]
            with obs.current() if obs is not None else contextlib.nullcontext():
                return await self._resume_sealed(reference, seen, str(key), options)
        run = await self.runs.find(token)
        if run is None:
            raise _gone()
        if obs is not None:
            obs.source = run
        body = self._follow(run, options, run.resume_point(seen))
        return ProxyResponse(200, stream_headers(format, request_id), body)

    # -- sealed references: resuming by attaching to the upstream run --------------

    def _sealed(
        self,
        stream: AsyncIterator[Progress],
        uuid: str,
        caller: str,
        options: StreamOptions,
        after: int,
    ) -> RunStream:
        """A run's stream whose event ids carry a sealed reference to its upstream `uuid`.

        Each id is valid `resume_window` seconds from the time its event goes out
        (to the second: events of the same second share one sealed reference).
        """
        sealer = self.sealer
        assert sealer is not None
        window = self.policy.resume_window or 0.0
        sealed: list[Any] = [None, ""]  # (expiry, prefix) of the last seal

        def prefix() -> str:
            expires = int(time.time() + window)
            if sealed[0] != expires:
                sealed[:] = [expires, f"{SEALED_PREFIX}{sealer.seal(uuid, caller, expires)}:"]
            text: str = sealed[1]
            return text

        return RunStream(stream, options, first_id=after + 1, id_prefix=prefix)

    async def _resume_sealed(
        self, reference: str, seen: int, caller: str, options: StreamOptions
    ) -> ProxyResponse:
        """Open a sealed reference and attach to its upstream run: the current state, then on."""
        assert self.sealer is not None
        assert options.request_id is not None
        request_id = options.request_id
        try:
            uuid = self.sealer.open(reference, caller)
        except (InvalidReference, ExpiredReference) as exc:
            logger.info("resume refused [request_id=%s]: %s", request_id, exc)
            raise _gone() from None
        deployment = cast(SupportsAttach, self.deployment)
        stream = deployment.attach(uuid, task=self.policy.task, timeout=self.policy.timeout)
        stream = self._by_reference(stream, "", None)
        first = await _first(stream, request_id)
        body = self._sealed(_prepend(first, stream), uuid, caller, options, seen)
        return ProxyResponse(200, stream_headers(options.format, request_id), body)


# -- helpers ---------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> bytes:
    """A file of the package's `static/` folder, read once per process."""
    return resources.files("ikproxy").joinpath("static").joinpath(name).read_bytes()


def _sync(response: ProxyResponse) -> SyncProxyResponse:
    """A response for sync callers: a streamed body is iterated through the portal."""
    if isinstance(response.body, bytes):
        return SyncProxyResponse(response.status, response.headers, response.body)
    return SyncProxyResponse(response.status, response.headers, iterate_in_portal(response.body))


def _base(request: ProxyRequest) -> str:
    """What leads from the run request's URL back to the mount: `""` for `run`, `../` for `run/`."""
    return "../" * max(0, ("/" + request.path.lstrip("/")).count("/") - 1)


async def _resolve(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value


def _gone() -> HTTPError:
    return HTTPError(410, "resume_expired", "the run to resume is unknown or has expired")


async def _first(stream: AsyncIterator[Progress], request_id: str) -> Progress | None:
    """A run's first progress (None if it has none); its failure as an `HTTPError`.

    An upstream that does not know the run (attaching to it) means it is gone: 410.
    """
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
    except Exception as exc:
        await aclose(stream)
        if isinstance(exc, RunNotFound):
            logger.info("resume refused [request_id=%s]: %s", request_id, exc)
            raise _gone() from None
        status, code, message = public_error(exc)
        logger.error("run refused [request_id=%s code=%s]", request_id, code, exc_info=exc)
        raise HTTPError(status, code, message) from None


def _store_unavailable(exc: StoreUnavailable) -> HTTPError:
    logger.error("store unavailable: %s", exc)
    status, code, message = public_error(exc)
    return HTTPError(status, code, message, headers={"Retry-After": "1"})


async def _prepend(
    first: Progress | None, rest: AsyncIterator[Progress]
) -> AsyncIterator[Progress]:
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        await aclose(rest)
