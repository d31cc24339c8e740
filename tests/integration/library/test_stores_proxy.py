"""Two proxy instances sharing one real Redis, in one process: resume, limits and caps hold.

Each instance is its own app on its own event loop with its own `RedisStore`,
as two workers would be; tests/integration/deployments/test_multiprocess.py does the same with real
server processes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ikproxy import Progress, Results, TaskIO
from ikproxy.asgi import create_app
from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.errors import UpstreamError
from ikproxy.policy import TokenBucket
from ikproxy.protocol import parse_position
from ikproxy.stores import RedisStore
from tests.support.deployments import ScriptedDeployment
from tests.support.servers import free_port, serving


def _script() -> list[Progress]:
    results = Results((TaskIO("answer", 42),), uuid="u")
    return [
        Progress("PENDING", run_id="r"),
        Progress("STARTED", run_id="r", fraction=0.3),
        Progress("STARTED", run_id="r", fraction=0.6),
        Progress("SUCCESS", run_id="r", fraction=1.0, results=results),
    ]


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


@contextlib.contextmanager
def _client(deployment: Any, url: str, prefix: str, **options: Any) -> Iterator[httpx.Client]:
    """A client of an instance served for real (the TestClient of Python 3.10 reads a
    whole stream before it answers, so a stream held open would never answer)."""
    options.setdefault("resume_window", 30.0)
    options.setdefault("rate_limit", None)
    options.setdefault("parameters", {"prompt": str})
    store = RedisStore(url, prefix=prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await store.aclose()

    app = Starlette(
        routes=[Mount("/api", app=create_app(deployment, store=store, **options))],
        lifespan=lifespan,
    )
    with serving(app) as client:
        yield client


def _events_until(chunks: Iterator[bytes], count: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    while len(events) < count:
        events += decoder.feed(next(chunks))
    return events


def _sse(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


def test_a_run_started_on_one_instance_resumes_on_another(redis_url: str, prefix: str) -> None:
    deployment = ScriptedDeployment(_script(), hold=True)
    with (
        _client(deployment, redis_url, prefix) as a,
        _client(ScriptedDeployment([]), redis_url, prefix) as b,
    ):
        with a.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            seen = _events_until(response.iter_bytes(), 2)
        token, _ = parse_position(seen[-1].id or "") or ("", 0)
        deployment.release.set()
        resumed = b.get("/api/run", headers={"Last-Event-ID": seen[-1].id or ""})
        replay = b.get("/api/run", params={"format": "ndjson", "last_event_id": f"{token}:0"})
    assert resumed.status_code == 200
    rest = _sse(resumed.content)
    assert [(e.event, e.id) for e in rest] == [("progress", f"{token}:3"), ("result", f"{token}:4")]
    assert json.loads(rest[-1].data)["results"]["outputs"] == [{"answer": 42}]
    lines = [json.loads(line) for line in replay.content.splitlines()]
    assert [(line["type"], line["id"]) for line in lines] == [
        ("progress", f"{token}:1"),
        ("progress", f"{token}:2"),
        ("progress", f"{token}:3"),
        ("result", f"{token}:4"),
    ]


def test_a_failed_run_replays_its_error_on_another_instance(redis_url: str, prefix: str) -> None:
    deployment = ScriptedDeployment([Progress("PENDING"), UpstreamError("boom")])
    with (
        _client(deployment, redis_url, prefix) as a,
        _client(ScriptedDeployment([]), redis_url, prefix) as b,
    ):
        first = _sse(a.get("/api/run", params={"prompt": "x"}).content)
        assert [e.event for e in first] == ["progress", "error"]
        again = _sse(b.get("/api/run", headers={"Last-Event-ID": first[0].id or ""}).content)
    assert [(e.event, e.id) for e in again] == [("error", first[1].id)]
    assert json.loads(again[0].data)["code"] == "upstream_failed"


def test_an_unknown_run_is_gone_on_every_instance(redis_url: str, prefix: str) -> None:
    with _client(ScriptedDeployment([]), redis_url, prefix) as b:
        gone = b.get("/api/run", headers={"Last-Event-ID": "nosuchrun:3"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resume_expired"


def test_a_follower_on_another_instance_keeps_a_run_alive(redis_url: str, prefix: str) -> None:
    deployment = ScriptedDeployment(_script(), hold=True)
    window = 0.6
    with (
        _client(deployment, redis_url, prefix, resume_window=window) as a,
        _client(ScriptedDeployment([]), redis_url, prefix, resume_window=window) as b,
    ):
        with a.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            seen = _events_until(response.iter_bytes(), 1)
        headers = {"Last-Event-ID": seen[0].id or ""}
        with b.stream("GET", "/api/run", headers=headers) as followed:
            chunks = followed.iter_bytes()
            more = _events_until(chunks, 1)
            # Three windows pass while the only follower reads from the other instance.
            assert not deployment.closed.wait(timeout=3 * window)
            deployment.release.set()
            rest = _events_until(chunks, 2)
    assert [e.event for e in more + rest] == ["progress", "progress", "result"]


def test_a_run_nobody_follows_anywhere_is_stopped_and_gone(redis_url: str, prefix: str) -> None:
    deployment = ScriptedDeployment(_script(), hold=True)
    with (
        _client(deployment, redis_url, prefix, resume_window=0.3) as a,
        _client(ScriptedDeployment([]), redis_url, prefix, resume_window=0.3) as b,
    ):
        with a.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            seen = _events_until(response.iter_bytes(), 1)
        assert deployment.closed.wait(timeout=5), "the abandoned run was not stopped"
        deployment.release.set()
        gone = b.get("/api/run", headers={"Last-Event-ID": seen[0].id or ""})
    assert gone.status_code == 410


def test_the_rate_limit_holds_across_instances(redis_url: str, prefix: str) -> None:
    bucket = TokenBucket(rate=0.01, burst=5)
    deployment = ScriptedDeployment(_script())
    with (
        _client(deployment, redis_url, prefix, rate_limit=bucket, resume_window=None) as a,
        _client(deployment, redis_url, prefix, rate_limit=bucket, resume_window=None) as b,
    ):
        statuses = [(a, b)[i % 2].get("/api/run", params={"prompt": "x"}) for i in range(20)]
    assert sum(r.status_code == 200 for r in statuses) == 5
    refused = [r for r in statuses if r.status_code != 200]
    assert {r.status_code for r in refused} == {429}
    assert refused[0].json()["error"]["code"] == "rate_limited"
    assert int(refused[0].headers["retry-after"]) >= 1


def test_max_active_runs_holds_across_instances(redis_url: str, prefix: str) -> None:
    held = [ScriptedDeployment(_script(), hold=True) for _ in range(2)]
    runs = iter([*held, ScriptedDeployment(_script())])

    class Next:
        def run_stream(self, *args: Any, **kwargs: Any) -> Any:
            return next(runs).run_stream(*args, **kwargs)

    options: dict[str, Any] = {"max_active_runs": 2, "resume_window": None}
    with (
        _client(Next(), redis_url, prefix, **options) as a,
        _client(Next(), redis_url, prefix, **options) as b,
        a.stream("GET", "/api/run", params={"prompt": "x"}) as one,
        b.stream("GET", "/api/run", params={"prompt": "x"}) as two,
    ):
        # Both iterators are kept: a dropped one closes its connection, ending its run.
        one_chunks, two_chunks = one.iter_bytes(), two.iter_bytes()
        _events_until(one_chunks, 1)
        _events_until(two_chunks, 1)
        third = a.get("/api/run", params={"prompt": "x"})
        fourth = b.get("/api/run", params={"prompt": "x"})
        held[0].release.set()
        assert _events_until(one_chunks, 3)[-1].event == "result"
        assert held[0].closed.wait(timeout=5)
        after = b.get("/api/run", params={"prompt": "x"})
        held[1].release.set()
    for refused in (third, fourth):
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_runs"
        assert int(refused.headers["retry-after"]) >= 1
    assert after.status_code == 200
    assert _sse(after.content)[-1].event == "result"


def test_an_unreachable_store_gives_503_promptly(prefix: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    bucket = TokenBucket(rate=1, burst=5)
    with _client(ScriptedDeployment(_script()), url, prefix, rate_limit=bucket) as client:
        started = time.monotonic()
        refused = client.get("/api/run", params={"prompt": "x"})
        resumed = client.get("/api/run", headers={"Last-Event-ID": "abc:1"})
        elapsed = time.monotonic() - started
    for response in (refused, resumed):
        assert response.status_code == 503
        body = response.json()["error"]
        assert body["code"] == "store_unavailable"
        assert body["message"] == "The shared store could not be reached; try again shortly."
        assert response.headers["retry-after"] == "1"
    assert elapsed < 5


def test_a_new_resumable_run_needs_the_store(prefix: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    deployment = ScriptedDeployment(_script())
    with _client(deployment, url, prefix) as client:
        refused = client.get("/api/run", params={"prompt": "x"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert deployment.calls == [], "the run was submitted although it could not be logged"


def test_max_active_runs_in_one_process_without_a_store() -> None:
    held = ScriptedDeployment(_script(), hold=True)
    runs = iter([held, ScriptedDeployment(_script())])

    class Next:
        def run_stream(self, *args: Any, **kwargs: Any) -> Any:
            return next(runs).run_stream(*args, **kwargs)

    app = Starlette(
        routes=[Mount("/api", app=create_app(Next(), max_active_runs=1, rate_limit=None))]
    )
    with serving(app) as client, client.stream("GET", "/api/run") as one:
        chunks = one.iter_bytes()
        _events_until(chunks, 1)
        refused = client.get("/api/run")
        held.release.set()
        assert _events_until(chunks, 3)[-1].event == "result"
        after = client.get("/api/run")
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "code": "too_many_runs",
        "message": "too many active runs (at most 1): retry in 5 s",
        "request_id": refused.headers["x-request-id"],
    }
    assert after.status_code == 200


def test_max_active_runs_must_be_positive() -> None:
    from ikproxy.policy import Policy

    with pytest.raises(ValueError, match=r"`max_active_runs`: must be at least 1, not 0$"):
        Policy(max_active_runs=0)


def _by_user(request: Any) -> str:
    return str(request.headers.get("x-user", "anonymous"))


def test_a_stored_run_resumes_for_its_caller_only_on_any_instance(
    redis_url: str, prefix: str
) -> None:
    named = {"rate_limit_key": _by_user}
    with (
        _client(ScriptedDeployment(_script()), redis_url, prefix, **named) as a,
        _client(ScriptedDeployment([]), redis_url, prefix, **named) as b,
    ):
        first = _sse(a.get("/api/run", params={"prompt": "x"}, headers={"X-User": "alice"}).content)
        position = first[0].id or ""
        unknown = b.get(
            "/api/run", headers={"Last-Event-ID": "nosuchrunnosuchrunnosuch:1", "X-User": "bob"}
        )
        by_bob = b.get("/api/run", headers={"Last-Event-ID": position, "X-User": "bob"})
        by_alice = b.get("/api/run", headers={"Last-Event-ID": position, "X-User": "alice"})
    assert [e.event for e in _sse(by_alice.content)][-1] == "result"
    assert by_bob.status_code == unknown.status_code == 410
    assert by_bob.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert by_bob.json()["error"]["code"] == "resume_expired"
