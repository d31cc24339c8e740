"""`ikproxy.browser.run` / `run_sync` against a live server: requests, errors, resuming."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from ikproxy import ImageIO, IncompleteStream, StreamError
from ikproxy.browser import run, run_sync
from tests.support.browser import app_command
from tests.support.servers import free_port, running_server


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    with running_server(app_command(port), ready=r"Uvicorn running on"):
        yield f"http://127.0.0.1:{port}"


def test_run_sync_streams_a_run(base_url: str) -> None:
    fractions: list[float] = []
    results = run_sync(
        f"{base_url}/api/run",
        {"prompt": "a lighthouse"},
        on_progress=lambda p: fractions.append(p.fraction or 0.0),
    )
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert results.get_output(0, expect=ImageIO).to_pil().size == (512, 512)


@pytest.mark.anyio
async def test_run_posts_an_image_in_ndjson(base_url: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buffer, format="PNG")
    results = await run(
        f"{base_url}/api/edges/run", image=("white.png", buffer.getvalue()), format="ndjson"
    )
    assert results.get_output(0, expect=ImageIO).to_pil().size == (40, 30)


def test_run_sync_raises_the_servers_refusal(base_url: str) -> None:
    with pytest.raises(StreamError) as caught:
        run_sync(f"{base_url}/api/run", {"prompt": "x" * 501})
    assert (caught.value.status_code, caught.value.code) == (400, "invalid_parameter")


def test_run_sync_resumes_a_cut_resumable_run(base_url: str) -> None:
    states: list[tuple[str, float | None]] = []
    results = run_sync(
        f"{base_url}/resumable/run",
        {"prompt": "a quiet lake"},
        on_progress=lambda p: states.append((p.state, p.fraction)),
    )
    assert states[-1][0] == "SUCCESS"
    assert len(states) == len(set(states))  # nothing delivered twice
    assert results.get_output(0, expect=ImageIO).to_pil().size == (512, 512)


def test_without_resume_a_cut_run_is_incomplete(base_url: str) -> None:
    with pytest.raises(IncompleteStream):
        run_sync(f"{base_url}/resumable/run", {"prompt": "a quiet lake"}, resume=0)


def test_an_unreachable_server_is_a_network_error() -> None:
    with pytest.raises(StreamError) as caught:
        run_sync(f"http://127.0.0.1:{free_port()}/api/run", {"prompt": "x"})
    assert caught.value.code == "network_error"


def _drain(base_url: str) -> None:
    """Spend the caller's resume limit on the test app: its next resume is refused 429."""
    assert httpx.post(f"{base_url}/throttled/drain").status_code == 204


def test_run_sync_waits_out_retry_after_on_a_refused_resume(base_url: str) -> None:
    answers: list[tuple[int, str | None, float]] = []

    def record(response: httpx.Response) -> None:
        given = response.request.headers.get("last-event-id")
        answers.append((response.status_code, given, time.monotonic()))

    _drain(base_url)
    with httpx.Client(event_hooks={"response": [record]}) as http:
        results = run_sync(f"{base_url}/throttled/run", {"prompt": "a lake"}, client=http)
    assert [status for status, _, _ in answers] == [200, 429, 200]
    assert answers[0][1] is None
    assert answers[1][1] == answers[2][1] is not None  # resumed from the same event
    assert answers[2][2] - answers[1][2] >= 0.95  # waited the Retry-After (>= 1 s)
    assert len(results) == 1


@pytest.mark.anyio
async def test_a_retry_after_beyond_the_bound_raises_with_every_field(base_url: str) -> None:
    _drain(base_url)
    with pytest.raises(StreamError) as caught:
        await run(f"{base_url}/throttled/run", {"prompt": "x"}, max_retry_after=0.5)
    error = caught.value
    assert (error.status_code, error.code) == (429, "rate_limited")
    assert error.retry_after is not None
    assert error.retry_after >= 1
    assert error.request_id
