"""What the documentation takes for granted, made real once per test module.

* **the demo on port 8000**: a block that names `http://127.0.0.1:8000` talks to a demo
  server (the demo's proxy at `/api` and `/api/edges`, painting 20 times faster, with
  no rate limit), served by uvicorn in a thread on a free port: the address is
  rewritten to it. HTML blocks are served from it too, beside `/api`.
* **Redis**: a `redis://redis:6379/0` URL (the host `redis`) is rewritten to a
  redis-server of this module's, on loopback.
* **a SCALE endpoint**: `python -m ikproxy.testing` (the fake SCALE server the pages
  point to) runs in a subprocess; an endpoint URL `https://<name>.scale.ikomia.ai` is
  rewritten to it, and `IKOMIA_URL`, `IKOMIA_SCALEFS_URL` and `IKOMIA_TOKEN` name it.
* **the reader's own objects**: `GIVENS` (in `pyblocks`) for the names a page uses
  without defining them, and `GIVEN_FILES` for the files it names (`photo.jpg`...).

Everything starts on first use, so running one block (`-k`) starts only what it needs.
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from tests.support.servers import running_server, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser
    from starlette.applications import Starlette

T = TypeVar("T")

#: An endpoint URL in the docs: a SCALE deployment of the reader's.
SCALE_ENDPOINT = re.compile(r"https://[\w.-]+\.scale\.ikomia\.ai")
#: The demo server of the docs (`ikproxy demo --port 8000`).
DEMO_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000\b")
#: A Redis of the docs (`RedisStore("redis://redis:6379/0")`, or on the loopback).
REDIS_URL = re.compile(r"redis://(?:redis|127\.0\.0\.1|localhost)(?::\d+)?/\d+")
#: The token `python -m ikproxy.testing` accepts by default.
FAKE_TOKEN = "fake-token"

MP4_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(100)


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png() -> bytes:
    from ikproxy.testing import TINY_PNG

    return TINY_PNG


#: Files a block names as if the reader had them: created in the page's folder on demand.
GIVEN_FILES = {
    "photo.jpg": _jpeg,
    "clip.mp4": lambda: MP4_BYTES,
    "scans/": _png,  # a folder holding one image
}


class World:
    """The servers, the browser and the environment the blocks of one test module share."""

    def __init__(self, tmp: Path, *, servers_ahead: bool = False) -> None:
        self.tmp = tmp
        #: Whether to start the examples' servers ahead of the tests that start them.
        self.servers_ahead = servers_ahead
        self.stack = contextlib.ExitStack()
        self.env = pytest.MonkeyPatch()
        self.stack.callback(self.env.undo)
        # The examples run on SCALE when IKOMIA_ENDPOINT is set: never here.
        self.env.delenv("IKOMIA_ENDPOINT", raising=False)
        self.env.delenv("IKPROXY_EXAMPLE_KEY", raising=False)
        # stores.md: a secret made once with `secrets.token_urlsafe(32)`, kept in the environment.
        self.env.setenv("IKPROXY_RESUME_SECRET", secrets.token_urlsafe(32))
        self.html: dict[str, str] = {}
        self.ahead: dict[Any, Future[tuple[contextlib.ExitStack, int]]] | None = None

    def close(self) -> None:
        self.stack.close()

    # -- servers started ahead -----------------------------------------------------------

    def start_ahead(
        self, starts: dict[Any, Callable[[], tuple[contextlib.ExitStack, int]]]
    ) -> None:
        """Start servers in the background (a few at a time), once per module: the tests
        that would start them one by one take them (`take`) ready. Those never taken are
        stopped with the module."""
        if self.ahead is not None:
            return
        pool = ThreadPoolExecutor(3, thread_name_prefix="servers-ahead")
        self.ahead = {key: pool.submit(start) for key, start in starts.items()}
        self.stack.callback(pool.shutdown)
        self.stack.callback(self._stop_ahead)

    def take(self, key: Any) -> tuple[contextlib.ExitStack, int] | None:
        """A server started ahead for `key` (now the caller's to stop), or None."""
        future = (self.ahead or {}).pop(key, None)
        return None if future is None else future.result()

    def _stop_ahead(self) -> None:
        for future in (self.ahead or {}).values():
            if future.cancel():
                continue
            with contextlib.suppress(Exception):
                future.result()[0].close()

    # -- the demo on port 8000 ---------------------------------------------------------

    @cached_property
    def demo_url(self) -> str:
        served = self.stack.enter_context(serve_in_thread(self._demo_app(), lifespan="off"))
        return served.url

    def _demo_app(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, Response
        from starlette.routing import Mount, Route

        from ikproxy.asgi import create_app
        from ikproxy.demo import create_deployment
        from ikproxy.policy import Param

        demo = create_deployment(speed=20)
        generate = create_app(
            demo,
            task="generate",
            parameters={"prompt": Param(str, required=True, max_length=500), "seed": int},
            max_inputs=0,
            rate_limit=None,
        )
        edges = create_app(demo, task="edges", parameters={"strength": float}, rate_limit=None)

        async def page(request: Request) -> Response:
            return HTMLResponse(self.html[request.path_params["key"]])

        return Starlette(
            routes=[
                Route("/docs-html/{key}", page),
                Mount("/api/edges", app=edges),
                Mount("/api", app=generate),
            ]
        )

    def serve_html(self, key: str, html: str) -> str:
        """The URL of a page made of `html`, on the demo server (beside `/api`)."""
        self.html[key] = html
        return f"{self.demo_url}/docs-html/{key}"

    # -- Redis ---------------------------------------------------------------------------

    @cached_property
    def redis_url(self) -> str:
        from tests.support.redis import redis_server

        folder = self.tmp / "redis"
        folder.mkdir()
        return self.stack.enter_context(redis_server(folder))

    # -- the fake SCALE ----------------------------------------------------------------

    @cached_property
    def fake_url(self) -> str:
        args = ["-m", "ikproxy.testing", "--port", "0", "--next-poll-in", "50"]
        server = self.stack.enter_context(running_server(args, ready=r"API token"))
        found = re.search(r"running on (http://\S+)", "".join(server.output))  # type: ignore[attr-defined]
        assert found, server.output  # type: ignore[attr-defined]
        url = found[1]
        self.env.setenv("IKOMIA_URL", url)
        self.env.setenv("IKOMIA_SCALEFS_URL", url)
        self.env.setenv("IKOMIA_TOKEN", FAKE_TOKEN)
        return url

    def fake_client(self) -> Any:
        """An async `Client` on the fake SCALE (for the name `client`)."""
        from ikproxy import Client

        return Client(self.fake_url)

    @cached_property
    def fake_run_uuid(self) -> str:
        """The SCALE uuid of a run done on the fake (for the name `uuid`)."""
        from ikproxy import SyncClient
        from ikproxy.testing import TINY_PNG

        with SyncClient(self.fake_url) as client:
            uuid = None
            for progress in client.run_stream(TINY_PNG):
                uuid = progress.uuid
        assert uuid, "the fake's run has no uuid"
        return uuid

    # -- rewriting what a block names ----------------------------------------------------

    def rewrite(self, text: str) -> str:
        """`text` with the docs' SCALE endpoint and demo address pointed at this module's."""
        if SCALE_ENDPOINT.search(text):
            text = SCALE_ENDPOINT.sub(self.fake_url, text)
        if REDIS_URL.search(text):
            text = REDIS_URL.sub(self.redis_url, text)
        if DEMO_ADDRESS.search(text):
            text = DEMO_ADDRESS.sub(self.demo_url.removeprefix("http://"), text)
        return text

    def scale_environ(self) -> None:
        """Point `IKOMIA_*` at the fake SCALE (started if need be)."""
        assert self.fake_url

    def given_files(self, text: str, folder: Path) -> None:
        """Create in `folder` the files of `GIVEN_FILES` that `text` names."""
        for name, content in GIVEN_FILES.items():
            if name.rstrip("/") not in text:
                continue
            if name.endswith("/"):
                (folder / name).mkdir(exist_ok=True)
                (folder / name / "page-1.png").write_bytes(content())
            elif not (folder / name).exists():
                (folder / name).write_bytes(content())

    # -- Chromium ------------------------------------------------------------------------

    @cached_property
    def _browser(self) -> tuple[ThreadPoolExecutor, Browser]:
        # Playwright's sync API runs an event loop in the thread that drives it: in the
        # test's own thread, it would break every later `asyncio` call (a block's `await`,
        # Django's async_to_sync). It lives in a thread of its own.
        from tests.support.browser import chromium

        thread = ThreadPoolExecutor(1, thread_name_prefix="chromium")
        browser_stack = contextlib.ExitStack()
        self.stack.callback(thread.shutdown)
        browser = thread.submit(browser_stack.enter_context, chromium()).result()
        self.stack.callback(lambda: thread.submit(browser_stack.close).result())
        return thread, browser

    def in_browser(self, check: Callable[[Browser], T]) -> T:
        """`check(browser)`, run in the browser's thread."""
        thread, browser = self._browser
        return thread.submit(check, browser).result()


@contextlib.contextmanager
def world(tmp: Path, *, servers_ahead: bool = False) -> Iterator[World]:
    made = World(tmp, servers_ahead=servers_ahead)
    try:
        yield made
    finally:
        made.close()
