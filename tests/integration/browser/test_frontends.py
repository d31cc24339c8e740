"""The React, Vue, Svelte and TypeScript examples, built with esbuild and driven in Chromium.

`npm run build` (in examples/frontends) writes each app to `dist/<name>/`; this
module serves `dist/` at `/` beside the demo proxy at `/api` (uvicorn, a free
port) and drives each page in headless Chromium as a person would: a prompt, the
ETA on the button, the progress, the image; a refused prompt; leaving the page
mid-run, which must stop the run on the server. `npm run check` type-checks
every example strictly (tsc, vue-tsc, svelte-check).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.browser import (
    DIST,
    ETA_ON_BUTTON,
    FRONTENDS,
    ROOT,
    build,
    chromium,
    npm,
    png,
    screenshot,
)
from tests.support.servers import free_port, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from starlette.applications import Starlette

#: The first test builds every app (npm), which takes longer than the default timeout.
pytestmark = pytest.mark.timeout(600)

APPS = ["react", "vue", "svelte", "typescript"]
PHONE = {"width": 390, "height": 844}


# -- the server the pages talk to ------------------------------------------------------

#: Runs of the `held` task that were closed, by prompt (in the server process).
_CLOSED: dict[str, asyncio.Event] = {}


def create_app() -> Starlette:
    """The app the pages load (a uvicorn `--factory`).

    * `/api`: the demo's `generate` (prompt required, at most 500 characters), except
      that a prompt starting with "hold " runs the `held` task: one progress event,
      then it waits until it is cancelled, which it records;
    * `/ctl/closed/{prompt}?wait=S`: "closed" once that held run was cancelled, else
      "open" after S seconds (10 by default);
    * `/`: the built apps (`dist/`).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ikproxy.asgi import create_app as proxy_app
    from ikproxy.demo import create_deployment
    from ikproxy.deployments.local import LocalDeployment
    from ikproxy.policy import Param, TokenBucket

    async def held(*, prompt: str) -> AsyncIterator[Any]:
        closed = _CLOSED.setdefault(prompt, asyncio.Event())
        try:
            yield 0.25
            await asyncio.sleep(3600)
            yield png()
        finally:
            closed.set()

    demo = create_deployment()
    holding = LocalDeployment({"held": held}, name="held")

    class ByPrompt:
        """The demo, or the held task for a prompt that starts with "hold "."""

        def run_stream(self, *inputs: Any, parameters: Any = None, **options: Any) -> Any:
            if str((parameters or {}).get("prompt", "")).startswith("hold "):
                options["task"] = "held"
                return holding.run_stream(*inputs, parameters=parameters, **options)
            return demo.run_stream(*inputs, parameters=parameters, **options)

    async def closed(request: Request) -> PlainTextResponse:
        event = _CLOSED.setdefault(request.path_params["prompt"], asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), float(request.query_params.get("wait", 10)))
        except asyncio.TimeoutError:
            return PlainTextResponse("open")
        return PlainTextResponse("closed")

    proxy = proxy_app(
        ByPrompt(),
        task="generate",
        parameters={"prompt": Param(str, required=True, max_length=500)},
        max_inputs=0,
        rate_limit=TokenBucket(rate=1000, burst=1000),
    )
    return Starlette(
        routes=[
            Mount("/api", app=proxy),
            Route("/ctl/closed/{prompt}", closed),
            Mount("/", StaticFiles(directory=DIST, html=True)),
        ]
    )


@pytest.fixture(scope="module")
def sizes() -> dict[str, int]:
    return build()


@pytest.fixture(scope="module")
def base_url(sizes: dict[str, int]) -> Iterator[str]:
    port = free_port()
    command = [
        "-m",
        "uvicorn",
        "--factory",
        "tests.integration.browser.test_frontends:create_app",
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with running_server(command, ready=r"Uvicorn running on"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1024, "height": 760})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def _progress_value(page: Page) -> float:
    value: float = page.eval_on_selector("progress", "bar => bar.value")
    return value


# -- the tests ---------------------------------------------------------------------------


def test_the_examples_type_check_strictly() -> None:
    build()  # node_modules in place
    done = npm("run", "check", timeout=540)
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_app_is_a_static_page_with_a_minified_bundle(sizes: dict[str, int]) -> None:
    for name in APPS:
        html = (DIST / name / "index.html").read_text()
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        assert '<script type="module" src="./main.js"></script>' in html
        assert (DIST / name / "main.js").stat().st_size == sizes[name]
    print("minified bundles:", ", ".join(f"{n} {sizes[n] / 1024:.1f} KiB" for n in sizes))


@pytest.mark.parametrize("name", APPS)
def test_a_prompt_shows_the_eta_the_progress_and_the_image(
    page: Page, base_url: str, name: str
) -> None:
    page.goto(f"{base_url}/{name}/")
    page.fill("textarea", "a lighthouse at dusk")
    page.click("button[type=submit]")
    page.wait_for_function(
        f"() => {ETA_ON_BUTTON}.test(document.querySelector('button').textContent)"
    )
    assert page.is_disabled("button[type=submit]")
    first = _progress_value(page)
    page.wait_for_function(
        "(first) => document.querySelector('progress')?.value > first + 0.1", arg=first
    )
    assert page.locator("img:visible, [role=alert]:visible").count() == 0
    screenshot(page, f"frontend-{name}-running.png")
    image = page.wait_for_selector("img[src^='data:image/png;base64,']")
    assert image is not None
    page.wait_for_function("() => document.querySelector('img').naturalWidth === 512")
    assert page.text_content("button[type=submit]") == "Generate"
    assert page.locator("[role=alert]:visible, progress:visible").count() == 0
    screenshot(page, f"frontend-{name}-desktop.png")


@pytest.mark.parametrize("name", APPS)
def test_a_refused_prompt_shows_its_error_in_words(page: Page, base_url: str, name: str) -> None:
    page.goto(f"{base_url}/{name}/")
    page.fill("textarea", "x" * 501)
    page.click("button[type=submit]")
    alert = page.wait_for_selector("[role=alert]:visible")
    assert alert is not None
    assert alert.text_content() == (
        "parameter 'prompt' is longer than 500 characters (invalid_parameter)"
    )
    assert page.text_content("button[type=submit]") == "Generate"
    assert page.locator("img:visible, progress:visible").count() == 0
    screenshot(page, f"frontend-{name}-refused.png")


@pytest.mark.parametrize("name", APPS)
def test_on_a_phone_nothing_scrolls_sideways(browser: Browser, base_url: str, name: str) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(f"{base_url}/{name}/")
        page.fill("textarea", "a red fox in the snow")
        page.click("button[type=submit]")
        page.wait_for_selector("img[src^='data:image/png;base64,']")
        page.wait_for_function("() => document.querySelector('img').complete")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        box = page.query_selector("img")
        assert box is not None
        bounds = box.bounding_box()
        assert bounds is not None
        assert bounds["x"] >= 0
        assert bounds["x"] + bounds["width"] <= PHONE["width"]
        screenshot(page, f"frontend-{name}-phone.png")
    finally:
        context.close()


@pytest.mark.parametrize("name", APPS)
def test_leaving_the_page_stops_the_run_on_the_server(page: Page, base_url: str, name: str) -> None:
    prompt = f"hold {name} {uuid.uuid4().hex[:8]}"
    page.goto(f"{base_url}/{name}/")
    page.fill("textarea", prompt)
    page.click("button[type=submit]")
    page.wait_for_function("() => document.querySelector('progress')?.value > 0")
    page.goto(f"{base_url}/api/health")
    answer = httpx.get(f"{base_url}/ctl/closed/{prompt}", timeout=15)
    assert answer.text == "closed"


def test_a_run_still_going_is_not_reported_closed(base_url: str) -> None:
    # The control endpoint itself: a held run whose client stays reads as open.
    prompt = f"hold control {uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        with client.stream("GET", "/api/run", params={"prompt": prompt}) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_raw()  # kept: a dropped iterator closes the response
            next(chunks)
            assert client.get(f"/ctl/closed/{prompt}?wait=0.5").text == "open"
        assert client.get(f"/ctl/closed/{prompt}").text == "closed"


def test_paths_and_files_are_where_the_docs_say() -> None:
    assert (FRONTENDS / "package-lock.json").is_file()
    manifest = json.loads((FRONTENDS / "package.json").read_text())
    assert manifest["dependencies"]["ikproxy"] == "file:../../js"
    assert set(manifest["scripts"]) >= {"build", "check"}
    assert Path(FRONTENDS / "node_modules" / "ikproxy").resolve() == (ROOT / "js").resolve()
