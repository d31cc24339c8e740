"""The framework-neutral proxy: a request description in, a status and a byte stream out.

Every surface (the ASGI app, each framework adapter) translates its request
into a `ProxyRequest`, calls `Proxy.handle` (or `handle_sync` on WSGI), and
translates the `ProxyResponse` back. All policy lives here: routing, access
hooks, body limits, parameter validation, content negotiation, and starting
the run before the status is committed.

Order of checks for `/run`: method (405), the site (403 `cross_site`),
authorize (401/403), body size (413), content type (415), parameters and
inputs (400/415), the active-run cap (429), the rate limit (429: the run is
accepted, and takes its token), then the run is submitted (its refusal gives
400/502/504, and the token back); only then 200. A resume takes a token of
the resume limit instead, once its run is found. A shared store that cannot
be reached gives 503. See `ikproxy.proxy.access`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Mapping
from importlib import resources
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qsl

from ikproxy.__about__ import __version__
from ikproxy.concurrency import aclose, blocking_portal
from ikproxy.deployments import Deployment, SupportsAttach
from ikproxy.deployments.scale.storage import Storage
from ikproxy.errors import HTTPError, RunNotFound, public_error
from ikproxy.model import Progress
from ikproxy.policy.config import Policy
from ikproxy.protocol import (
    PROTOCOL_VERSION,
    new_request_id,
    parse_position,
)
from ikproxy.proxy.access import Access, with_headers
from ikproxy.proxy.outputs import Opener, OutputStore, by_reference, serve_any, storage_opener
from ikproxy.proxy.parsing import negotiate_format, read_run_request, read_run_request_sync
from ikproxy.proxy.request import ProxyRequest, RunSpec
from ikproxy.proxy.response import (
    ProxyResponse,
    SyncProxyResponse,
    error_response,
    json_response,
    to_sync,
)
from ikproxy.proxy.starting import open_stream, prepend, shared_outputs_for, store_for
from ikproxy.proxy.stream import RunStream, StreamFormat, StreamOptions, stream_headers
from ikproxy.proxy.uploads import UploadDir, resolve_inputs
from ikproxy.runs.caps import ActiveRuns
from ikproxy.runs.log import RunLog
from ikproxy.runs.ownership import Attach
from ikproxy.runs.registry import Followable, RunRegistry
from ikproxy.runs.sealed import SEALED_PREFIX, ExpiredReference, InvalidReference, Sealer
from ikproxy.stores import Store, StoreUnavailable
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

#: The methods each endpoint allows (`/outputs/`: every path under it); others get a 405.
_ALLOWED: Final[Mapping[str, tuple[str, ...]]] = {
    "/run": ("GET", "POST"),
    "/health": ("GET", "HEAD"),
    "/outputs/": ("GET", "HEAD"),
    **dict.fromkeys(_ASSETS, ("GET", "HEAD")),
}


#: The methods a surface routes to the core, so that every one gets the same 405.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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
        self.store: Store = store_for(self.policy, deployment)
        #: The site check, the access hooks, the rate limits and CORS (`proxy.access`).
        self.access = Access(self.policy, self.store)
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
        if self.runs is not None:  # the policy names its callers: a run is its caller's
            self.runs.bind_callers = self.policy.rate_limit_key is not None
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
        self.outputs = OutputStore(self.policy.output_window, shared=shared_outputs_for(self.store))

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
            if inspect.isawaitable(route):
                route = await route
            if route is None:
                obs = self._observe(request, request_id)
                route = await self._run(request, body, request_id, obs)
            response = route
        except HTTPError as exc:
            response = self._refuse(exc, request_id, obs)
        except StoreUnavailable as exc:
            response = self._refuse(_store_unavailable(exc), request_id, obs)
        return self._cors(request, response)

    async def _run(
        self,
        request: ProxyRequest,
        body: AsyncIterable[bytes] | None,
        request_id: str,
        obs: RunObserver,
    ) -> ProxyResponse:
        """A `/run` request: the site check, the hooks (the caller's key, once), then a resume
        or a new run."""
        self.access.check_site(request)
        key = await _value(self.access.admit(request))
        position = self._resume_position(request)
        if position is not None:
            return await self._resume(*position, request_id, key, obs)
        uploads = UploadDir(self.deployment)
        try:
            spec = await read_run_request(request, body, self.policy, request_id, uploads)
            await resolve_inputs(spec.inputs, self.policy, uploads)
            return await self._start(spec, key, _base(request), uploads, obs)
        except BaseException:
            uploads.close()
            raise

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
            if inspect.isawaitable(route):
                route = blocking_portal().call(_later, route)
            if route is None:
                obs = self._observe(request, request_id)
                route = self._run_sync(request, body, request_id, obs)
            response = route
        except HTTPError as exc:
            response = self._refuse(exc, request_id, obs)
        except StoreUnavailable as exc:
            response = self._refuse(_store_unavailable(exc), request_id, obs)
        return to_sync(self._cors(request, response))

    def _run_sync(
        self,
        request: ProxyRequest,
        body: Iterable[bytes] | None,
        request_id: str,
        obs: RunObserver,
    ) -> ProxyResponse:
        """`_run` from a sync caller: the hooks here, what is async through the portal."""
        self.access.check_site(request)
        key = self.access.admit(request)
        if inspect.isawaitable(key):
            key = blocking_portal().call(_value, key)
        position = self._resume_position(request)
        if position is not None:
            return blocking_portal().call(self._resume, *position, request_id, key, obs)
        uploads = UploadDir(self.deployment)
        try:
            spec = read_run_request_sync(request, body, self.policy, request_id, uploads)
            blocking_portal().call(resolve_inputs, spec.inputs, self.policy, uploads)
            return blocking_portal().call(self._start, spec, key, _base(request), uploads, obs)
        except BaseException:
            uploads.close()
            raise

    def _observe(self, request: ProxyRequest, request_id: str) -> RunObserver:
        """The telemetry and accounting of the run `request` asks for."""
        return RunObserver(
            self.telemetry,
            request_id,
            task=self.policy.task,
            deployment=type(self.deployment).__name__,
            native=request.native,
            on_end=self.policy.on_run_end,
        )

    def _refuse(self, error: HTTPError, request_id: str, obs: RunObserver | None) -> ProxyResponse:
        """The answer to a request refused before its stream, counted by its code."""
        if obs is not None:
            obs.refused(error.code)
        else:
            self.telemetry.refused.add(1, {"code": error.code})
        return error_response(error, request_id)

    def _cors(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        """`response` with the CORS headers for the request's origin, if it is allowed."""
        extra = self.access.cors_headers(request)
        if extra:
            response.headers = with_headers(response.headers, extra)
        return response

    # -- routing --------------------------------------------------------------

    def _route(self, request: ProxyRequest) -> ProxyResponse | Awaitable[ProxyResponse] | None:
        """The answer for every path but `/run` (None): assets, health, 404 and 405."""
        path = "/" + request.path.strip("/")
        method = request.method.upper()
        output = path.startswith("/outputs/")
        allowed = _ALLOWED.get("/outputs/" if output else path)
        if allowed is None:
            raise HTTPError(404, "not_found", f"no such endpoint: {path}")
        preflight = self.access.preflight(request, allowed) if method == "OPTIONS" else None
        if preflight is not None:
            return ProxyResponse(204, preflight)
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
            return json_response(
                200, {"status": "ok", "protocol": PROTOCOL_VERSION, "version": __version__}
            )
        if output:
            answer = serve_any(self.outputs, path, method, request.header("range"))
            return ProxyResponse(*answer) if isinstance(answer, tuple) else _later(answer)
        name, media_type = _ASSETS[path]
        return ProxyResponse(
            200, {"Content-Type": media_type, "Cache-Control": "no-cache"}, _asset(name)
        )

    # -- running ------------------------------------------------------------------

    async def _start(
        self,
        spec: RunSpec,
        key: str | None,
        base: str = "",
        uploads: UploadDir | None = None,
        obs: RunObserver | None = None,
    ) -> ProxyResponse:
        """Accept the run, submit it and wait for its first progress, so a refusal is a real
        HTTP error.

        Accepting takes an active-run slot, then the rate limit's token, then the
        store's run log: a refusal of any leaves nothing behind, and a run that
        fails to start gives its token back. The run owns `uploads` (its files):
        they are removed when its stream ends.
        """
        with obs.current() if obs is not None else contextlib.nullcontext():
            return await self._submit(spec, key, base, uploads, obs)

    async def _submit(
        self, spec: RunSpec, key: str | None, base: str, uploads: UploadDir | None, obs: Any
    ) -> ProxyResponse:
        if obs is not None and key is not None:
            obs.caller_key = key
        policy = self.policy
        slot, log = await self._accept(spec, key)
        window = self.runs.window if self.runs is not None else None
        stream, logged = open_stream(self.deployment, spec, policy, log, window)
        if slot is not None and self.active_runs is not None:
            stream = self.active_runs.hold(slot, stream)
        stream = self._by_reference(stream, base, uploads)
        try:
            first = await _first(stream, spec.request_id)
        except HTTPError:
            with contextlib.suppress(StoreUnavailable):
                await self.access.refund(key)
            if log is not None:
                with contextlib.suppress(StoreUnavailable):
                    await log.delete()
            raise
        headers = stream_headers(spec.format, spec.request_id)
        options = StreamOptions.from_policy(policy, spec.format, spec.request_id, obs)
        if self.sealer is not None and key is not None and first is not None and first.uuid:
            # The upstream keeps the run: its event ids carry a sealed reference to it.
            body = self._sealed(prepend(first, stream), first.uuid, key, options, 0)
            return ProxyResponse(200, headers, body)
        if self.runs is not None:
            run = self.runs.start(
                prepend(first, stream),
                request_id=spec.request_id,
                timeout=None if logged else policy.timeout,  # a worker holds its deadline
                log=log,
                remote=logged,
                caller=key,
            )
            body = self._follow(run, options, after=0)
            return ProxyResponse(200, headers, body)
        return ProxyResponse(200, headers, RunStream(prepend(first, stream), options))

    async def _accept(self, spec: RunSpec, key: str | None) -> tuple[str | None, RunLog | None]:
        """Take the run's active-run slot (429 `too_many_runs`), its token (429
        `rate_limited`) and its run log, in this order: (slot, log), each None if unused."""
        active = self.active_runs
        slot = await active.acquire(str(key)) if active is not None else None
        charged = False
        try:
            await self.access.charge(key)
            charged = True
            log: RunLog | None = None
            if self.runs is not None:
                log = await self.runs.create(request_id=spec.request_id, caller=key)
        except BaseException:
            if charged:
                with contextlib.suppress(StoreUnavailable):
                    await self.access.refund(key)
            if slot is not None and active is not None:
                await active.release(slot)
            raise
        return slot, log

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
        key: str | None,
        obs: RunObserver | None = None,
    ) -> ProxyResponse:
        """The stream of a run resumed after its first `seen` events, on any instance.

        Once the run is found (a resume of no run costs nothing), the resume takes
        a token of the caller's resume limit, not of its run limit.
        """
        assert self.runs is not None
        if obs is not None:
            obs.resumed, obs.caller_key = True, key
        options = StreamOptions.from_policy(self.policy, format, request_id, obs)
        if self.sealer is not None and token.startswith(SEALED_PREFIX):
            reference = token[len(SEALED_PREFIX) :]
            with obs.current() if obs is not None else contextlib.nullcontext():
                return await self._resume_sealed(reference, seen, str(key), options)
        run = await self.runs.find(token, key)
        if run is None:  # unknown, expired, or another caller's: the same answer
            raise _gone()
        await self.access.charge_resume(key)
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
        await self.access.charge_resume(caller)
        deployment = cast(SupportsAttach, self.deployment)
        stream = deployment.attach(uuid, task=self.policy.task, timeout=self.policy.timeout)
        stream = self._by_reference(stream, "", None)
        first = await _first(stream, request_id, attaching=True)
        body = self._sealed(prepend(first, stream), uuid, caller, options, seen)
        return ProxyResponse(200, stream_headers(options.format, request_id), body)


# -- helpers ---------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> bytes:
    """A file of the package's `static/` folder, read once per process."""
    return resources.files("ikproxy").joinpath("static").joinpath(name).read_bytes()


def _base(request: ProxyRequest) -> str:
    """What leads from the run request's URL back to the mount: `""` for `run`, `../` for `run/`."""
    return "../" * max(0, ("/" + request.path.lstrip("/")).count("/") - 1)


async def _value(value: Awaitable[T] | T) -> T:
    """`value`, awaited if it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


def _gone() -> HTTPError:
    return HTTPError(410, "resume_expired", "the run to resume is unknown or has expired")


async def _first(
    stream: AsyncIterator[Progress], request_id: str, *, attaching: bool = False
) -> Progress | None:
    """A run's first progress (None if it has none); its failure as an `HTTPError`.

    An upstream that does not know the run it is `attaching` to means it is gone: 410.
    (A new run's `RunNotFound` is the upstream's failure, answered as its class says.)
    """
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
    except Exception as exc:
        await aclose(stream)
        if attaching and isinstance(exc, RunNotFound):
            logger.info("resume refused [request_id=%s]: %s", request_id, exc)
            raise _gone() from None
        status, code, message = public_error(exc)
        logger.error("run refused [request_id=%s code=%s]", request_id, code, exc_info=exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        raise HTTPError(status, code, message, headers=headers) from None


def _store_unavailable(exc: StoreUnavailable) -> HTTPError:
    logger.error("store unavailable: %s", exc)
    status, code, message = public_error(exc)
    return HTTPError(status, code, message, headers={"Retry-After": "1"})


async def _later(answer: Awaitable[Any]) -> ProxyResponse:
    """A response that is awaited: a shared output's, or an answer being read."""
    got = await answer
    return got if isinstance(got, ProxyResponse) else ProxyResponse(*got)
