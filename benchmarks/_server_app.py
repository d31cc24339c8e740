"""The app `benchmarks/server.py` serves: the same streams through ikproxy and sse-starlette."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import anyio
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ikproxy.server import to_streaming_response


def _progress(i: int, n: int) -> dict[str, Any]:
    return {
        "state": "STARTED",
        "eta": [n - i, n - i + 100],
        "run_id": "5f0c2a9e8b7d4c3a",
        "uuid": "8d1e2f3a-4b5c-6d7e-8f90",
        "name": "generate",
        "fraction": round(i / n, 4),
    }


def _final(payload: str) -> dict[str, Any]:
    return {
        **_progress(1, 1),
        "state": "SUCCESS",
        "results": {"uuid": "u", "outputs": [{"text": payload}]},
    }


async def _many(n: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        yield _progress(i, n)
    yield _final("done")


async def _big(mb: int) -> AsyncIterator[dict[str, Any]]:
    yield _final("x" * (mb * 1024 * 1024))


async def _tick(seconds: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(seconds):
        yield _progress(i, seconds)
        await anyio.sleep(1)
    yield _final("done")


def _source(request: Request) -> AsyncIterator[dict[str, Any]]:
    kind = request.path_params["kind"]
    value = int(request.query_params.get("n", "1"))
    return {"many": _many, "big": _big, "tick": _tick}[kind](value)


async def ours(request: Request) -> Response:
    return to_streaming_response(_source(request), keepalive=15.0)


async def peer(request: Request) -> Response:
    async def events() -> AsyncIterator[dict[str, Any]]:
        i = 0
        async for item in _source(request):
            i += 1
            kind = "result" if "results" in item else "progress"
            yield {"event": kind, "id": str(i), "data": json.dumps(item, separators=(",", ":"))}

    return EventSourceResponse(events(), ping=15)


async def floor(request: Request) -> Response:
    """The least a server can do: constant bytes, no encoding, no disconnect listener."""

    async def chunks() -> AsyncIterator[bytes]:
        async for _ in _source(request):
            yield b"event: progress\ndata: {}\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def health(request: Request) -> Response:
    return Response("ok")


_starlette = Starlette(
    routes=[
        Route("/ours/{kind}", ours),
        Route("/peer/{kind}", peer),
        Route("/floor/{kind}", floor),
        Route("/health", health),
    ]
)


async def _raw_floor(scope: Scope, receive: Receive, send: Send) -> None:
    """The floor without Starlette: a bare ASGI callable writing constant bytes."""
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async for _ in _source_of(scope):
        await send(
            {
                "type": "http.response.body",
                "body": b"event: progress\ndata: {}\n\n",
                "more_body": True,
            }
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _raw_ours(scope: Scope, receive: Receive, send: Send) -> None:
    """ikproxy's response called as a bare ASGI app: no routing, no middleware."""
    await to_streaming_response(_source_of(scope), keepalive=15.0)(scope, receive, send)


def _source_of(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    kind = scope["path"].rsplit("/", 1)[1]
    query = dict(parse_qsl(scope["query_string"].decode()))
    return {"many": _many, "big": _big, "tick": _tick}[kind](int(query.get("n", "1")))


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Routes `/raw-floor/...` and `/raw-ours/...` past Starlette; the rest to it."""
    path = scope.get("path", "")
    if path.startswith("/raw-floor/"):
        await _raw_floor(scope, receive, send)
    elif path.startswith("/raw-ours/"):
        await _raw_ours(scope, receive, send)
    else:
        await _starlette(scope, receive, send)
