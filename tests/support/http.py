"""Reading streams and errors back, and building request bodies by hand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any


def read_until(chunks: Iterator[bytes], marker: bytes, count: int = 1) -> bytes:
    """Read `chunks` until `marker` was seen `count` times; everything read."""
    seen = b""
    while seen.count(marker) < count:
        seen += next(chunks)
    return seen


async def aread_until(chunks: AsyncIterator[bytes], marker: bytes, count: int = 1) -> bytes:
    """`read_until` for an async iterator of chunks."""
    seen = b""
    while seen.count(marker) < count:
        seen += await chunks.__anext__()
    return seen


def error_of(
    response: Any, *, request_id: bool = False, exact: bool = False
) -> tuple[int, str, str]:
    """(status, code, message) of the proxy's JSON error, from any framework's test response.

    `request_id`: also check the body's request id is the `X-Request-Id` header's.
    `exact`: also check the error object has no other key than code, message, request_id.
    """
    if hasattr(response, "get_json"):  # Flask (Werkzeug's test response)
        body = response.get_json()["error"]
    else:  # httpx, Starlette, Django
        body = json.loads(response.content)["error"]
    if request_id:
        assert body["request_id"] == response.headers["x-request-id"]
    if exact:
        assert set(body) == {"code", "message", "request_id"}
    return response.status_code, body["code"], body["message"]


def multipart(
    parts: list[tuple[str, bytes, bool]],
    boundary: str = "xyz",
    close: bool = True,
    filename: str = "x.bin",
) -> bytes:
    """A multipart/form-data body of (name, data, is_file) parts; `close=False` leaves it open."""
    out: list[bytes] = []  # joined once: 150,000 parts stay linear
    for name, data, is_file in parts:
        disposition = f'; filename="{filename}"' if is_file else ""
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{disposition}\r\n\r\n'
        out += (head.encode(), data, b"\r\n")
    if close:
        out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)
