"""The framework-neutral proxy: a request description in, a status and a byte stream out.

Every surface (the ASGI app, each framework adapter) translates its request
into a `ProxyRequest`, calls `Proxy.handle` (or `handle_sync` on WSGI), and
translates the `ProxyResponse` back. All policy lives here: routing, access
hooks, body limits, parameter validation, content negotiation, and starting
the run before the status is committed.

Order of checks for `/run`: method (405), authorize (401/403), rate limit
(429), body size (413), content type (415), parameters and inputs (400/415),
then the run is submitted (its refusal gives 400/502/504); only then 200.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Generic, TypeVar, cast
from urllib.parse import parse_qsl

import anyio.to_thread

from .__about__ import __version__
from .deployments import Deployment
from .model import Progress
from .parsing import (
    ProxyRequest,
    RunSpec,
    negotiate_format,
    parse_run_request,
    read_body,
    read_body_sync,
)
from .policy import HTTPError, Policy, RateLimiter
from .protocol import (
    ERROR_MESSAGES,
    HTTP_STATUS,
    PROTOCOL_VERSION,
    error_body,
)
from .runs import RunRegistry, SharedRun, parse_position
from .server import (
    RunStream,
    StreamFormat,
    aclose,
    blocking_portal,
    error_code,
    iterate_in_portal,
    new_request_id,
    stream_headers,
    to_readable_stream,
)

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
        window = self.policy.resume_window
        #: The resumable runs, when `resume_window` is set.
        self.runs: RunRegistry | None = RunRegistry(window) if window else None

    # -- entry points -------------------------------------------------------

    async def handle(
        self, request: ProxyRequest, body: AsyncIterable[bytes] | None = None
    ) -> ProxyResponse:
        """Answer one request; hooks may be sync or async. Never raises for bad input."""
        request_id = new_request_id(request.header("x-request-id"))
        try:
            route = self._route(request)
            if route is not None:
                return route
            await _resolve(self._admit(request))
            resumed = self._resume(request, request_id)
            if resumed is not None:
                return resumed
            raw = await read_body(
                request, body, self.policy.max_upload_bytes, request_id=request_id
            )
            if raw:  # images are decoded while parsing: keep that off the event loop
                spec = await anyio.to_thread.run_sync(
                    parse_run_request, request, raw, self.policy, request_id
                )
            else:
                spec = parse_run_request(request, raw, self.policy, request_id)
            return await self._start(spec)
        except HTTPError as exc:
            return error_response(exc, request_id)

    def handle_sync(
        self, request: ProxyRequest, body: Iterable[bytes] | None = None
    ) -> SyncProxyResponse:
        """`handle` for sync (WSGI) code: hooks run in the caller's thread, the run in the portal.

        The hooks therefore see the framework's request context (Flask's
        `request`, Django's `request.user`).
        """
        request_id = new_request_id(request.header("x-request-id"))
        try:
            route = self._route(request)
            if route is not None:
                return SyncProxyResponse(route.status, route.headers, cast(bytes, route.body))
            pending = self._admit(request)
            if inspect.isawaitable(pending):
                blocking_portal().call(_resolve, pending)
            resumed = self._resume(request, request_id)
            if resumed is not None:
                response = resumed
            else:
                raw = read_body_sync(
                    request, body, self.policy.max_upload_bytes, request_id=request_id
                )
                spec = parse_run_request(request, raw, self.policy, request_id)
                response = blocking_portal().call(self._start, spec)
        except HTTPError as exc:
            response = error_response(exc, request_id)
        if isinstance(response.body, bytes):
            return SyncProxyResponse(response.status, response.headers, response.body)
        return SyncProxyResponse(
            response.status, response.headers, iterate_in_portal(response.body)
        )

    # -- routing --------------------------------------------------------------

    def _route(self, request: ProxyRequest) -> ProxyResponse | None:
        """The answer for every path but `/run` (None): assets, health, 404 and 405."""
        path = "/" + request.path.strip("/")
        method = request.method.upper()
        if path == "/run":
            if method not in ("GET", "POST"):
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"method {method} not allowed on /run",
                    headers={"Allow": "GET, POST"},
                )
            return None
        if path == "/health":
            if method not in ("GET", "HEAD"):
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"method {method} not allowed on /health",
                    headers={"Allow": "GET, HEAD"},
                )
            return _json_response(
                200, {"status": "ok", "protocol": PROTOCOL_VERSION, "version": __version__}
            )
        if path in _ASSETS:
            if method not in ("GET", "HEAD"):
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"method {method} not allowed on {path}",
                    headers={"Allow": "GET, HEAD"},
                )
            name, media_type = _ASSETS[path]
            data = _asset(name)
            return ProxyResponse(
                200, {"Content-Type": media_type, "Cache-Control": "no-cache"}, data
            )
        raise HTTPError(404, "not_found", f"no such endpoint: {path}")

    # -- access -------------------------------------------------------------------

    def _admit(self, request: ProxyRequest) -> Awaitable[None] | None:
        """Run the authorize hook, then the rate limit; sync hooks run right here."""
        policy = self.policy
        verdict: Any = policy.authorize(request.native) if policy.authorize else None
        if inspect.isawaitable(verdict):
            return self._admit_after(request, verdict)
        self._check_verdict(verdict)
        return self._rate_limit(request)

    async def _admit_after(self, request: ProxyRequest, verdict: Awaitable[Any]) -> None:
        self._check_verdict(await verdict)
        await _resolve(self._rate_limit(request))

    @staticmethod
    def _check_verdict(verdict: Any) -> None:
        if verdict is False:
            raise HTTPError(403, "forbidden", "Not allowed.")

    def _rate_limit(self, request: ProxyRequest) -> Awaitable[None] | None:
        """Take a token for the caller's key; sync hooks and limiters run right here."""
        limiter = self.policy.rate_limit
        if limiter is None:
            return None
        key_fn = self.policy.rate_limit_key
        key: Any = key_fn(request.native) if key_fn else (request.client or "anonymous")
        if inspect.isawaitable(key):
            return self._rate_limit_after(limiter, key)
        wait = limiter.acquire(str(key))
        if inspect.isawaitable(wait):
            return self._rate_limit_after(limiter, wait=wait)
        _check_wait(wait)
        return None

    @staticmethod
    async def _rate_limit_after(
        limiter: RateLimiter, key: Awaitable[Any] | None = None, wait: Any = None
    ) -> None:
        if key is not None:
            wait = limiter.acquire(str(await key))
        if inspect.isawaitable(wait):
            wait = await wait
        _check_wait(wait)

    # -- running ------------------------------------------------------------------

    async def _start(self, spec: RunSpec) -> ProxyResponse:
        """Submit the run and wait for its first progress, so a refusal is a real HTTP error."""
        policy = self.policy
        stream = self.deployment.run_stream(
            *spec.inputs, parameters=spec.parameters, task=policy.task, timeout=policy.timeout
        )
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            code = error_code(exc)
            logger.error("run refused [request_id=%s code=%s]", spec.request_id, code, exc_info=exc)
            await aclose(stream)
            raise HTTPError(HTTP_STATUS[code], code, ERROR_MESSAGES[code]) from None
        headers = stream_headers(spec.format, spec.request_id)
        if self.runs is not None:
            run = self.runs.start(
                _prepend(first, stream), request_id=spec.request_id, timeout=policy.timeout
            )
            body = self._follow(run, spec.format, spec.request_id, after=0)
            return ProxyResponse(200, headers, body)
        body = to_readable_stream(
            _prepend(first, stream),
            format=spec.format,
            keepalive=policy.keepalive,
            retry_ms=policy.retry_ms,
            request_id=spec.request_id,
            timeout=policy.timeout,
            finish_on_disconnect=policy.finish_on_disconnect,
        )
        return ProxyResponse(200, headers, body)

    # -- resumable runs -----------------------------------------------------------

    def _follow(
        self, run: SharedRun, format: StreamFormat, request_id: str, after: int
    ) -> RunStream:
        return RunStream(
            run.follow(after),
            format=format,
            keepalive=self.policy.keepalive,
            retry_ms=self.policy.retry_ms,
            request_id=request_id,
            first_id=after + 1,
            id_prefix=f"{run.token}:",
        )

    def _resume(self, request: ProxyRequest, request_id: str) -> ProxyResponse | None:
        """The stream of a run resumed from its `Last-Event-ID`, or None for a new run."""
        if self.runs is None or request.path.strip("/") != "run":
            return None
        query = dict(parse_qsl(str(request.query_string), keep_blank_values=True))
        last_event_id = request.header("last-event-id") or query.get("last_event_id")
        if not last_event_id:
            return None
        position = parse_position(last_event_id)
        if position is None:
            raise HTTPError(400, "invalid_parameter", "Last-Event-ID is not a resume position")
        run = self.runs.get(position[0])
        if run is None:
            raise HTTPError(410, "resume_expired", "the run to resume is unknown or has expired")
        format = negotiate_format(query.get("format"), request.header("accept"))
        after = min(position[1], len(run.items))
        body = self._follow(run, format, request_id, after)
        return ProxyResponse(200, stream_headers(format, request_id), body)


# -- helpers ---------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> bytes:
    """A file of the package's `static/` folder, read once per process."""
    return resources.files("ikproxy").joinpath("static").joinpath(name).read_bytes()


async def _resolve(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value


def _check_wait(wait: float | None) -> None:
    if wait is not None:
        seconds = max(1, int(wait + 0.999))
        raise HTTPError(
            429,
            "rate_limited",
            f"too many requests: retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


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
