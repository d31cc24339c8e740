"""Request parsing for the proxy: a framework's request described, its body read, its run parsed.

`ProxyRequest` is what every surface hands the core. `read_body` enforces the
upload limit while reading; `parse_run_request` turns a `/run` request (query
string, JSON, multipart or urlencoded form) into validated parameters, image
inputs and a stream format, or raises `HTTPError` with the answer to give.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from .images import verify_image
from .io import BaseIO
from .policy import HTTPError, Policy
from .protocol import NDJSON_MEDIA_TYPE, SSE_MEDIA_TYPE
from .server import StreamFormat

logger = logging.getLogger("ikproxy")

__all__ = [
    "ProxyRequest",
    "RunSpec",
    "negotiate_format",
    "parse_run_request",
    "read_body",
    "read_body_sync",
]


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


@dataclass
class RunSpec:
    """What a `/run` request asks for, validated."""

    parameters: dict[str, Any]
    inputs: list[BaseIO]
    format: StreamFormat
    request_id: str


def _declared_length(request: ProxyRequest, limit: int) -> int | None:
    """The body's declared `Content-Length`, refused (400/413) when invalid or too large."""
    declared = request.header("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise HTTPError(400, "bad_request", "invalid Content-Length header")
    if int(declared) > limit:
        raise _too_large(limit)
    return int(declared)


async def read_body(
    request: ProxyRequest,
    body: AsyncIterable[bytes] | None,
    limit: int,
    *,
    request_id: str | None = None,
) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` bytes.

    A body the server could not deliver whole (the client left mid-upload, or sent
    malformed chunked framing, or fewer bytes than its `Content-Length`) is the
    client's doing: one line at INFO on the `ikproxy` logger, and a 400 (or the
    cancellation that the server delivers, passed on).
    """
    if body is None or request.method.upper() == "GET":
        return b""
    declared = _declared_length(request, limit)
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
    except HTTPError:
        raise
    except asyncio.CancelledError:  # the server cancels the request when its client leaves
        _log_unreceived("CancelledError", request_id)
        raise
    except Exception as exc:  # whatever the server raises for a body it could not read
        raise _unreceived(type(exc).__name__, request_id) from None
    return _whole(parts, size, declared, request_id)


def read_body_sync(
    request: ProxyRequest,
    body: Iterable[bytes] | None,
    limit: int,
    *,
    request_id: str | None = None,
) -> bytes:
    """`read_body` for sync (WSGI) bodies."""
    if body is None or request.method.upper() == "GET":
        return b""
    declared = _declared_length(request, limit)
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
    except HTTPError:
        raise
    except Exception as exc:
        raise _unreceived(type(exc).__name__, request_id) from None
    return _whole(parts, size, declared, request_id)


def _whole(parts: list[bytes], size: int, declared: int | None, request_id: str | None) -> bytes:
    """The body, unless it ended before its declared length (never half-used)."""
    if declared is not None and size < declared:
        raise _unreceived(f"ended after {size} of {declared} bytes", request_id)
    return b"".join(parts)


def _log_unreceived(error: str, request_id: str | None) -> None:
    logger.info(
        "request body not received: the client left or sent a malformed body "
        "[request_id=%s error=%s]",
        request_id,
        error,
    )


def _unreceived(error: str, request_id: str | None) -> HTTPError:
    _log_unreceived(error, request_id)
    return HTTPError(400, "bad_request", "the request body could not be read")


def parse_run_request(
    request: ProxyRequest, raw: bytes, policy: Policy, request_id: str
) -> RunSpec:
    """The validated parameters, inputs and stream format of a `/run` request."""
    query = _single_values(_parse_pairs(request.query_string, "query string"), "query")
    format = negotiate_format(query.pop("format", None), request.header("accept"))
    images: list[bytes] = []
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
            params, images = _parse_json(raw)
            from_text = False
        elif content_type == "multipart/form-data":
            fields, images = _parse_multipart(request.header("content-type") or "", raw)
            params, from_text = _single_values(fields, "form"), True
        elif content_type == "application/x-www-form-urlencoded":
            params = _single_values(_parse_pairs(raw, "form body"), "form")
            from_text = True
        else:
            raise HTTPError(
                415,
                "unsupported_media_type",
                "POST /run takes application/json, multipart/form-data "
                "or application/x-www-form-urlencoded",
            )
    if len(images) > policy.max_inputs:
        raise HTTPError(
            400,
            "invalid_input",
            f"too many images: at most {policy.max_inputs} per request",
        )
    values = policy.validate(params, from_text=from_text)
    inputs: list[BaseIO] = [verify_image(data, policy.max_image_pixels) for data in images]
    return RunSpec(values, inputs, format, request_id)


class _Members(dict[str, Any]):
    """A JSON object's members, with the first name given twice (if any)."""

    duplicate: str | None = None


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    members = _Members(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        members.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return members


def _parse_json(raw: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The members of a JSON object body, and the images it carries (decoded from base64)."""
    try:
        obj = json.loads(raw, object_pairs_hook=_members)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPError(400, "bad_request", "request body is not valid JSON") from None
    except RecursionError:
        raise HTTPError(400, "bad_request", "request body is nested too deeply") from None
    except ValueError:  # an integer beyond sys.get_int_max_str_digits()
        raise HTTPError(
            400, "bad_request", "request body holds an integer too long to read"
        ) from None
    if not isinstance(obj, dict):
        raise HTTPError(400, "bad_request", "request body must be a JSON object")
    if isinstance(obj, _Members) and obj.duplicate is not None:
        raise _given_twice(obj.duplicate)
    images = obj.pop("image", None)
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise HTTPError(400, "invalid_input", "'image' must be a data URL or base64 string")
    return dict(obj), [_decode_image_text(i) for i in images]


# -- helpers ---------------------------------------------------------------------


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "payload_too_large", f"request body exceeds {limit} bytes")


def _given_twice(name: str) -> HTTPError:
    return HTTPError(400, "invalid_parameter", f"parameter '{name}' given more than once")


def _single_values(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise _given_twice(key)
        values[key] = value
    return values


def _parse_pairs(text: str | bytes, what: str) -> list[tuple[str, str]]:
    """`name=value&...` pairs, percent-decoded as strict UTF-8 (never with replacement)."""
    raw = text if isinstance(text, bytes) else _as_received(text)
    pairs = []
    try:
        for field in raw.split(b"&"):
            if field:
                name, _, value = field.partition(b"=")
                pairs.append((_unquote(name), _unquote(value)))
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_request", f"{what} is not valid UTF-8") from None
    return pairs


def _as_received(text: str) -> bytes:
    """A query string's bytes: servers hand it over decoded as Latin-1."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # already decoded as UTF-8 by the framework
        return text.encode("utf-8")


def _unquote(text: bytes) -> str:
    return unquote_to_bytes(text.replace(b"+", b" ")).decode("utf-8")


def negotiate_format(explicit: str | None, accept: str | None) -> StreamFormat:
    """SSE or NDJSON: from `?format=` when given, else from the `Accept` header."""
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


#: RFC 2046, section 5.1.1: a boundary is 1 to 70 characters.
_MAX_BOUNDARY = 70


def _parse_multipart(content_type: str, raw: bytes) -> tuple[list[tuple[str, str]], list[bytes]]:
    """Text fields and file contents of a multipart body, in order."""
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "bad_request", "multipart body without a boundary")
    if len(boundary) > _MAX_BOUNDARY:
        raise HTTPError(400, "bad_request", "multipart boundary is too long")
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

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(raw)
        parser.finalize()
    except HTTPError:
        raise
    except Exception:
        raise HTTPError(400, "bad_request", "malformed multipart body") from None
    if parser.state != MultipartState.END:  # the closing boundary never came
        raise HTTPError(400, "bad_request", "multipart body is incomplete")
    return fields, files
