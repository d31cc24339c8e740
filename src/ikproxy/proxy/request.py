"""A framework's request as the proxy sees it, and its body read within the upload limit.

`read_body` enforces the limit while reading, so a body too large is refused
(413) at its first byte over the limit, never held whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from ikproxy.decimals import parse_decimal
from ikproxy.errors import HTTPError
from ikproxy.io import BaseIO, FileIO
from ikproxy.policy.config import Policy
from ikproxy.proxy.stream import StreamFormat
from ikproxy.proxy.uploads import InputURL

__all__ = [
    "BodyLimit",
    "Pending",
    "ProxyRequest",
    "RunSpec",
    "read_body",
    "read_body_sync",
    "too_many_inputs",
]

logger = logging.getLogger("ikproxy")

#: An input as parsed: image bytes (verified last), a file written to disk, or a URL.
Pending = Union[bytes, FileIO, InputURL]


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


class BodyLimit:
    """A body's size as it arrives, held to `limit` bytes and its declared length.

    Made before the first byte is read: a `Content-Length` that is invalid (400)
    or over the limit (413) is refused at once. `count` refuses the first chunk
    that goes over the limit (413); `check_complete` a body that ended before
    its declared length (400); `receiving` turns a body the server could not
    deliver into a 400.
    """

    def __init__(self, request: ProxyRequest, limit: int, request_id: str | None) -> None:
        self.limit = limit
        self.request_id = request_id
        self.size = 0
        self.declared: int | None = None
        declared = request.header("content-length")
        if declared is not None:
            length = parse_decimal(declared, max_digits=30)
            if length is None:
                raise HTTPError(400, "bad_request", "invalid Content-Length header")
            if length > limit:
                raise _too_large(limit)
            self.declared = length

    def count(self, chunk: bytes) -> bytes:
        """`chunk`, once counted: 413 if the body is now over the limit."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise _too_large(self.limit)
        return chunk

    def check_complete(self) -> None:
        """Refuse a body that ended before its declared `Content-Length`."""
        if self.declared is not None and self.size < self.declared:
            raise _unreceived(f"ended after {self.size} of {self.declared} bytes", self.request_id)

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Around the reading of the body: what the server raises for a body it could not read.

        A body the server could not deliver whole (the client left mid-upload,
        or sent malformed chunked framing) is the client's doing: one line at
        INFO on the `ikproxy` logger, and a 400 (or the cancellation that the
        server delivers, passed on). An `HTTPError` is passed on unchanged.
        """
        try:
            yield
        except HTTPError:
            raise
        except asyncio.CancelledError:  # the server cancels the request when its client leaves
            _log_unreceived("CancelledError", self.request_id)
            raise
        except Exception as exc:  # whatever the server raises for a body it could not read
            raise _unreceived(type(exc).__name__, self.request_id) from None


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
    size = BodyLimit(request, limit, request_id)
    with size.receiving():
        parts = [size.count(chunk) async for chunk in body]
    size.check_complete()
    return b"".join(parts)


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
    size = BodyLimit(request, limit, request_id)
    with size.receiving():
        parts = [size.count(chunk) for chunk in body]
    size.check_complete()
    return b"".join(parts)


def too_many_inputs(policy: Policy) -> HTTPError:
    """The refusal of a request with more inputs than `policy.max_inputs`."""
    return HTTPError(
        400,
        "invalid_input",
        f"too many images: at most {policy.max_inputs} per request",
    )


def too_many_fields(policy: Policy) -> HTTPError:
    """The refusal of a form or query with more fields than `policy.max_form_fields`."""
    return HTTPError(
        413,
        "payload_too_large",
        f"too many form fields: at most {policy.max_form_fields} per request",
    )


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "payload_too_large", f"request body exceeds {limit} bytes")


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
