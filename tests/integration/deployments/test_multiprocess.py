"""Real server processes of one app sharing one real Redis: runs, limits and caps hold across them.

Two uvicorn processes (A and B) on their own ports; then one uvicorn with
`--workers 2` and one gunicorn `-w 2` (Flask, gthread workers), where the
kernel picks the worker of each connection.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.protocol import parse_position
from tests.support.redis import redis_server
from tests.support.servers import ROOT, free_port, running_server, wait_until_listening


def _env(redis_url: str) -> dict[str, str | None]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    prefix = f"mp{secrets.token_hex(4)}"
    return {"PYTHONPATH": path, "IKPROXY_TEST_REDIS": redis_url, "IKPROXY_TEST_PREFIX": prefix}


@contextmanager
def _uvicorn(env: dict[str, str | None], *extra: str) -> Iterator[str]:
    port = free_port()
    args = ["-m", "uvicorn", "tests.support.store_app:create_app", "--factory", "--port", str(port)]
    ready = "Uvicorn running on"  # the socket is bound; it listens once a worker is up
    with running_server([*args, "--log-level", "info", *extra], ready=ready, env=env):
        url = f"http://127.0.0.1:{port}"
        wait_until_listening(url + "/health")
        yield url


@contextmanager
def _servers(redis_url: str, count: int = 2) -> Iterator[list[str]]:
    env = _env(redis_url)
    with ExitStack() as stack:
        yield [stack.enter_context(_uvicorn(env)) for _ in range(count)]


@pytest.fixture(scope="module")
def servers(redis_url: str) -> Iterator[list[str]]:
    with _servers(redis_url) as urls:
        yield urls


def _client() -> httpx.Client:
    return httpx.Client(timeout=10, headers={"X-Client": secrets.token_hex(6)})


def _read(chunks: Iterator[bytes], decoder: SSEDecoder, count: int) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    while len(events) < count:
        events += [e for e in decoder.feed(next(chunks)) if e.event != "keepalive"]
    return events


def _all(response: httpx.Response) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [e for e in decoder.feed(response.content) + decoder.close() if e.id]


def _numbers(events: list[ServerSentEvent], token: str) -> list[int]:
    positions = [parse_position(e.id or "") for e in events]
    assert all(p is not None and p[0] == token for p in positions)
    return [p[1] for p in positions if p is not None]


def test_a_run_cut_on_a_resumes_on_b_without_gap_or_duplicate(servers: list[str]) -> None:
    a, b = servers
    with _client() as client:
        params = {"events": 20, "pace": 0.02}
        with client.stream("GET", f"{a}/run", params=params) as response:
            assert response.status_code == 200
            seen = _read(response.iter_bytes(), SSEDecoder(), 5)
        token = (parse_position(seen[-1].id or "") or ("", 0))[0]
        resumed = client.get(f"{b}/run", headers={"Last-Event-ID": seen[-1].id or ""})
    assert resumed.status_code == 200
    assert resumed.headers["x-worker-pid"] != response.headers["x-worker-pid"]
    rest = _all(resumed)
    assert _numbers(seen + rest, token) == list(range(1, 22))
    assert [e.event for e in rest] == ["progress"] * 15 + ["result"]
    assert json.loads(rest[-1].data)["results"]["outputs"] == [{"events": 20}]


def test_the_rate_limit_holds_exactly_across_a_and_b(servers: list[str]) -> None:
    with _client() as client:
        statuses = [
            client.get(f"{servers[i % 2]}/run", params={"events": 1}).status_code for i in range(20)
        ]
    assert statuses.count(200) == 5
    assert statuses.count(429) == 15


def test_max_active_runs_holds_exactly_across_a_and_b(servers: list[str], tmp_path: Path) -> None:
    a, b = servers
    gates = [tmp_path / "one", tmp_path / "two"]
    with _client() as client:
        try:
            with (
                client.stream("GET", f"{a}/run", params={"gate": str(gates[0])}) as one,
                client.stream("GET", f"{b}/run", params={"gate": str(gates[1])}) as two,
            ):
                chunks, decoder = one.iter_bytes(), SSEDecoder()
                _read(chunks, decoder, 3)
                _read(two.iter_bytes(), SSEDecoder(), 3)
                refused = [client.get(f"{url}/run", params={"events": 1}) for url in (a, b)]
                gates[0].touch()
                assert _read(chunks, decoder, 1)[-1].event == "result"
                after = client.get(f"{b}/run", params={"events": 1})
        finally:
            gates[1].touch()
    for response in refused:
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "too_many_runs"
        assert int(response.headers["retry-after"]) >= 1
    assert after.status_code == 200
    assert _all(after)[-1].event == "result"


def _read_to_end(chunks: Iterator[bytes], decoder: SSEDecoder) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += [e for e in decoder.feed(chunk) if e.id]
    return events + [e for e in decoder.close() if e.id]


def test_a_redis_restart_mid_run_loses_no_event(tmp_path: Path) -> None:
    port, directory = free_port(), tmp_path / "redis"
    with ExitStack() as first_redis:
        url = first_redis.enter_context(redis_server(directory, port))
        with _servers(url) as (a, b), _client() as client:
            params = {"events": 60, "pace": 0.05}
            with client.stream("GET", f"{a}/run", params=params) as producer:
                chunks, decoder = producer.iter_bytes(), SSEDecoder()
                near = _read(chunks, decoder, 3)
                token = (parse_position(near[-1].id or "") or ("", 0))[0]
                headers = {"Last-Event-ID": near[-1].id or ""}
                with client.stream("GET", f"{b}/run", headers=headers) as follower:
                    far_chunks, far_decoder = follower.iter_bytes(), SSEDecoder()
                    far = _read(far_chunks, far_decoder, 2)
                    # Redis stops (its data is not saved) and starts again on the same port,
                    # while one client reads from the run's producer and one from the store.
                    first_redis.close()
                    with redis_server(directory, port):
                        near += _read_to_end(chunks, decoder)
                        far += _read_to_end(far_chunks, far_decoder)
    assert _numbers(near, token) == list(range(1, 62))
    assert near[-1].event == "result"
    assert _numbers(far, token) == list(range(4, 62))
    assert far[-1].event == "result"


def test_a_follower_elsewhere_ends_with_an_error_when_the_producer_dies(redis_url: str) -> None:
    env = {**_env(redis_url), "IKPROXY_TEST_WINDOW": "1"}
    port = free_port()
    args = ["-m", "uvicorn", "tests.support.store_app:create_app", "--factory", "--port", str(port)]
    with (
        running_server(args, ready="Uvicorn running on", env=env) as producer,
        _uvicorn(env) as b,
        _client() as client,
    ):
        params = {"events": 200, "pace": 0.05}
        with client.stream("GET", f"http://127.0.0.1:{port}/run", params=params) as response:
            seen = _read(response.iter_bytes(), SSEDecoder(), 2)
        headers = {"Last-Event-ID": seen[-1].id or ""}
        with client.stream("GET", f"{b}/run", headers=headers) as follower:
            chunks, decoder = follower.iter_bytes(), SSEDecoder()
            _read(chunks, decoder, 2)
            os.kill(producer.pid, signal.SIGKILL)
            started = time.monotonic()
            rest = _read_to_end(chunks, decoder)
            elapsed = time.monotonic() - started
    # The run's keys expire a window after its last write; the follower gives up a
    # window later: an error event, never a hang.
    assert rest[-1].event == "error"
    assert elapsed < 10


def _cut_and_resume(url: str, client: httpx.Client) -> tuple[bool, bool]:
    """Start a run, cut it after 2 events, resume it on a new connection: (complete, moved)."""
    with client.stream("GET", f"{url}/run", params={"events": 6, "pace": 0.01}) as response:
        seen = _read(response.iter_bytes(), SSEDecoder(), 2)
        started_on = response.headers["x-worker-pid"]
    token = (parse_position(seen[-1].id or "") or ("", 0))[0]
    resumed = client.get(f"{url}/run", headers={"Last-Event-ID": seen[-1].id or ""})
    if resumed.status_code != 200:
        return False, resumed.headers.get("x-worker-pid") != started_on
    events = seen + _all(resumed)
    complete = _numbers(events, token) == list(range(1, 8)) and events[-1].event == "result"
    return complete, resumed.headers["x-worker-pid"] != started_on


def _new_connection_each_time() -> httpx.Client:
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(timeout=10, limits=limits, headers={"X-Client": "many"})


def test_every_resume_succeeds_under_uvicorn_workers(redis_url: str) -> None:
    env = _env(redis_url)
    with _uvicorn(env, "--workers", "2") as url, _new_connection_each_time() as client:
        # A run per test key would hit the rate limit: every run has its own key.
        outcomes = []
        for _ in range(20):
            client.headers["X-Client"] = secrets.token_hex(6)
            outcomes.append(_cut_and_resume(url, client))
    assert [complete for complete, _ in outcomes] == [True] * 20
    print(f"uvicorn --workers 2: {sum(moved for _, moved in outcomes)} of 20 resumes moved")


def test_every_resume_succeeds_under_gunicorn_gthread_workers(redis_url: str) -> None:
    port = free_port()
    args = ["-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8"]
    args += ["-b", f"127.0.0.1:{port}", "tests.support.store_app:flask_app()"]
    with (
        running_server(args, ready="Booting worker", env=_env(redis_url)),
        _new_connection_each_time() as client,
    ):
        outcomes = []
        for _ in range(20):
            client.headers["X-Client"] = secrets.token_hex(6)
            outcomes.append(_cut_and_resume(f"http://127.0.0.1:{port}", client))
    assert [complete for complete, _ in outcomes] == [True] * 20
    print(f"gunicorn -w 2: {sum(moved for _, moved in outcomes)} of 20 resumes moved")
