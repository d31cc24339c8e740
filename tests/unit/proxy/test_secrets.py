"""No byte of any response carries the token, a JWT, the endpoint URL or a traceback.

The mountable app runs on a real SCALE client against the fake SCALE server,
driven into every failure mode; every status line, header and body byte is
scanned for the secrets.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import Client, StreamError
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.testing import FakeScale

TOKEN = "sk-live-0123456789abcdef"
ENDPOINT = "http://xyz-secret-endpoint.scale.test"


def _app(fake: FakeScale, **options: Any) -> Starlette:
    client = Client(
        ENDPOINT,
        token=TOKEN,
        api_url=ENDPOINT,
        transport=fake.transport(),
        retry_backoff=0.01,
        max_retries=1,
    )
    options.setdefault("parameters", {"prompt": str})
    options.setdefault("rate_limit", None)
    return Starlette(routes=[Mount("/api", app=create_app(client, **options))])


Setup = Callable[[FakeScale], None]

FAILURES: dict[str, Setup] = {
    "success": lambda fake: None,
    "workflow fails at submission (520)": lambda fake: fake.fail(
        "run", 520, {"message": f"crash at {ENDPOINT} with {TOKEN}"}
    ),
    "workflow fails while polling (520)": lambda fake: fake.fail(
        "poll", 520, {"message": f"Traceback (most recent call last): {TOKEN}"}
    ),
    "token refused (401 at the exchange)": lambda fake: fake.fail("jwt", 401),
    "token forbidden (403 at the exchange)": lambda fake: fake.fail("jwt", 403),
    "JWT expired and renewal refused": lambda fake: (fake.expire_jwts(), fake.fail("jwt", 401)),
    "server error at submission (500)": lambda fake: fake.fail("run", 500),
    "gateway errors while polling (503)": lambda fake: fake.fail("poll", 503, times=5),
    "connection dropped at submission": lambda fake: fake.drop("run"),
    "connection dropped while polling": lambda fake: fake.drop("poll", times=5),
    "workflow fetch fails (500)": lambda fake: fake.fail("workflow", 500),
    "a bad parameter refused upstream (400)": lambda fake: fake.fail("run", 400),
}


@pytest.fixture(params=list(FAILURES), ids=list(FAILURES))
def scanned(request: pytest.FixtureRequest) -> Iterator[tuple[FakeScale, list[bytes]]]:
    fake = FakeScale(token=TOKEN, polls_before_done=2, next_poll_in=1)
    FAILURES[request.param](fake)
    seen: list[bytes] = []
    yield fake, seen
    jwts = {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in fake.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }
    everything = b"\n".join(seen)
    for secret in {TOKEN, ENDPOINT, "xyz-secret-endpoint", *jwts}:
        assert secret.encode() not in everything, f"leaked {secret[:10]}..."
    assert b"Traceback" not in everything
    assert b'File "' not in everything


def _record(seen: list[bytes], response: Any) -> None:
    seen.append(f"{response.status_code} {response.reason_phrase}".encode())
    seen.extend(f"{k}: {v}".encode() for k, v in response.headers.items())
    seen.append(response.content)


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_no_secret_in_any_response(scanned: tuple[FakeScale, list[bytes]], fmt: str) -> None:
    fake, seen = scanned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(_app(fake))
    with client:
        response = client.get("/api/run", params={"prompt": "x", "format": fmt})
        _record(seen, response)
        # Every response is either a JSON error or a stream ending in a terminal event.
        if response.status_code == 200:
            with contextlib.suppress(StreamError):  # an error event is a proper ending too
                process_readable_stream_sync([response.content])
        else:
            assert set(response.json()) == {"error"}
        _record(seen, client.get("/api/health"))
        _record(seen, client.get("/api/nope"))


def test_a_run_timeout_leaks_nothing() -> None:
    fake = FakeScale(token=TOKEN, polls_before_done=1000, next_poll_in=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(_app(fake, timeout=0.3))
    with client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert response.status_code == 200
    assert b'"code":"timeout"' in response.content
    for secret in (TOKEN, ENDPOINT):
        assert secret.encode() not in response.content
