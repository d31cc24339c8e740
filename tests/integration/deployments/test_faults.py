"""Faults: the upstream killed and restarted, stalled clients, a storm of disconnects.

The proxy is the mountable ASGI app under a real uvicorn (in a thread of this
process, so that its event loop can be inspected); the upstream is the fake SCALE
server as a real process (`python -m ikproxy.testing`), or in process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from ikproxy import Client, Progress, Results, TaskIO
from ikproxy.asgi import create_app
from ikproxy.codecs.sse import SSEDecoder
from ikproxy.testing import FakeScale
from tests.support.images import png
from tests.support.servers import free_port, running_server, serve_in_thread

TOKEN = "fake-token"
# The bound on a dead upstream follows from the client's settings (docs/deployment.md):
# the advised poll interval, then max_retries + 1 attempts refused at once, with
# retry_backoff, twice that, ... between them. Slack for a loaded CI machine on top.
NEXT_POLL_MS = 200
RETRIES, BACKOFF = 2, 0.1
DEAD_UPSTREAM_BOUND = NEXT_POLL_MS / 1000 + BACKOFF * (2**RETRIES - 1) + 3.0


@contextmanager
def _fake_process(port: int, polls: int) -> Iterator[Any]:
    args = ["-m", "ikproxy.testing", "--port", str(port), "--token", TOKEN]
    args += ["--polls", str(polls), "--next-poll-in", str(NEXT_POLL_MS)]
    with running_server(args, ready=r"running on") as proc:
        yield proc


def _run_body() -> dict[str, str]:
    return {"image": base64.b64encode(png()).decode()}


def _events(data: bytes) -> list[Any]:
    decoder = SSEDecoder()
    return [*decoder.feed(data), *decoder.close()]


async def _open_streams(url: str, count: int) -> tuple[list[Any], asyncio.Event, list[bytes]]:
    """`count` runs, each read to its end in a task; the event is set once all have begun."""
    bodies = [b""] * count
    begun = asyncio.Event()
    started = 0

    async def one(index: int, http: httpx.AsyncClient) -> None:
        nonlocal started
        async with http.stream("POST", url + "/run", json=_run_body()) as response:
            assert response.status_code == 200, await response.aread()
            async for chunk in response.aiter_bytes():
                if not bodies[index]:
                    started += 1
                    if started == count:
                        begun.set()
                bodies[index] += chunk

    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=count + 5))
    tasks = [asyncio.ensure_future(one(i, http)) for i in range(count)]
    tasks.append(asyncio.ensure_future(_close_after(http, tasks[:])))
    return tasks, begun, bodies


async def _close_after(http: httpx.AsyncClient, tasks: list[Any]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.aclose()


def test_upstream_killed_mid_run_then_restarted() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = Client(url, token=TOKEN, api_url=url, max_retries=RETRIES, retry_backoff=BACKOFF)
    app = create_app(client, rate_limit=None, keepalive=1)
    with serve_in_thread(app) as served:

        async def kill_mid_run() -> tuple[list[bytes], float]:
            with _fake_process(port, polls=100_000) as fake:
                tasks, begun, bodies = await _open_streams(served.url, 10)
                await asyncio.wait_for(begun.wait(), 20)
                os.killpg(fake.pid, signal.SIGKILL)
                killed = time.monotonic()
                await asyncio.wait_for(asyncio.gather(*tasks), DEAD_UPSTREAM_BOUND + 10)
                return bodies, time.monotonic() - killed

        bodies, took = asyncio.run(kill_mid_run())
        assert took <= DEAD_UPSTREAM_BOUND, f"streams ended {took:.1f} s after the kill"
        for body in bodies:
            events = _events(body)
            assert events[0].event == "progress"
            assert events[-1].event == "error"
            assert json.loads(events[-1].data)["code"] == "upstream_failed"
            assert sum(e.event in ("error", "result") for e in events) == 1

        async def after_restart() -> list[bytes]:
            with _fake_process(port, polls=1):
                tasks, _, bodies = await _open_streams(served.url, 3)
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
                return bodies

        for body in asyncio.run(after_restart()):
            assert _events(body)[-1].event == "result"


# -- a client that stops reading ---------------------------------------------------------


class _Firehose:
    """Runs that report `events` progress events as fast as they are taken, then a result."""

    def __init__(self, events: int, name_bytes: int) -> None:
        self.events = events
        self.name = "n" * name_bytes
        self.produced = 0

    async def run_stream(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Progress]:
        for i in range(self.events):
            self.produced += 1
            yield Progress("STARTED", (1, 2), run_id="r", uuid="u", name=self.name, fraction=0.5)
            if i % 64 == 0:
                await asyncio.sleep(0)
        results = Results((TaskIO("answer", {"value": 42}),), uuid="u")
        yield Progress("SUCCESS", (0, 0), run_id="r", uuid="u", fraction=1.0, results=results)


def _wait_until_still(read: Any, timeout: float = 20.0, quiet: float = 0.5) -> int:
    """The value of `read()` once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    pause = threading.Event()
    while time.monotonic() < deadline:
        pause.wait(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return int(value)
    raise TimeoutError("the value never settled")


def test_a_stalled_client_holds_the_run_back_and_loses_nothing() -> None:
    events, event_bytes = 20_000, 2_000  # about 40 MB of stream
    deployment = _Firehose(events, event_bytes)
    app = create_app(deployment, rate_limit=None, keepalive=30)
    with serve_in_thread(app) as served:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", served.port))
        sock.settimeout(20)
        sock.sendall(b"GET /run HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = bytearray(sock.recv(4096))  # the head and the first events, then nothing
        produced = _wait_until_still(lambda: deployment.produced)
        held = produced * event_bytes - len(received)
        # What the sockets hold (client receive and server send buffers), no more.
        assert held < 8 * 1024 * 1024, f"{held} bytes produced ahead of the reader"
        assert produced < events // 4
        with sock:
            while chunk := sock.recv(1 << 20):
                received += chunk
    assert deployment.produced == events
    body = bytes(received).split(b"\r\n\r\n", 1)[1]
    decoded = _events(_dechunk(body))
    ids = [int(e.id) for e in decoded]
    assert ids == list(range(1, events + 2))
    assert decoded[-1].event == "result"


def _dechunk(data: bytes) -> bytes:
    out, view = [], memoryview(data)
    while view:
        end = bytes(view[:16]).index(b"\r\n")
        size = int(bytes(view[:end]), 16)
        if size == 0:
            break
        out.append(bytes(view[end + 2 : end + 2 + size]))
        view = view[end + 4 + size :]
    return b"".join(out)


# -- a storm of disconnects ----------------------------------------------------------------


class _Counting:
    """A deployment that counts the runs still open (their generators not closed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = 0
        self.started = 0

    async def run_stream(self, *inputs: Any, **kwargs: Any) -> AsyncIterator[Progress]:
        self.open += 1
        self.started += 1
        try:
            async for item in self.inner.run_stream(*inputs, **kwargs):
                yield item
        finally:
            self.open -= 1


def test_a_disconnect_storm_stops_every_run_and_leaves_no_task() -> None:
    clients = 300
    fake = FakeScale(token=TOKEN, polls_before_done=100_000, next_poll_in=1000)
    with fake.serve() as fake_url:
        upstream = Client(fake_url, token=TOKEN, api_url=fake_url)
        deployment = _Counting(upstream)
        app = create_app(deployment, rate_limit=None, keepalive=1)
        with serve_in_thread(app, backlog=2048) as served:
            baseline = served.tasks()
            head = b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            body = json.dumps(_run_body()).encode()
            request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

            async def one() -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(request)
                assert b" 200 " in await reader.readline()
                await reader.readuntil(b"event: progress")
                writer.close()

            async def storm() -> None:
                await asyncio.wait_for(asyncio.gather(*(one() for _ in range(clients))), 60)

            asyncio.run(storm())
            assert deployment.started == clients
            assert _wait_until_still(lambda: deployment.open, timeout=20, quiet=0.3) == 0
            polls = fake.count("poll")
            # No more polling: the count stays put for longer than the advised interval.
            assert _wait_until_still(lambda: fake.count("poll"), quiet=1.5) == polls
            assert served.tasks() <= baseline
