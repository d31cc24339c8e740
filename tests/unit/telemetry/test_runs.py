"""Every way a run ends, as OpenTelemetry and the run-end hook see it.

Each test gives its proxy its own `Telemetry` on the SDK's in-memory span
exporter and metric reader (`tests.support.telemetry`), and checks the run's
span, the metrics, and the `RunSummary` handed to `on_run_end`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import Progress
from ikproxy.asgi import create_app
from ikproxy.errors import AuthenticationFailed, WorkflowFailed
from ikproxy.policy import AccessDenied, Param, TokenBucket
from ikproxy.proxy.stream import RunStream, StreamOptions
from ikproxy.runs.ownership import Takeover
from ikproxy.stores import MemoryStore
from ikproxy.telemetry import RunObserver, RunSummary
from tests.support.deployments import ScriptedDeployment, default_script
from tests.support.servers import serving
from tests.support.telemetry import Recorder


class Ends:
    """An `on_run_end` hook that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, RunSummary]] = []
        self.changed = threading.Condition()

    def __call__(self, request: Any, summary: RunSummary) -> None:
        with self.changed:
            self.calls.append((request, summary))
            self.changed.notify_all()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[RunSummary]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
        return [summary for _, summary in self.calls]


def _client(deployment: Any, recorder: Recorder, **options: Any) -> TestClient:
    options.setdefault("parameters", {"prompt": Param(str, required=True, max_length=20)})
    options.setdefault("rate_limit", None)
    options.setdefault("task", "paint")
    app = create_app(deployment, telemetry=recorder.telemetry, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(Starlette(routes=[Mount("/api", app=app)]))


def _one_span(recorder: Recorder) -> Any:
    spans = recorder.spans()
    assert len(spans) == 1, spans
    return spans[0]


def test_a_result_is_a_span_metrics_and_one_summary() -> None:
    recorder, ends = Recorder(), Ends()
    with _client(ScriptedDeployment(), recorder, on_run_end=ends) as client:
        response = client.get("/api/run", params={"prompt": "a cat"}, headers={"x-client": "k"})
    assert response.status_code == 200
    [summary] = ends.wait()
    assert summary.outcome == "result"
    assert (summary.task, summary.events, summary.upstream_run_id) == ("paint", 3, "u-1")
    assert summary.bytes == len(response.content)
    assert summary.request_id == response.headers["x-request-id"]
    assert not summary.resumed
    assert not summary.taken_over
    assert summary.caller_key == "testclient"  # the rate limit's key: the client's address
    assert 0 <= summary.duration == pytest.approx(summary.ended_at - summary.started_at, abs=1e-4)
    span = _one_span(recorder)
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "ikproxy.task": "paint",
        "ikproxy.deployment": "ScriptedDeployment",
        "ikproxy.run_id": "u-1",
        "ikproxy.outcome": "result",
        "ikproxy.events": 3,
        "ikproxy.resumed": False,
    }
    assert span.status.status_code is not StatusCode.ERROR
    assert recorder.total("ikproxy.runs", outcome="result", task="paint") == 1
    assert recorder.total("ikproxy.runs.active") == 0
    assert recorder.total("ikproxy.events.sent") == 3
    assert recorder.total("ikproxy.bytes.sent") == len(response.content)
    assert recorder.total("ikproxy.run.duration") == 1
    assert recorder.total("ikproxy.run.time_to_first_event") == 1
    assert recorder.total("ikproxy.requests.refused") == 0


def test_durations_use_buckets_made_for_seconds() -> None:
    recorder = Recorder()
    with _client(ScriptedDeployment(), recorder) as client:
        client.get("/api/run", params={"prompt": "a cat"})
    [point] = recorder.histogram("ikproxy.run.duration")
    assert 0.05 in point.explicit_bounds
    assert max(point.explicit_bounds) >= 300


def _authorize(request: Any) -> None:
    if request.headers.get("authorization") == "Bearer ?":
        raise AccessDenied(401, "key required")
    if request.headers.get("authorization") == "Bearer no":
        raise AccessDenied(403, "not you")


@pytest.mark.parametrize(
    ("request_kwargs", "code", "status"),
    [
        ({"params": {}}, "invalid_parameter", 400),
        ({"params": {"prompt": "x", "seed": "1"}}, "invalid_parameter", 400),
        (
            {"params": {"prompt": "x"}, "headers": {"authorization": "Bearer ?"}},
            "unauthenticated",
            401,
        ),
        ({"params": {"prompt": "x"}, "headers": {"authorization": "Bearer no"}}, "forbidden", 403),
        ({"params": {"prompt": "x", "format": "xml"}}, "invalid_parameter", 400),
    ],
)
def test_each_refusal_is_counted_by_code_and_ends_its_span_in_error(
    request_kwargs: dict[str, Any], code: str, status: int
) -> None:
    recorder, ends = Recorder(), Ends()
    with _client(ScriptedDeployment(), recorder, authorize=_authorize, on_run_end=ends) as client:
        response = client.get("/api/run", **request_kwargs)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert recorder.points("ikproxy.requests.refused") == {frozenset({("code", code)}): 1}
    span = _one_span(recorder)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["ikproxy.outcome"] == code
    assert recorder.total("ikproxy.runs") == 0
    assert ends.calls == []  # no run started


def test_rate_limits_too_large_bodies_and_unknown_paths_are_refusals() -> None:
    recorder = Recorder()
    with _client(
        ScriptedDeployment(), recorder, rate_limit=TokenBucket(rate=0.001, burst=1),
        max_upload_bytes=10,
    ) as client:  # fmt: skip
        assert client.post("/api/run", json={"prompt": "a" * 50}).status_code == 413
        # A refusal costs no token: the one accepted run takes the bucket's only token.
        assert client.get("/api/run", params={"prompt": "x"}).status_code == 200
        assert client.get("/api/run", params={"prompt": "x"}).status_code == 429
        assert client.get("/api/nowhere").status_code == 404
    assert recorder.points("ikproxy.requests.refused") == {
        frozenset({("code", "payload_too_large")}): 1,
        frozenset({("code", "rate_limited")}): 1,
        frozenset({("code", "not_found")}): 1,
    }


def test_a_submission_the_upstream_refuses_is_a_refusal_and_an_upstream_error() -> None:
    recorder, ends = Recorder(), Ends()
    deployment = ScriptedDeployment(refuse=AuthenticationFailed("401 from the upstream"))
    with _client(deployment, recorder, on_run_end=ends) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert response.status_code == 502
    assert recorder.points("ikproxy.upstream.errors") == {frozenset({("code", "unauthorized")}): 1}
    assert recorder.total("ikproxy.requests.refused", code="unauthorized") == 1
    assert ends.calls == []


def test_an_upstream_failure_mid_stream_is_its_code() -> None:
    recorder, ends = Recorder(), Ends()
    script: list[Any] = [*default_script()[:2], WorkflowFailed("boom at http://secret")]
    with _client(ScriptedDeployment(script), recorder, on_run_end=ends) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    assert b"event: error" in response.content
    [summary] = ends.wait()
    assert (summary.outcome, summary.events) == ("workflow_failed", 3)
    assert recorder.total("ikproxy.runs", outcome="workflow_failed") == 1
    assert recorder.total("ikproxy.upstream.errors", code="workflow_failed") == 1
    span = _one_span(recorder)
    assert span.status.status_code is StatusCode.ERROR
    assert recorder.total("ikproxy.runs.active") == 0


def test_a_timeout_is_its_code() -> None:
    recorder, ends = Recorder(), Ends()
    deployment = ScriptedDeployment(hold=True)
    with _client(deployment, recorder, timeout=0.3, on_run_end=ends) as client:
        response = client.get("/api/run", params={"prompt": "x"})
    deployment.release.set()
    assert b'"code":"timeout"' in response.content
    [summary] = ends.wait()
    assert summary.outcome == "timeout"
    assert recorder.total("ikproxy.runs", outcome="timeout") == 1


# -- the stream itself: a client that leaves, a run cancelled ----------------------------


async def _endless() -> AsyncIterator[Progress]:
    yield Progress("PENDING", uuid="u-9")
    while True:
        await anyio.sleep(0.01)
        yield Progress("STARTED", uuid="u-9")


def _observed(recorder: Recorder, ends: Ends) -> StreamOptions:
    observer = RunObserver(recorder.telemetry, "req-1", task="t", on_end=ends)
    return StreamOptions(request_id="req-1", observer=observer)


@pytest.mark.anyio
async def test_a_client_that_leaves_is_disconnected_on_the_write_path() -> None:
    recorder, ends = Recorder(), Ends()
    written: list[bytes] = []

    async def write(chunk: bytes) -> None:
        if len(written) == 3:
            raise OSError("the client left")
        written.append(chunk)

    stream = RunStream(_endless(), _observed(recorder, ends))
    with pytest.raises(OSError, match="left"):
        await stream.send_to(write)
    [summary] = await anyio.to_thread.run_sync(ends.wait)
    assert summary.outcome == "disconnected"
    assert summary.bytes == sum(map(len, written))
    assert summary.upstream_run_id == "u-9"
    assert recorder.total("ikproxy.runs", outcome="disconnected") == 1
    assert recorder.total("ikproxy.runs.active") == 0
    assert _one_span(recorder).status.status_code is not StatusCode.ERROR


@pytest.mark.anyio
async def test_a_client_that_leaves_is_disconnected_on_the_iterator_path() -> None:
    recorder, ends = Recorder(), Ends()
    stream = RunStream(_endless(), _observed(recorder, ends))
    seen = [await stream.__anext__() for _ in range(3)]
    await stream.aclose()
    [summary] = await anyio.to_thread.run_sync(ends.wait)
    assert summary.outcome == "disconnected"
    assert summary.bytes == sum(map(len, seen))


@pytest.mark.anyio
async def test_a_stream_closed_before_it_started_is_disconnected() -> None:
    recorder, ends = Recorder(), Ends()
    stream = RunStream(_endless(), _observed(recorder, ends))
    await stream.aclose()  # the server gave up on the response before sending it
    [summary] = await anyio.to_thread.run_sync(ends.wait)
    assert (summary.outcome, summary.events, summary.bytes) == ("disconnected", 0, 0)
    assert recorder.total("ikproxy.runs.active") == 0


@pytest.mark.anyio
async def test_a_stream_cancelled_by_its_server_is_disconnected() -> None:
    recorder, ends = Recorder(), Ends()
    stream = RunStream(_endless(), _observed(recorder, ends))
    started = anyio.Event()

    async def write(chunk: bytes) -> None:
        started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream.send_to, write)
        await started.wait()
        tg.cancel_scope.cancel()
    [summary] = await anyio.to_thread.run_sync(ends.wait)
    assert summary.outcome == "disconnected"


@pytest.mark.anyio
async def test_an_upstream_cancelled_on_its_own_is_cancelled() -> None:
    recorder, ends = Recorder(), Ends()

    async def cancelled() -> AsyncIterator[Progress]:
        yield Progress("PENDING")
        raise asyncio.CancelledError  # e.g. a local task cancelled by its own code

    async def write(chunk: bytes) -> None:
        pass

    stream = RunStream(cancelled(), _observed(recorder, ends))
    task = asyncio.get_running_loop().create_task(stream.send_to(write))
    with pytest.raises(asyncio.CancelledError):
        await task
    [summary] = await anyio.to_thread.run_sync(ends.wait)
    # Python 3.10 cannot tell a task cancelled from outside from one cancelled within.
    assert summary.outcome == ("cancelled" if sys.version_info >= (3, 11) else "disconnected")
    assert recorder.total("ikproxy.runs", outcome=summary.outcome) == 1


# -- resumes and takeovers -----------------------------------------------------------------


def test_a_resumed_run_reports_each_stream_and_counts_the_resume() -> None:
    recorder, ends = Recorder(), Ends()
    deployment = ScriptedDeployment(hold=True)
    app = create_app(
        deployment, telemetry=recorder.telemetry, parameters={"prompt": str}, rate_limit=None,
        resume_window=30, on_run_end=ends,
    )  # fmt: skip
    # A real server: the stream is read while its run is held (see `serving`).
    with serving(Starlette(routes=[Mount("/api", app=app)])) as client:
        with client.stream("GET", "/api/run", params={"prompt": "x"}) as response:
            first = b""
            for chunk in response.iter_bytes():
                first += chunk
                if b"\nid: " in first and first.endswith(b"\n\n"):
                    break
        last_id = first.split(b"id: ")[-1].split(b"\n")[0].decode()
        [dropped] = ends.wait(1)  # the server saw its client leave while the run was held
        deployment.release.set()
        resumed = client.get("/api/run", headers={"last-event-id": last_id})
        gone = client.get("/api/run", headers={"last-event-id": "nope:1"})
    assert b"event: result" in resumed.content
    assert gone.status_code == 410
    assert (dropped.outcome, dropped.resumed) == ("disconnected", False)
    first_end, second_end = sorted(ends.wait(2), key=lambda s: s.resumed)
    assert first_end is dropped
    assert (second_end.outcome, second_end.resumed) == ("result", True)
    assert recorder.points("ikproxy.resumes") == {
        frozenset({("outcome", "resumed")}): 1,
        frozenset({("outcome", "expired")}): 1,
    }
    assert recorder.total("ikproxy.requests.refused", code="resume_expired") == 1
    resumed_spans = [s for s in recorder.spans() if (s.attributes or {}).get("ikproxy.resumed")]
    assert len(resumed_spans) == 1


class _Adoptions:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def attach(self, uuid: str) -> AsyncIterator[Progress]:
        return _endless()

    def adopt(self, token: str, *args: Any) -> None:
        self.calls.append(token)


@pytest.mark.anyio
@pytest.mark.parametrize(("uuid", "outcome"), [("up-1", "taken_over"), (None, "lost")])
async def test_a_takeover_and_a_lost_run_are_counted(uuid: str | None, outcome: str) -> None:
    recorder, store, spy = Recorder(), MemoryStore(), _Adoptions()
    await store.create_run("tok", {"request_id": "r"}, ttl=30.0)
    await store.append_events("tok", 1, [{"state": "STARTED", "uuid": uuid}], ttl=30.0)
    takeover = Takeover(
        store, "b", attach=spy.attach, adopt=spy.adopt, ttl=30, grace=0,
        telemetry=recorder.telemetry,
    )  # fmt: skip
    info = await store.run_info("tok")
    assert info is not None
    assert await takeover.check("tok", info) is (outcome == "taken_over")
    assert recorder.points("ikproxy.resumes") == {frozenset({("outcome", outcome)}): 1}


# -- the hook --------------------------------------------------------------------------------


class _Logged(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.seen.set()


def test_a_hook_that_fails_is_logged_and_never_reaches_the_client() -> None:
    recorder, logged = Recorder(), _Logged()

    def hook(request: Any, summary: RunSummary) -> None:
        raise RuntimeError("billing is down")

    logger = logging.getLogger("ikproxy")
    logger.addHandler(logged)
    try:
        with _client(ScriptedDeployment(), recorder, on_run_end=hook) as client:
            response = client.get("/api/run", params={"prompt": "x"})
            assert logged.seen.wait(5)
    finally:
        logger.removeHandler(logged)
    assert b"event: result" in response.content
    assert b"billing" not in response.content
    [record] = logged.records
    assert record.getMessage().startswith("the on_run_end hook failed")
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]


def test_a_slow_async_hook_never_delays_the_stream_and_gets_the_native_request() -> None:
    recorder, release, got = Recorder(), threading.Event(), []

    async def hook(request: Any, summary: RunSummary) -> None:
        got.append(request)
        await anyio.to_thread.run_sync(release.wait, 10)

    with _client(ScriptedDeployment(), recorder, on_run_end=hook) as client:
        start = time.monotonic()
        response = client.get("/api/run", params={"prompt": "x"})
        elapsed = time.monotonic() - start
        release.set()
    assert b"event: result" in response.content
    assert elapsed < 5
    assert type(got[0]).__name__ == "Request"  # Starlette's own request, as other hooks get


def test_the_log_records_carry_the_request_and_run_ids(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    script: list[Any] = [*default_script()[:2], WorkflowFailed("boom")]
    with (
        caplog.at_level("ERROR", logger="ikproxy"),
        _client(ScriptedDeployment(script), recorder) as client,
    ):
        response = client.get("/api/run", params={"prompt": "x"})
    [record] = [r for r in caplog.records if r.getMessage().startswith("run failed")]
    assert record.request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    assert record.run_id == "u-1"  # type: ignore[attr-defined]
