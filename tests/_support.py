"""Shared test support: a scripted deployment and real servers on loopback."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import httpx

from ikproxy import Progress, Results, TaskIO
from ikproxy.io import InputLike, as_inputs


class ScriptedDeployment:
    """A deployment whose runs follow a script: a list of Progress, exceptions and gates.

    `gate` (an anyio.Event) holds the run before its last item, so a test can
    act while the run is "in progress". `closed` is set when the run's
    iterator is closed, whatever the reason.
    """

    def __init__(
        self,
        script: Sequence[Progress | BaseException] | None = None,
        *,
        refuse: BaseException | None = None,
        hold: bool = False,
    ) -> None:
        self.script = list(script) if script is not None else default_script()
        self.refuse = refuse
        self.hold = hold
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()
        self.closed = threading.Event()
        self.release = threading.Event()

    async def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Progress]:
        self.calls.append(
            {"inputs": as_inputs(*inputs), "parameters": dict(parameters or {}), "task": task}
        )
        try:
            if self.refuse is not None:
                raise self.refuse
            self.started.set()
            for index, item in enumerate(self.script):
                if self.hold and index == len(self.script) - 1:
                    await anyio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed.set()

    async def run(self, *inputs: InputLike, **kwargs: Any) -> Results:
        async for progress in self.run_stream(*inputs, **kwargs):
            if progress.results is not None:
                return progress.results
        raise AssertionError("no results")


def default_script() -> list[Progress]:
    results = Results((TaskIO("answer", {"value": 42}),), uuid="u-1")
    return [
        Progress("PENDING", (2000, 3000), run_id="r-1", uuid="u-1", name="t"),
        Progress("STARTED", (1000, 1500), run_id="r-1", uuid="u-1", name="t", fraction=0.5),
        Progress(
            "SUCCESS", (0, 0), run_id="r-1", uuid="u-1", name="t", fraction=1.0, results=results
        ),
    ]


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
    from ikproxy.testing._server import serve_in_thread

    with (
        serve_in_thread(app, "127.0.0.1", 0) as url,
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
) -> Iterator[subprocess.Popen[str]]:
    """Start a server process, wait until its output matches `ready`, stop it by pid on exit.

    `env` adds to the environment; a None value removes that variable.
    """
    environ = {**os.environ, **(env or {})}
    environ = {key: value for key, value in environ.items() if value is not None}
    proc = subprocess.Popen(
        [sys.executable, *args] if args[0].endswith(".py") or args[0] == "-m" else list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,  # type: ignore[arg-type]
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
