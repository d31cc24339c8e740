"""Smoke test of every framework example: start it, run one prompt end to end, stop it.

Each example is started exactly as its README says (`python examples/<fw>/app.py
--port N`) with `IKPROXY_EXAMPLE_KEY` set, and must refuse a request without
the key, stream a run with it, and serve the shared page at `/`. One example's
page is also driven in headless Chromium.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from ikproxy import ImageIO
from ikproxy.browser import process_streaming_response_sync
from tests.support.servers import ROOT, free_port, running_server

FRAMEWORKS = ["flask", "quart", "litestar", "sanic", "django", "starlette", "fastapi"]
KEY = "example-key"
# Django's runserver says "Starting development server at" in 5.2, and "Starting WSGI
# development server at" in 6.1.
READY = (
    r"Running on|Uvicorn running on|Worker ready|Starting (?:WSGI )?development server"
    r"|Goin' Fast|Listening at"
)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def example(request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    script = ROOT / "examples" / request.param / "app.py"
    env = {"IKPROXY_EXAMPLE_KEY": KEY, "IKOMIA_ENDPOINT": None, "IKOMIA_TOKEN": None}
    with running_server([sys.executable, str(script), "--port", str(port)], ready=READY, env=env):
        yield f"http://127.0.0.1:{port}"


def test_the_example_runs_a_prompt_end_to_end(example: str) -> None:
    with httpx.Client(base_url=example, timeout=30) as http:
        refused = http.get("/api/run", params={"prompt": "a lighthouse"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"

        too_long = http.get(
            "/api/run", params={"prompt": "x" * 501}, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert too_long.status_code == 400
        assert too_long.json()["error"]["message"] == (
            "parameter 'prompt' is longer than 500 characters"
        )

        states: list[str] = []
        with http.stream(
            "GET",
            "/api/run",
            params={"prompt": "a lighthouse"},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as response:
            assert response.status_code == 200
            results = process_streaming_response_sync(response, lambda p: states.append(p.state))
        image = results.get_output(0, expect=ImageIO)
        assert image.mime_type == "image/png"
        assert image.to_pil().size == (512, 512)
        assert states[0] == "PENDING"
        assert states.count("STARTED") >= 5

        page = http.get("/")
        assert page.status_code == 200
        assert "/api/ikproxy.js" in page.text
        module = http.get("/api/ikproxy.js")
        assert module.status_code == 200
        assert "processStreamingResponse" in module.text


def test_a_real_example_page_runs_in_chromium() -> None:
    from playwright.sync_api import expect

    from tests.support.browser import ARTIFACTS, chromium

    port = free_port()
    script = ROOT / "examples" / "fastapi" / "app.py"
    env = {"IKPROXY_EXAMPLE_KEY": None, "IKOMIA_ENDPOINT": None, "IKOMIA_TOKEN": None}
    with (
        running_server([sys.executable, str(script), "--port", str(port)], ready=READY, env=env),
        chromium() as browser,
    ):
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#prompt", "a quiet lake")
        page.click("#run")
        expect(page.locator("#image")).to_be_visible(timeout=30_000)
        width = page.evaluate("document.querySelector('#image').naturalWidth")
        assert width == 512
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "example-fastapi.png"), full_page=True)
