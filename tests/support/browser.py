"""Browser test support: a real headless Chromium, and the app the browser tests load.

`chromium()` launches Debian's Chromium (`/usr/bin/chromium`, or `IKPROXY_CHROMIUM`)
through Playwright. `create_test_app` (run by uvicorn in a subprocess) serves the demo
proxy plus what a test needs and a real app never does: a failing run, cut streams,
the shared example page.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .servers import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from starlette.applications import Starlette

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("IKPROXY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEST_KEY = "test-key"


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def png(width: int = 8, height: int = 6, rgb: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    """A small solid-colour PNG, encoded by hand (no Pillow needed in the browser tests)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# -- the test app ------------------------------------------------------------------

_PROGRESS = b'{"state":"STARTED","eta":[500,800],"run_id":"r","uuid":"u","name":"t","fraction":0.5}'
TRUNCATED_SSE = b": ikproxy protocol 1\n\nevent: progress\nid: 1\ndata: " + _PROGRESS + b"\n\n"
TRUNCATED_NDJSON = b'{"type":"progress","id":1,' + _PROGRESS[1:] + b"\n"


def create_test_app() -> Starlette:
    """The app for the browser tests (a uvicorn `--factory`).

    * `/api` and `/api/edges`: the demo proxy (`generate` four times faster than the
      demo), where `/api` refuses a wrong `Authorization: Bearer` key with 401 (no
      header at all is let through);
    * `/fail/run`: a run that fails after its first progress (an `error` event);
    * `/answer/run`: a run with three outputs: an image, JSON data, another image;
    * `/truncated.sse`, `/truncated.ndjson`: 200 streams cut before a terminal event;
    * `/shared/`, `/plain/`: the example pages, which load `/api/ikproxy.js`;
    * `/resumable/run`: the demo's `generate` with resumable runs, behind a cutter that
      drops the connection of every new run after its third event;
    * `/throttled/run`: the same, with a resume limit of one every 2 s (one at once),
      which `POST /throttled/drain` spends for the caller, so that its next resume is
      refused 429 with a `Retry-After`.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ikproxy.asgi import create_app
    from ikproxy.demo import create_deployment
    from ikproxy.deployments.local import LocalDeployment
    from ikproxy.policy import AccessDenied, Param, TokenBucket

    demo = create_deployment(speed=4)

    def authorize(request: Request) -> None:
        given = request.headers.get("authorization")
        if given is not None and given != f"Bearer {TEST_KEY}":
            raise AccessDenied(401, "Invalid API key.")

    def boom(*, prompt: str = "") -> Iterator[float]:
        yield 0.1
        raise RuntimeError("the secret detail that must not reach the browser")

    def answer() -> list[Any]:
        return [png(3, 2), {"label": "cat"}, png(5, 4)]

    failing = LocalDeployment({"boom": boom, "answer": answer}, name="failing")
    unlimited = TokenBucket(rate=1000, burst=1000)
    generate = create_app(
        demo,
        task="generate",
        parameters={"prompt": Param(str, required=True, max_length=500)},
        max_inputs=0,
        authorize=authorize,
        rate_limit=unlimited,
    )
    edges = create_app(demo, task="edges", max_inputs=1, rate_limit=unlimited)
    fail = create_app(failing, parameters={"prompt": str}, rate_limit=unlimited)
    answers = create_app(failing, task="answer", max_inputs=0, rate_limit=unlimited)
    resumable = create_app(
        demo, task="generate", parameters={"prompt": str}, rate_limit=unlimited, resume_window=30
    )
    resumes = TokenBucket(rate=0.5, burst=1)
    throttled = create_app(
        demo,
        task="generate",
        parameters={"prompt": str},
        rate_limit=unlimited,
        resume_window=30,
        resume_rate_limit=resumes,
    )

    async def drain(request: Request) -> Response:
        key = "resume:" + (request.client.host if request.client else "anonymous")
        while resumes.acquire(key) is None:
            pass
        return Response(status_code=204)

    def cut(body: bytes, media_type: str) -> Any:
        async def endpoint(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield body
                await asyncio.sleep(0)

            return StreamingResponse(chunks(), media_type=media_type)

        return endpoint

    return Starlette(
        routes=[
            Route("/truncated.sse", cut(TRUNCATED_SSE, "text/event-stream")),
            Route("/truncated.ndjson", cut(TRUNCATED_NDJSON, "application/x-ndjson")),
            Mount("/shared", StaticFiles(directory=ROOT / "examples" / "shared", html=True)),
            Mount(
                "/plain",
                StaticFiles(directory=ROOT / "examples" / "frontends" / "plain", html=True),
            ),
            Mount("/fail", app=fail),
            Mount("/resumable", app=_CutAfterEvents(resumable, 3)),
            Route("/throttled/drain", drain, methods=["POST"]),
            Mount("/throttled", app=_CutAfterEvents(throttled, 3)),
            Mount("/answer", app=answers),
            Mount("/api/edges", app=edges),
            Mount("/api", app=generate),
        ]
    )


class _CutAfterEvents:
    """ASGI middleware: drops the connection of a new run's stream after `count` events.

    A request that resumes a run (it names a `Last-Event-ID`) is passed through.
    """

    def __init__(self, app: Any, count: int) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if scope["type"] != "http" or b"last-event-id" in headers:
            await self.app(scope, receive, send)
            return
        seen = 0

        async def cutting_send(message: Any) -> None:
            nonlocal seen
            await send(message)
            if message["type"] == "http.response.body":
                seen += message.get("body", b"").count(b"\nid: ")
                if seen >= self.count:
                    raise RuntimeError("connection cut by the test app")

        await self.app(scope, receive, cutting_send)


def app_command(port: int) -> list[str]:
    """The command line that serves `create_test_app` on 127.0.0.1:`port`."""
    return [
        "-m",
        "uvicorn",
        "--factory",
        "tests.support.browser:create_test_app",
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "info",
    ]


# -- the front-end examples (examples/frontends), built with npm ---------------------

FRONTENDS = ROOT / "examples" / "frontends"
DIST = FRONTENDS / "dist"
#: What the button says while a run goes on (a regular expression, for playwright).
ETA_ON_BUTTON = r"/Generating… (\d+ s|less than a second)/"


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`npm ARGS` in examples/frontends, its output captured."""
    executable = shutil.which("npm")
    assert executable, "npm is missing: `./dev test` installs it (apt-get, as root)"
    return subprocess.run(
        [executable, *args],
        cwd=FRONTENDS,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@functools.cache
def build() -> dict[str, int]:
    """`npm run build` once per test process; the minified size of each app's script."""
    if not (FRONTENDS / "node_modules").is_dir():
        done = npm("ci", "--no-audit", "--no-fund")
        assert done.returncode == 0, done.stdout + done.stderr
    done = npm("run", "build")
    assert done.returncode == 0, done.stdout + done.stderr
    sizes: dict[str, int] = json.loads((DIST / "sizes.json").read_text())
    return sizes


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True, animations="disabled")
