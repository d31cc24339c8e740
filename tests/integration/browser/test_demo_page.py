"""The demo page (`ikproxy demo`) and the example pages, driven in headless Chromium.

The demo server is the real command, started as a subprocess. Screenshots of each
finished page are saved in `test-artifacts/` for a human to look at.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import ARTIFACTS, TEST_KEY, app_command, chromium, png
from tests.support.servers import free_port, running_server

RUN_TIMEOUT_MS = 30_000
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    port = free_port()
    command = ["-m", "ikproxy", "demo", "--port", str(port)]
    with running_server(command, ready=r"running at http://", env={"IKOMIA_ENDPOINT": ""}):
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        assert errors == [], f"uncaught errors in the page: {errors}"
    finally:
        context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True, animations="disabled")


def record_progress(page: Page, selector: str = "#bar") -> None:
    """Collect every value the progress bar takes, in `window.progressValues`."""
    page.evaluate(
        """(selector) => {
            const bar = document.querySelector(selector);
            window.progressValues = [];
            new MutationObserver(() => {
                window.progressValues.push(Number(bar.getAttribute("aria-valuenow")));
            }).observe(bar, {attributes: true, attributeFilter: ["aria-valuenow"]});
        }""",
        selector,
    )


def progress_values(page: Page) -> list[int]:
    values: list[int] = page.evaluate("window.progressValues")
    return values


def natural_width(page: Page, selector: str) -> int:
    width: int = page.eval_on_selector(selector, "img => img.naturalWidth")
    return width


# -- the demo page -------------------------------------------------------------------


def test_a_prompt_runs_with_moving_progress_and_shows_the_picture(
    page: Page, demo_url: str
) -> None:
    page.goto(demo_url)
    expect(page.locator("#backend-label")).to_contain_text("Local demo deployment")
    record_progress(page)
    page.fill("#prompt", "a lighthouse at dawn")
    page.click("#run")
    expect(page.locator("#cancel")).to_be_visible()
    page.wait_for_function(
        "() => Number(document.querySelector('#bar').getAttribute('aria-valuenow')) >= 40",
        timeout=RUN_TIMEOUT_MS,
    )
    expect(page.locator("#eta")).to_have_text(
        re.compile(r"^(About \d+ s left|Less than a second left)$")
    )
    screenshot(page, "demo-running.png")
    expect(page.locator("#output")).to_have_attribute("data-status", "done", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#result-image")).to_be_visible()
    assert natural_width(page, "#result-image") == 512

    values = progress_values(page)
    assert values == sorted(values), "the bar went backwards"
    rises = sum(1 for a, b in itertools.pairwise(values) if b > a)
    assert rises >= 2, values
    assert values[-1] == 100
    assert max(v for v in values if v != 100) <= 99
    expect(page.locator("#status")).to_contain_text("Done in")
    expect(page.locator("#meta-text")).to_contain_text("PNG · 512\u00d7512")
    expect(page.locator("#log-count")).to_have_text(re.compile(r"^\d+ events$"))
    assert page.locator("#events li").count() >= 5
    expect(page.locator("#events li").last).to_contain_text("SUCCESS")
    expect(page.locator("#cancel")).to_be_hidden()
    screenshot(page, "demo-desktop.png")


def test_the_page_fits_a_phone(browser: Browser, demo_url: str) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(demo_url)
        page.fill("#prompt", "a quiet lake in the mountains")
        page.click("#run")
        expect(page.locator("#output")).to_have_attribute(
            "data-status", "done", timeout=RUN_TIMEOUT_MS
        )
        assert natural_width(page, "#result-image") == 512
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        form = page.locator("#form").bounding_box()
        output = page.locator("#output").bounding_box()
        assert form is not None
        assert output is not None
        assert output["y"] >= form["y"] + form["height"], "form and result should stack"
        screenshot(page, "demo-phone.png")
    finally:
        context.close()


def test_an_uploaded_image_gets_its_edges(page: Page, demo_url: str) -> None:
    page.goto(demo_url)
    page.click("#tabs >> text=Find edges")
    expect(page.locator("#prompt-field")).to_be_hidden()
    expect(page.locator("#run")).to_have_text("Find edges")
    page.set_input_files(
        "#image", {"name": "tiny.png", "mimeType": "image/png", "buffer": png(40, 30)}
    )
    expect(page.locator("#thumb")).to_be_visible()
    expect(page.locator("#drop-text")).to_contain_text("tiny.png")
    page.click("#run")
    expect(page.locator("#output")).to_have_attribute("data-status", "done", timeout=RUN_TIMEOUT_MS)
    assert natural_width(page, "#result-image") == 40
    expect(page.locator("#meta-text")).to_contain_text("40\u00d730")
    screenshot(page, "demo-edges.png")


def test_a_generated_picture_can_be_sent_to_edges(page: Page, demo_url: str) -> None:
    page.goto(demo_url)
    page.fill("#prompt", "neon city in the rain")
    page.click("#run")
    expect(page.locator("#output")).to_have_attribute("data-status", "done", timeout=RUN_TIMEOUT_MS)
    page.click("#tabs >> text=Find edges")
    page.click("#use-result")
    expect(page.locator("#drop-text")).to_contain_text("the last generated picture")
    page.click("#run")
    expect(page.locator("#status")).to_have_text(re.compile("^Done in"), timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#meta-text")).to_contain_text("512\u00d7512")
    screenshot(page, "demo-edges-of-generated.png")


def test_a_refused_prompt_is_explained_in_words(page: Page, demo_url: str) -> None:
    page.goto(demo_url)
    page.fill("#prompt", "x" * 501)
    expect(page.locator("#prompt-counter")).to_have_text("501 / 500")
    page.click("#run")
    expect(page.locator("#error")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#error-title")).to_have_text("The request was refused")
    expect(page.locator("#error-message")).to_have_text(
        "Parameter 'prompt' is longer than 500 characters."
    )
    expect(page.locator("#error-detail")).to_contain_text(
        "code invalid_parameter · HTTP 400 · request "
    )
    expect(page.locator("#output")).to_have_attribute("data-status", "error")
    expect(page.locator("#result-image")).to_be_hidden()
    screenshot(page, "demo-error.png")


def test_missing_input_is_caught_before_any_request(page: Page, demo_url: str) -> None:
    page.goto(demo_url)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.click("#run")
    expect(page.locator("#prompt-error")).to_have_text("Write a prompt first.")
    page.click("#tabs >> text=Find edges")
    page.click("#run")
    expect(page.locator("#image-error")).to_have_text("Choose an image first.")
    assert not [url for url in requests if "/run" in url]
    expect(page.locator("#output")).to_have_attribute("data-status", "idle")


def test_a_run_can_be_cancelled(page: Page, demo_url: str) -> None:
    page.goto(demo_url)
    page.fill("#prompt", "stop me")
    page.click("#run")
    expect(page.locator("#status")).to_have_text("Running", timeout=RUN_TIMEOUT_MS)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("Cancelled")
    expect(page.locator("#placeholder-text")).to_contain_text("stopped on the server too")
    expect(page.locator("#run")).to_be_enabled()


def test_a_dead_upstream_is_explained_in_words(page: Page) -> None:
    port = free_port()
    dead = "http://127.0.0.1:9"
    command = ["-m", "ikproxy", "serve", "--endpoint", dead, "--port", str(port)]
    env = {"IKOMIA_TOKEN": "not-a-real-token", "IKOMIA_URL": dead}
    with running_server(command, ready=r"running at http://", env=env) as server:
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#backend-label")).to_have_text("Ikomia SCALE deployment")
        expect(page.locator("#tabs")).to_be_hidden()  # one task: no tabs
        page.fill("#prompt", "anything")
        page.click("#run")
        expect(page.locator("#error")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#error-title")).to_have_text("The deployment is unavailable")
        expect(page.locator("#error-message")).to_have_text(
            "The deployment could not be reached or answered with an error."
        )
        expect(page.locator("#error-hint")).to_contain_text("Try again in a moment.")
        expect(page.locator("#error-detail")).to_contain_text("code upstream_failed · HTTP 502")
        expect(page.locator("#status")).to_have_text("Failed (HTTP 502)")
        html = page.content()
        assert "not-a-real-token" not in html
        assert "127.0.0.1:9" not in html
        screenshot(page, "serve-dead-upstream.png")
    assert server.returncode is not None


def test_serve_runs_on_a_scale_deployment(page: Page) -> None:
    fake_port, port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    fake_command = ["-m", "ikproxy.testing", "--port", str(fake_port), "--token", "t0k3n"]
    command = ["-m", "ikproxy", "serve", "--endpoint", fake, "--port", str(port)]
    env = {"IKOMIA_TOKEN": "t0k3n", "IKOMIA_URL": fake}
    with (
        running_server(fake_command, ready=r"running on http://"),
        running_server(command, ready=r"running at http://", env=env),
    ):
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#run")).to_have_text("Run")
        page.fill("#prompt", "a prompt for the workflow")
        page.set_input_files(
            "#image", {"name": "in.png", "mimeType": "image/png", "buffer": png(30, 20)}
        )
        page.click("#run")
        expect(page.locator("#output")).to_have_attribute(
            "data-status", "done", timeout=RUN_TIMEOUT_MS
        )
        assert natural_width(page, "#result-image") == 30  # the fake workflow echoes its input
        assert "t0k3n" not in page.content()


# -- the example pages (served by the browser tests' app) ------------------------------


@pytest.fixture(scope="module")
def examples_url() -> Iterator[str]:
    port = free_port()
    with running_server(app_command(port), ready=r"Uvicorn running on"):
        yield f"http://127.0.0.1:{port}"


def test_the_shared_example_page_runs_and_sends_the_key(page: Page, examples_url: str) -> None:
    page.goto(f"{examples_url}/shared/")
    record_progress(page)
    headers: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            headers.append(request.headers.get("authorization"))
            if "/api/run" in request.url
            else None
        ),
    )
    page.fill("#prompt", "a lighthouse")
    page.click("#key-details summary")
    page.fill("#key", "wrong")
    page.click("#run")
    expect(page.locator("#error")).to_contain_text(
        "This server needs an API key", timeout=RUN_TIMEOUT_MS
    )
    expect(page.locator("#error")).to_contain_text("Invalid API key.")

    page.fill("#key", TEST_KEY)
    page.click("#run")
    expect(page.locator("#run")).to_contain_text("Generating", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#image")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert natural_width(page, "#image") == 512
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#run")).to_have_text("Generate")
    assert headers == ["Bearer wrong", f"Bearer {TEST_KEY}"]
    values = progress_values(page)
    assert values == sorted(values)
    assert sum(1 for a, b in itertools.pairwise(values) if b > a) >= 2
    screenshot(page, "shared-example.png")


def test_the_plain_frontend_example_runs(page: Page, examples_url: str) -> None:
    page.goto(f"{examples_url}/plain/")
    page.fill("ikproxy-run textarea", "a quiet lake")
    page.click("ikproxy-run button")
    expect(page.locator("ikproxy-run button")).to_contain_text("Generating…")
    expect(page.locator("ikproxy-run img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert natural_width(page, "ikproxy-run img") == 512
    screenshot(page, "plain-example.png")
