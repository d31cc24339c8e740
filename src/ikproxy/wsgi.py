"""The mountable ASGI app as a WSGI app, for any WSGI framework or server.

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from ikproxy.wsgi import create_wsgi_app

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/api": create_wsgi_app(deployment)})

Built on a2wsgi, with three fixes. A client that leaves closes the response
iterator (WSGI servers call `close()` after a failed write); a2wsgi alone then
leaves the ASGI task waiting forever, so here `close()` cancels it, which
closes the run. A body that ends before its `Content-Length` (the client left
mid-upload) made a2wsgi hand the app empty chunks forever, spinning a thread:
here it is answered 400 and logged as the client's doing. And every app runs
on the process-wide event loop thread of `ikproxy.server.blocking_portal`,
started on first use in each worker process (a loop thread started at import
would not survive a pre-fork server).

The hooks receive a Starlette `Request` and run on that loop thread, as in
`ikproxy.asgi`; a framework's own request context (Flask's `request`) is not
there. For hooks that need it, use the framework's adapter instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from a2wsgi.asgi import ASGIResponder

from ikproxy.asgi import create_app
from ikproxy.concurrency import blocking_portal
from ikproxy.decimals import parse_decimal
from ikproxy.deployments import Deployment
from ikproxy.errors import HTTPError
from ikproxy.policy.config import Policy
from ikproxy.protocol import new_request_id
from ikproxy.proxy.core import Proxy, error_response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from starlette.types import ASGIApp

__all__ = ["WSGIApp", "create_wsgi_app", "to_wsgi"]


_loop_lock = threading.Lock()
_loop: tuple[object, asyncio.AbstractEventLoop] | None = None


def _portal_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the process-wide portal (a new one after a fork)."""
    global _loop
    portal = blocking_portal()
    current = _loop
    if current is not None and current[0] is portal:
        return current[1]
    with _loop_lock:
        if _loop is None or _loop[0] is not portal:
            _loop = (portal, portal.call(asyncio.get_running_loop))
        return _loop[1]


class _Responder(ASGIResponder):
    """a2wsgi's responder, keeping a handle on the ASGI task so that it can be cancelled."""

    task: asyncio.Task[None] | None = None

    async def start_asgi_app(self, environ: Any) -> asyncio.Task[None]:
        self.task = await super().start_asgi_app(environ)
        return self.task

    def cancel(self) -> None:
        task = self.task
        if task is not None and not task.done():
            self.loop.call_soon_threadsafe(task.cancel)


class _BodyEnded(Exception):
    """The request body ended before its `Content-Length`: the client left mid-upload."""


class _CheckedInput:
    """`wsgi.input` that raises `_BodyEnded` at an end that comes before `length` bytes."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream = stream
        self._left = length

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        self._left -= len(data)
        if not data and size != 0 and self._left > 0:
            raise _BodyEnded
        return data


class _ClosingIterator:
    """The WSGI response iterable: `close()` ends the ASGI task as well as the iterator.

    A body that ended early is answered here, with the proxy's JSON 400.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        responder: _Responder,
        start_response: StartResponse,
        environ: WSGIEnvironment,
    ) -> None:
        self._chunks = chunks
        self._responder = responder
        self._start_response = start_response
        self._environ = environ
        self.started = False

    def __iter__(self) -> _ClosingIterator:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except _BodyEnded:
            self._chunks = iter(())
            self._responder.cancel()
            return self._refuse()

    def _refuse(self) -> bytes:
        # Cancelled in its read, the app logs the client's departure under this id.
        request_id = new_request_id(self._environ.get("HTTP_X_REQUEST_ID"))
        if self.started:
            raise StopIteration
        answer = error_response(
            HTTPError(400, "bad_request", "the request body could not be read"), request_id
        )
        self._start_response("400 Bad Request", list(answer.headers.items()))
        return cast(bytes, answer.body)

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._responder.cancel()


class WSGIApp:
    """An ASGI app served as a WSGI app: streamed chunk by chunk, stopped when the client leaves.

    `proxy` is the `Proxy` behind it when it was made by `create_wsgi_app`.
    """

    def __init__(self, app: ASGIApp, *, proxy: Proxy | None = None) -> None:
        self.app = app
        self.proxy = proxy

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> _ClosingIterator | list[bytes]:
        declared = str(environ.get("CONTENT_LENGTH") or "")
        length = parse_decimal(declared, max_digits=30) if declared else 0
        if length is None:  # `²`, 5,000 digits...: refused here, a2wsgi's int() would raise
            request_id = new_request_id(environ.get("HTTP_X_REQUEST_ID"))
            refusal = HTTPError(400, "bad_request", "invalid Content-Length header")
            answer = error_response(refusal, request_id)
            start_response("400 Bad Request", list(answer.headers.items()))
            return [cast(bytes, answer.body)]
        stream = environ.get("wsgi.input") or BytesIO()
        environ = {**environ, "wsgi.input": _CheckedInput(stream, length)}
        responder = _Responder(self.app, _portal_loop())  # type: ignore[arg-type]

        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            closing.started = True
            return start_response(status, headers, exc_info)

        closing = _ClosingIterator(
            responder(environ, start),  # type: ignore[arg-type]
            responder,
            start_response,
            environ,
        )
        return closing


def to_wsgi(app: ASGIApp) -> WSGIApp:
    """Serve any ASGI app (HTTP only) as a WSGI app, cancelling it when the client leaves."""
    return WSGIApp(app)


def create_wsgi_app(
    deployment: Deployment, *, policy: Policy | None = None, **options: Any
) -> WSGIApp:
    """`ikproxy.asgi.create_app` as a WSGI app: `/run`, `/health`, `/ikproxy.js`, ...

    Policy options (`parameters=`, `authorize=`, `max_upload_bytes=`, ...) are
    those of `ikproxy.policy.Policy`; hooks receive a Starlette `Request`.
    """
    app = create_app(deployment, policy=policy, **options)
    proxy: Proxy = app.state.proxy
    return WSGIApp(app, proxy=proxy)
