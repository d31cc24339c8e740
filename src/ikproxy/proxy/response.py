"""What the proxy answers: a status, headers, and bytes or a stream of byte chunks.

`ProxyResponse` is what `Proxy.handle` returns to every surface; `SyncProxyResponse`
is its twin for WSGI, whose stream is a sync iterator driven through the portal.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ikproxy.concurrency import iterate_in_portal
from ikproxy.errors import HTTPError
from ikproxy.protocol import error_body

__all__ = ["ProxyResponse", "SyncProxyResponse", "error_response", "json_response", "to_sync"]

_JSON = "application/json"

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


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> ProxyResponse:
    """A JSON answer, compact."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return ProxyResponse(status, {"Content-Type": _JSON, **(headers or {})}, body)


def error_response(error: HTTPError, request_id: str | None = None) -> ProxyResponse:
    """The JSON answer to a refused request: `{"error": {...}}`, its status and headers."""
    headers = dict(error.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return json_response(error.status, error_body(error.code, error.message, request_id), headers)


def to_sync(response: ProxyResponse) -> SyncProxyResponse:
    """A response for sync callers: a streamed body is iterated through the portal."""
    if isinstance(response.body, bytes):
        return SyncProxyResponse(response.status, response.headers, response.body)
    return SyncProxyResponse(response.status, response.headers, iterate_in_portal(response.body))
