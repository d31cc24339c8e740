"""HTML blocks, loaded in headless Chromium beside the demo's `/api`.

The block is the whole page, served by the demo server (so `/api/ikproxy.js` and
`/api/run` are on its origin). It passes when, once the network is idle, the page threw
no error and logged none, every request it made was answered below 400, a block that
calls `/api/run` got its stream, and every `<img>` holds a loaded image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.docs.blocks import Block
from tests.docs.world import World

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Error, Response

LOAD_TIMEOUT_MS = 20_000


def check_html(world: World, block: Block) -> None:
    url = world.serve_html(block.id.replace("/", "_").replace("#", "-"), block.code)
    world.in_browser(lambda browser: _load(browser, url, block))


def _load(browser: Browser, url: str, block: Block) -> None:
    context = browser.new_context()
    errors: list[str] = []
    answers: list[tuple[int, str]] = []

    def on_error(error: Error) -> None:
        errors.append(f"page error: {error.message}")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            errors.append(f"console error: {message.text}")

    def on_response(response: Response) -> None:
        if not response.url.endswith("/favicon.ico"):
            answers.append((response.status, response.url))

    try:
        page = context.new_page()
        page.on("pageerror", on_error)
        page.on("console", on_console)
        page.on("response", on_response)
        page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
        page.wait_for_load_state("networkidle", timeout=LOAD_TIMEOUT_MS)
        assert not errors, "\n".join(errors)
        failed = [f"{status} {where}" for status, where in answers if status >= 400]
        assert not failed, failed
        if "/api/run" in block.code:
            assert any("/api/run" in where and status == 200 for status, where in answers), answers
        if "<img" in block.code:
            page.wait_for_function(
                "() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)",
                timeout=LOAD_TIMEOUT_MS,
            )
    finally:
        context.close()
