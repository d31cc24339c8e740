"""Running an ASGI app under uvicorn on a socket we bind first, in a thread or in the foreground.

Binding the socket ourselves gives the real port at once (port 0 picks a free
one); the ready callback fires once uvicorn accepts connections; `stop()` works
from any thread without waiting for uvicorn's 0.1 s tick. uvicorn is an
optional dependency (the `server` extra): import this module lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["Server", "bind", "serve_in_thread", "url_of"]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """The `http://host:port` URL of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """A uvicorn server that calls `on_ready()` once it accepts connections, and that
    `stop()` ends promptly from any thread."""

    def __init__(self, app: ASGIApp, on_ready: Callable[[], None], **config: Any) -> None:
        super().__init__(uvicorn.Config(app, lifespan="off", **config))
        self._on_ready = on_ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().startup(sockets=sockets)
        if self.started:
            self._on_ready()

    async def main_loop(self) -> None:
        # uvicorn's loop checks `should_exit` every 0.1 s; `stop()` also wakes us at once.
        assert self._wake is not None
        ticking = asyncio.ensure_future(super().main_loop())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({ticking, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ticking, woken):
                task.cancel()
            await asyncio.gather(ticking, woken, return_exceptions=True)

    def stop(self) -> None:
        """Ask the server to shut down; safe from any thread, before or after startup."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(wake.set)


@contextmanager
def serve_in_thread(app: ASGIApp, host: str, port: int) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread; yield its URL; stop and join on exit.

    Logging is left as the process configured it (uvicorn's own logging config is
    not applied), so a test run's log setup is untouched.
    """
    sock = bind(host, port)
    url = url_of(sock)
    ready = threading.Event()
    server = Server(app, ready.set, log_config=None, timeout_graceful_shutdown=5)

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            ready.set()

    thread = threading.Thread(target=run, name=f"fake-scale {url}", daemon=True)
    try:
        thread.start()
        ready.wait(_START_TIMEOUT)
        if not server.started:
            raise RuntimeError(f"the fake SCALE server did not start on {url}")
        yield url
    finally:
        server.stop()
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT)
        sock.close()
