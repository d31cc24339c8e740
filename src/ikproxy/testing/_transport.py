"""Dropping a connection without an answer, on a real server and in process.

A dropped connection must look to the client exactly like a server that went
away: no status line at all. ASGI has no message for that, and an exception
from the app makes most servers answer 500. So, under uvicorn, the fake closes
the socket itself; in process, its transport raises what httpx raises for a
real drop.
"""

from __future__ import annotations

import anyio
import httpx
from starlette.types import ASGIApp, Receive, Send

__all__ = ["ConnectionDropped", "FakeTransport", "drop_connection"]

# How long to wait for the server to notice its own close before giving up.
_DISCONNECT_TIMEOUT = 5.0


class ConnectionDropped(Exception):
    """Raised by the app for a scripted drop when it cannot reach the socket itself."""


async def drop_connection(receive: Receive, send: Send) -> None:
    """Close the connection of this request without sending any response.

    uvicorn hands the app its request cycle's bound `send`, whose owner holds the
    socket transport. Closing it and waiting for the `http.disconnect` that
    follows lets uvicorn end the cycle quietly (no 500, no error log). Any
    other server (or a wrapped `send`) gets `ConnectionDropped` instead.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    close = getattr(transport, "close", None)
    if not callable(close):
        raise ConnectionDropped("the fake SCALE server dropped the connection")
    close()
    with anyio.move_on_after(_DISCONNECT_TIMEOUT):
        while (await receive())["type"] != "http.disconnect":
            pass


class FakeTransport(httpx.AsyncBaseTransport):
    """An in-process httpx transport to an ASGI app; a scripted drop raises
    `httpx.RemoteProtocolError`, as a real dropped connection does."""

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None

    async def aclose(self) -> None:
        await self._inner.aclose()
