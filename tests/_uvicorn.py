"""An ASGI app under a real uvicorn server in a thread of the test process, on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from ._support import free_port


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
