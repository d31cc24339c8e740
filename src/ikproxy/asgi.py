"""The mountable ASGI app: the proxy's endpoints as a Starlette application.

app = create_app(deployment, parameters={"prompt": Param(str, required=True)})
Mount("/api", app=app)       # GET/POST /api/run, /api/ikproxy.js, /api/health
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ikproxy.concurrency import aclose
from ikproxy.deployments import Deployment
from ikproxy.model import StreamItem
from ikproxy.policy.config import Policy
from ikproxy.protocol import new_request_id
from ikproxy.proxy.core import Proxy, ProxyRequest, ProxyResponse
from ikproxy.proxy.stream import (
    RunStream,
    StreamFormat,
    stream_headers,
    to_readable_stream,
)

__all__ = [
    "ProxyEndpoint",
    "StreamingRunResponse",
    "create_app",
    "proxy_request",
    "to_starlette_response",
    "to_streaming_response",
]


def proxy_request(request: Request, path: str) -> ProxyRequest:
    """Describe a Starlette request for the proxy core."""
    return ProxyRequest(
        method=request.method,
        path=path,
        query_string=request.url.query,
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
        client=request.client.host if request.client else None,
        native=request,
    )


def to_starlette_response(response: ProxyResponse) -> Response:
    """The core's answer as a Starlette response (streams stop on client disconnect)."""
    headers = response.headers_without_content_type()
    media_type = response.media_type
    if isinstance(response.body, bytes):
        return Response(response.body, response.status, headers, media_type)
    return StreamingRunResponse(response.body, response.status, headers, media_type)


class ProxyEndpoint:
    """A raw ASGI endpoint that hands every request under it to a `Proxy`."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path = scope.get("path_params", {}).get("path", "")
        answer = await self.proxy.handle(proxy_request(request, path), request.stream())
        await to_starlette_response(answer)(scope, receive, send)


def create_app(
    deployment: Deployment,
    *,
    policy: Policy | None = None,
    debug: bool = False,
    **options: Any,
) -> Starlette:
    """A Starlette app serving `GET/POST /run`, `GET /ikproxy.js` and `GET /health`.

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive the Starlette `Request`.
    """
    proxy = Proxy(deployment, policy, **options)
    endpoint = ProxyEndpoint(proxy)
    app = Starlette(debug=debug, routes=[Route("/{path:path}", endpoint)])
    app.state.proxy = proxy
    return app


class StreamingRunResponse(StreamingResponse):
    """A StreamingResponse that always listens for `http.disconnect` itself.

    Starlette only listens on servers that report ASGI spec < 2.4; a2wsgi and
    gunicorn's asgi worker report 2.4+, and the run would then go on until a
    write fails. Listening ourselves stops it at once everywhere.
    """

    async def stream_response(self, send: Send) -> None:
        body = self.body_iterator
        if not isinstance(body, RunStream):
            await super().stream_response(send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await body.send_to(write)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The response is written in this task; one small task waits for the
        # disconnect and cancels it (lighter than a task group of two).
        with anyio.CancelScope() as scope_:

            async def listen() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        scope_.cancel()
                        return

            listener = asyncio.get_running_loop().create_task(listen())
            try:
                await self.stream_response(send)
            except OSError:
                pass  # the client went away mid-write
            finally:
                listener.cancel()
                # Starlette never closes the body iterator: cancelled while
                # blocked in send(), the run would wait for the GC.
                with anyio.CancelScope(shield=True):
                    await aclose(self.body_iterator)
        if self.background is not None:
            await self.background()


def to_streaming_response(
    stream: AsyncIterable[StreamItem],
    *,
    format: StreamFormat = "sse",
    keepalive: float = 15.0,
    retry_ms: int | None = 3000,
    request_id: str | None = None,
    timeout: float | None = None,
    finish_on_disconnect: bool = False,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """A Starlette response streaming the run in the wire protocol (SSE by default)."""
    request_id = request_id or new_request_id()
    body = to_readable_stream(
        stream,
        format=format,
        keepalive=keepalive,
        retry_ms=retry_ms,
        request_id=request_id,
        timeout=timeout,
        finish_on_disconnect=finish_on_disconnect,
    )
    all_headers = stream_headers(format, request_id)
    media_type = all_headers.pop("Content-Type")
    all_headers.update(headers or {})
    return StreamingRunResponse(
        body, status_code=status_code, headers=all_headers, media_type=media_type
    )
