"""Resumable runs: a client that lost its stream picks it up from its Last-Event-ID."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import Progress, Results, TaskIO
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.policy import AccessDenied
from ikproxy.protocol import parse_position
from tests.support.deployments import ScriptedDeployment
from tests.support.servers import serving


def _script() -> list[Progress]:
    results = Results((TaskIO("answer", 42),), uuid="u")
    return [
        Progress("PENDING", run_id="r"),
        Progress("STARTED", run_id="r", fraction=0.3),
        Progress("STARTED", run_id="r", fraction=0.6),
        Progress("SUCCESS", run_id="r", fraction=1.0, results=results),
    ]


def _app(deployment: Any, **options: Any) -> Starlette:
    options.setdefault("resume_window", 30.0)
    options.setdefault("rate_limit", None)
    options.setdefault("parameters", {"prompt": str})
    return Starlette(routes=[Mount("/api", app=create_app(deployment, **options))])


def _client(deployment: Any, **options: Any) -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(_app(deployment, **options))


def _events_until(chunks: Iterator[bytes], count: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    while len(events) < count:
        events += decoder.feed(next(chunks))
    return events


def test_a_dropped_stream_resumes_after_its_last_event_id() -> None:
    deployment = ScriptedDeployment(_script(), hold=True)
    # A real server: the stream is read while its run is held (see `serving`).
    with serving(_app(deployment)) as client:
        with client.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            seen = _events_until(response.iter_bytes(), 2)
        token, number = parse_position(seen[-1].id or "") or ("", 0)
        assert [e.id for e in seen] == [f"{token}:1", f"{token}:2"]
        assert number == 2
        assert len(token) >= 24
        # The run went on without its client; let it finish.
        assert not deployment.closed.is_set()
        deployment.release.set()
        resumed = client.get(
            "/api/run", params={"prompt": "x"}, headers={"Last-Event-ID": seen[-1].id or ""}
        )
    assert resumed.status_code == 200
    decoder = SSEDecoder()
    rest = decoder.feed(resumed.content) + decoder.close()
    assert [(e.event, e.id) for e in rest] == [
        ("progress", f"{token}:3"),
        ("result", f"{token}:4"),
    ]
    states: list[str] = []
    results = process_readable_stream_sync([resumed.content], lambda p: states.append(p.state))
    assert states == ["STARTED", "SUCCESS"]
    assert results.get_output(0, expect=TaskIO).data == 42
    assert len(deployment.calls) == 1  # no second run was started


def test_a_finished_run_can_be_replayed_and_in_ndjson() -> None:
    deployment = ScriptedDeployment(_script())
    with _client(deployment) as client:
        first = client.get("/api/run", params={"prompt": "x", "format": "ndjson"})
        lines = [json.loads(line) for line in first.content.splitlines()]
        token = lines[0]["id"].rpartition(":")[0]
        assert [line["id"] for line in lines] == [f"{token}:{n}" for n in range(1, 5)]
        again = client.get("/api/run", params={"format": "ndjson", "last_event_id": f"{token}:1"})
    replayed = [json.loads(line) for line in again.content.splitlines()]
    assert [line["id"] for line in replayed] == [f"{token}:2", f"{token}:3", f"{token}:4"]
    assert replayed == lines[1:]


def test_an_unknown_token_is_gone_and_a_malformed_id_is_refused() -> None:
    with _client(ScriptedDeployment(_script())) as client:
        gone = client.get("/api/run", headers={"Last-Event-ID": "nosuchrun:3"})
        bad = client.get("/api/run", headers={"Last-Event-ID": "7"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resume_expired"
    assert gone.json()["error"]["message"] == "the run to resume is unknown or has expired"
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "Last-Event-ID is not a resume position"


def test_a_run_nobody_resumes_is_stopped_and_forgotten() -> None:
    deployment = ScriptedDeployment(_script(), hold=True)
    with serving(_app(deployment, resume_window=0.2)) as client:
        with client.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            seen = _events_until(response.iter_bytes(), 1)
        assert deployment.closed.wait(timeout=5), "the abandoned run was not stopped"
        gone = client.get("/api/run", headers={"Last-Event-ID": seen[0].id or ""})
    assert gone.status_code == 410
    deployment.release.set()


def test_resuming_goes_through_authorize() -> None:
    def authorize(request: Any) -> None:
        if request.headers.get("authorization") != "Bearer k":
            raise AccessDenied(401)

    deployment = ScriptedDeployment(_script())
    with _client(deployment, authorize=authorize) as client:
        first = client.get(
            "/api/run", params={"prompt": "x"}, headers={"Authorization": "Bearer k"}
        )
        last_id = SSEDecoder().feed(first.content)[-1].id or ""
        refused = client.get("/api/run", headers={"Last-Event-ID": last_id})
    assert refused.status_code == 401


def test_without_resume_window_last_event_id_is_ignored() -> None:
    deployment = ScriptedDeployment(_script())
    with _client(deployment, resume_window=None) as client:
        response = client.get("/api/run", params={"prompt": "x"}, headers={"Last-Event-ID": "a:1"})
    assert response.status_code == 200
    ids = [e.id for e in SSEDecoder().feed(response.content)]
    assert ids == ["1", "2", "3", "4"]


@pytest.mark.parametrize("text", ["", "abc", "abc:", ":3", "abc:x", "abc:-1"])
def test_parse_position_refuses_what_is_not_a_position(text: str) -> None:
    assert parse_position(text) is None


def test_parse_position() -> None:
    assert parse_position("tok:en:12") == ("tok:en", 12)


def _by_user(request: Any) -> str:
    return str(request.headers.get("x-user", "anonymous"))


def test_a_run_of_a_named_caller_resumes_for_that_caller_only() -> None:
    deployment = ScriptedDeployment(_script())
    with _client(deployment, rate_limit_key=_by_user) as client:
        first = client.get(
            "/api/run", params={"prompt": "x", "format": "ndjson"}, headers={"X-User": "alice"}
        )
        position = json.loads(first.content.splitlines()[0])["id"]
        unknown = client.get(
            "/api/run", headers={"Last-Event-ID": "nosuchrunnosuchrunnosuch:1", "X-User": "bob"}
        )
        by_bob = client.get("/api/run", headers={"Last-Event-ID": position, "X-User": "bob"})
        by_alice = client.get("/api/run", headers={"Last-Event-ID": position, "X-User": "alice"})
    assert by_alice.status_code == 200
    assert "event: result" in by_alice.text
    # Refused exactly as an unknown id is: no oracle.
    assert (by_bob.status_code, by_bob.json()["error"]) == (
        unknown.status_code,
        {**unknown.json()["error"], "request_id": by_bob.json()["error"]["request_id"]},
    )
    assert by_bob.json()["error"]["code"] == "resume_expired"


def test_without_a_caller_key_a_run_resumes_for_whoever_holds_its_id() -> None:
    deployment = ScriptedDeployment(_script())
    with _client(deployment) as client:
        first = client.get(
            "/api/run", params={"prompt": "x", "format": "ndjson"}, headers={"X-User": "alice"}
        )
        position = json.loads(first.content.splitlines()[0])["id"]
        again = client.get("/api/run", headers={"Last-Event-ID": position, "X-User": "bob"})
    assert again.status_code == 200
