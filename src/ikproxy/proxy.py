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

import base64
import binascii
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, Generic, TypeVar, cast
from urllib.parse import parse_qsl

from .__about__ import __version__
from .deployments import Deployment
from .io import BaseIO, ImageIO
from .model import Progress
from .policy import HTTPError, Policy, RateLimiter
from .protocol import (
    ERROR_MESSAGES,
    HTTP_STATUS,
    NDJSON_MEDIA_TYPE,
    PROTOCOL_VERSION,
    SSE_MEDIA_TYPE,
    error_body,
)
from .runs import RunRegistry, SharedRun, parse_position
from .server import (
    RunStream,
    StreamFormat,
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


@dataclass
class ProxyRequest:
    """A framework's request, described for the proxy.

    `path` is relative to where the proxy is mounted (`/run`, `/health`, ...);
    `headers` is any mapping (or iterable of pairs), kept with lowercase names;
    `query_string` may be bytes (decoded as Latin-1, as HTTP does); `native` is
    the framework's own request object, handed to the `authorize` and
    `rate_limit_key` hooks.
    """

    method: str
    path: str
    query_string: str | bytes = ""
    headers: Any = field(default_factory=dict)
    client: str | None = None
    native: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.query_string, bytes):
            self.query_string = self.query_string.decode("latin-1")
        pairs = self.headers.items() if hasattr(self.headers, "items") else self.headers
        self.headers = {str(key).lower(): str(value) for key, value in pairs}
        if not self.path.startswith("/"):
            self.path = "/" + self.path

    def header(self, name: str) -> str | None:
        value: str | None = self.headers.get(name.lower())
        return value


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


@dataclass
class _RunSpec:
    parameters: dict[str, Any]
    inputs: list[BaseIO]
    format: StreamFormat
    request_id: str


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
            raw = await self._read_body_async(request, body)
            spec = self._parse(request, raw, request_id)
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
                raw = self._read_body_sync(request, body)
                spec = self._parse(request, raw, request_id)
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

    # -- body -----------------------------------------------------------------

    def _expected_length(self, request: ProxyRequest) -> int:
        if request.method.upper() == "GET":
            return 0
        limit = self.policy.max_upload_bytes
        declared = request.header("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPError(400, "bad_request", "invalid Content-Length header")
            if int(declared) > limit:
                raise _too_large(limit)
        return limit

    async def _read_body_async(
        self, request: ProxyRequest, body: AsyncIterable[bytes] | None
    ) -> bytes:
        limit = self._expected_length(request)
        if body is None or request.method.upper() == "GET":
            return b""
        parts, size = [], 0
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def _read_body_sync(self, request: ProxyRequest, body: Iterable[bytes] | None) -> bytes:
        limit = self._expected_length(request)
        if body is None or request.method.upper() == "GET":
            return b""
        parts, size = [], 0
        for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    # -- parsing ----------------------------------------------------------------

    def _parse(self, request: ProxyRequest, raw: bytes, request_id: str) -> _RunSpec:
        query_string = request.query_string
        if isinstance(query_string, bytes):  # only if changed after __post_init__
            query_string = query_string.decode("latin-1")
        query = _single_values(parse_qsl(query_string, keep_blank_values=True), "query")
        format = _negotiate(query.pop("format", None), request.header("accept"))
        inputs: list[BaseIO] = []
        if request.method.upper() == "GET":
            params, from_text = query, True
        else:
            if query:
                raise HTTPError(
                    400,
                    "invalid_parameter",
                    "a POST takes its parameters in the body, not the query",
                )
            content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
            if content_type == "application/json":
                params, inputs = self._parse_json(raw)
                from_text = False
            elif content_type == "multipart/form-data":
                fields, files = _parse_multipart(request.header("content-type") or "", raw)
                params, from_text = _single_values(fields, "form"), True
                inputs = [_image_input(data) for data in files]
            elif content_type == "application/x-www-form-urlencoded":
                try:
                    pairs = parse_qsl(
                        raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False
                    )
                except UnicodeDecodeError:
                    raise HTTPError(400, "bad_request", "form body is not valid UTF-8") from None
                params, from_text = _single_values(pairs, "form"), True
            else:
                raise HTTPError(
                    415,
                    "unsupported_media_type",
                    "POST /run takes application/json, multipart/form-data "
                    "or application/x-www-form-urlencoded",
                )
        if len(inputs) > self.policy.max_inputs:
            raise HTTPError(
                400,
                "invalid_input",
                f"too many images: at most {self.policy.max_inputs} per request",
            )
        values = self.policy.validate(params, from_text=from_text)
        return _RunSpec(values, inputs, format, request_id)

    def _parse_json(self, raw: bytes) -> tuple[dict[str, Any], list[BaseIO]]:
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HTTPError(400, "bad_request", "request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise HTTPError(400, "bad_request", "request body must be a JSON object")
        images = obj.pop("image", None)
        if images is None:
            images = []
        elif isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise HTTPError(400, "invalid_input", "'image' must be a data URL or base64 string")
        return obj, [_image_input(_decode_image_text(i)) for i in images]

    # -- running ------------------------------------------------------------------

    async def _start(self, spec: _RunSpec) -> ProxyResponse:
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
            await _aclose(stream)
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
        format = _negotiate(query.get("format"), request.header("accept"))
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


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "payload_too_large", f"request body exceeds {limit} bytes")


def _single_values(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise HTTPError(400, "invalid_parameter", f"parameter '{key}' given more than once")
        values[key] = value
    return values


def _negotiate(explicit: str | None, accept: str | None) -> StreamFormat:
    if explicit is not None:
        if explicit not in ("sse", "ndjson"):
            raise HTTPError(400, "invalid_parameter", "format must be 'sse' or 'ndjson'")
        return cast(StreamFormat, explicit)
    if accept and NDJSON_MEDIA_TYPE in accept and SSE_MEDIA_TYPE not in accept:
        return "ndjson"
    return "sse"


def _decode_image_text(text: str) -> bytes:
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise HTTPError(400, "invalid_input", "'image' data URL must be base64-encoded")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise HTTPError(400, "invalid_input", "'image' is not valid base64") from None


def _image_input(data: bytes) -> ImageIO:
    image = ImageIO.from_bytes(data)
    if image.format is None:
        raise HTTPError(415, "unsupported_media_type", "the upload is not a supported image")
    return image


def _parse_multipart(content_type: str, raw: bytes) -> tuple[list[tuple[str, str]], list[bytes]]:
    """Text fields and file contents of a multipart body, in order."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "bad_request", "multipart body without a boundary")
    fields: list[tuple[str, str]] = []
    files: list[bytes] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        disposition = state["headers"].get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        content = b"".join(state["data"])
        if b"filename" in params:
            files.append(content)
        else:
            try:
                fields.append((name, content.decode("utf-8")))
            except UnicodeDecodeError:
                raise HTTPError(400, "bad_request", f"form field '{name}' is not UTF-8") from None

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(raw)
        parser.finalize()
    except HTTPError:
        raise
    except Exception:
        raise HTTPError(400, "bad_request", "malformed multipart body") from None
    return fields, files


async def _prepend(
    first: Progress | None, rest: AsyncIterator[Progress]
) -> AsyncIterator[Progress]:
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        await _aclose(rest)


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
