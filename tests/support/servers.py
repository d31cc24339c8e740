"""Real servers on loopback: a free port, uvicorn in a thread of the test process, a server process."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

#: The repository's root.
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: Any) -> Iterator[httpx.Client]:
    """Serve an ASGI `app` with uvicorn on a free loopback port, in a thread of this process;
    yield an httpx client for it. The app is stopped and joined on exit.

    For the tests that read a stream while its run goes on. Starlette's TestClient
    cannot: up to Starlette 1.8 (1.7 is the last release for Python 3.10), its
    transport runs the app to completion (`portal.call(app, scope, receive, send)`)
    into a `BytesIO`, and only then hands httpx the whole body; streaming responses
    came with Starlette 1.9, which needs Python 3.11. A held run would then never end.
    A real server streams on every version, and reports a client that leaves.
    """
    from ikproxy.testing._server import serve_in_thread as serve_app

    with (
        serve_app(app, "127.0.0.1", 0) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


@contextmanager
def running_server(
    args: Sequence[str],
    *,
    ready: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 30.0,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Start a server process, wait until its output matches `ready`, stop it by pid on exit.

    `env` adds to the environment; a None value removes that variable. `cwd`: the folder
    it runs in (this one by default).
    """
    environ = {**os.environ, **(env or {})}
    environ = {key: value for key, value in environ.items() if value is not None}
    proc = subprocess.Popen(
        [sys.executable, *args] if args[0].endswith(".py") or args[0] == "-m" else list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,  # type: ignore[arg-type]
        cwd=cwd,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    everything: list[str] = []
    proc.all_output = everything  # type: ignore[attr-defined]

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            everything.append(line)
            lines.put(line)
        lines.put(None)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    seen: list[str] = []
    try:
        pattern = re.compile(ready)
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"server not ready in {timeout} s: {''.join(seen)}") from None
            if line is None:
                raise RuntimeError(f"server exited early: {''.join(seen)}")
            seen.append(line)
            if pattern.search(line):
                break
        proc.output = seen  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The pump reads until the pipe ends: closing it under the pump would raise there.
        pumping.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


# -- uvicorn in a thread, with its loop at hand (tasks alive, backlog, log level) --------


@dataclass
class Served:
    port: int
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tasks(self) -> int:
        """The asyncio tasks alive on the server's loop, counted on that loop."""
        future = asyncio.run_coroutine_threadsafe(_count_tasks(), self.loop)
        return future.result(10)


async def _count_tasks() -> int:
    return len([t for t in asyncio.all_tasks() if not t.done()]) - 1  # not this one


@contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[Served]:
    """Serve `app` until the block ends; the server is asked to exit, then joined."""
    port = free_port()
    options = {"host": "127.0.0.1", "port": port, "log_level": "warning", "lifespan": "off"}
    server = uvicorn.Server(uvicorn.Config(app, **{**options, **config}))
    started = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        started.set()
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "uvicorn's loop did not start"
    ready = threading.Event()
    while not server.started and thread.is_alive():
        ready.wait(0.01)  # uvicorn offers no event for this
    assert server.started, "uvicorn did not start"
    try:
        yield Served(port, server, loops[0])
    finally:
        server.should_exit = True
        thread.join(15)


def wait_until_listening(url: str, timeout: float = 20.0) -> None:
    """Wait (bounded) until a server at `url` accepts a connection: with `--workers`,
    uvicorn says it is running when its supervisor has bound the socket, before any
    worker listens on it."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while True:
            try:
                http.get(url)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
