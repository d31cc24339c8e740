"""Runs on real Celery workers, streamed by real web instances through a real Redis.

One redis-server (the store and the broker), a prefork worker (default queue)
and a threads-pool worker (`threads` queue), and three uvicorn instances of
tests/support/celery_app.py are shared by the module: A and B resumable (a
30 s window, runs of at most 3 s), C not (its clients' leaving cancels their
run; one active run per client). The tests that kill a worker or restart a
broker start their own, on a broker of their own, so that the others keep theirs.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.protocol import parse_position
from ikproxy.runs.ownership import TAKEOVER_BOUND
from tests.support.celery import (
    alive,
    app_env,
    celery_worker,
    children,
    get_accepted,
    wait_for,
    web_instance,
)
from tests.support.redis import redis_server
from tests.support.servers import free_port


@dataclass
class Cluster:
    redis: str
    prefix: str
    markers: Path
    a: str
    b: str
    c: str
    tmp: Path

    def env(self, **more: str | None) -> dict[str, str | None]:
        return app_env(self.redis, self.prefix, self.markers, **more)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("celery")
    markers = tmp / "markers"
    markers.mkdir()
    prefix = f"c{secrets.token_hex(4)}"
    with redis_server(tmp / "redis") as url:
        env = app_env(url, prefix, markers)
        resumable = {**env, "IKPROXY_TEST_WINDOW": "30", "IKPROXY_TEST_TIMEOUT": "3"}
        plain = {**env, "IKPROXY_TEST_WINDOW": "0", "IKPROXY_TEST_MAX_RUNS": "1"}
        with (
            celery_worker(env, tmp / "prefork", concurrency=3),
            celery_worker(env, tmp / "threads", pool="threads", concurrency=4, queues="threads"),
            web_instance(resumable) as a,
            web_instance(resumable) as b,
            web_instance(plain) as c,
        ):
            yield Cluster(url, prefix, markers, a, b, c, tmp)


def _events(response: httpx.Response) -> Iterator[ServerSentEvent]:
    decoder = SSEDecoder()
    for chunk in response.iter_bytes():
        yield from decoder.feed(chunk)


def _all(response: httpx.Response) -> list[ServerSentEvent]:
    return list(_events(response))


def _data(event: ServerSentEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.data)
    return data


# -- runs, progress, resume -------------------------------------------------------------------


@pytest.mark.parametrize("task", ["steps", "steps_t"])
def test_a_run_on_a_worker_streams_on_two_instances_and_resumes_on_the_other(
    cluster: Cluster, task: str
) -> None:
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{cluster.a}/{task}/run", params={"n": 8, "delay": 0.1}) as first,
    ):
        assert first.status_code == 200
        events = _events(first)
        seen = [next(events) for _ in range(3)]
        # The same run followed on the other instance from the client's last event.
        with client.stream(
            "GET", f"{cluster.b}/{task}/run", headers={"Last-Event-ID": seen[-1].id or ""}
        ) as other:
            assert other.status_code == 200
            resumed = _all(other)
        rest = list(events)
    assert [e.id for e in resumed] == [e.id for e in rest]
    assert [e.data for e in resumed] == [e.data for e in rest]
    states = [_data(e)["state"] for e in seen + rest]
    assert states[:2] == ["PENDING", "STARTED"]
    assert rest[-1].event == "result"
    assert all(e.event == "progress" for e in seen + rest[:-1])
    fractions = [_data(e)["fraction"] for e in seen + rest if _data(e)["state"] == "STARTED"]
    assert [f for f in fractions if f is not None] == [(i + 1) / 9 for i in range(8)]
    token, _ = parse_position(seen[0].id or "") or ("", 0)
    assert [parse_position(e.id or "") for e in seen + rest] == [(token, n) for n in range(1, 12)]
    result = _data(rest[-1])
    assert result["results"]["outputs"][0]["text"].startswith("8 steps")
    assert result["run_id"] == _data(seen[0])["run_id"]


def test_the_signature_is_checked_before_the_200(cluster: Cluster) -> None:
    response = httpx.get(f"{cluster.a}/steps/run", params={"bogus": 1}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"] == "The deployment refused the request's parameters."


def test_a_failing_task_ends_with_workflow_failed_and_no_detail(cluster: Cluster) -> None:
    with httpx.stream("GET", f"{cluster.b}/fails/run", params={"n": 7}, timeout=10) as response:
        assert response.status_code == 200
        events = _all(response)
    assert [e.event for e in events] == ["progress", "progress", "error"]
    error = _data(events[-1])
    assert error["code"] == "workflow_failed"
    assert error["message"] == "The workflow failed while processing this request."
    assert "secret" not in events[-1].data


def test_the_deadline_is_enforced_on_the_worker(cluster: Cluster) -> None:
    marker = f"deadline-{secrets.token_hex(4)}"
    start = time.monotonic()
    with httpx.stream(
        "GET", f"{cluster.a}/hold_sync/run", params={"marker": marker}, timeout=10
    ) as response:
        events = _all(response)
    took = time.monotonic() - start
    assert events[-1].event == "error"
    assert _data(events[-1])["code"] == "timeout"
    assert 2.5 < took < 5.0  # the instances' timeout is 3 s
    wait_for((cluster.markers / f"{marker}.finally").exists, 3, "the task stopped")


# -- outputs from any instance ---------------------------------------------------------------


@pytest.mark.parametrize(("size", "where"), [(50_000, "redis"), (300_000, "file")])
def test_outputs_made_on_a_worker_are_served_whole_and_by_range_by_another_instance(
    cluster: Cluster, size: int, where: str
) -> None:
    expected = bytes(i % 251 for i in range(size))
    with httpx.stream("GET", f"{cluster.a}/file/run", params={"size": size}, timeout=10) as run:
        events = _all(run)
    ref = _data(events[-1])["results"]["outputs"][0]["ref"]
    assert ref["size"] == size
    assert ref["content_type"] == "application/octet-stream"
    assert ref["url"].startswith("outputs/")
    url = f"{cluster.b}/file/{ref['url']}"  # B never saw the run
    whole = httpx.get(url, timeout=10)
    assert whole.status_code == 200
    assert whole.content == expected
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-security-policy"] == "default-src 'none'; sandbox"
    part = httpx.get(url, headers={"Range": "bytes=1000-263999"}, timeout=10)
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-{min(size, 264000) - 1}/{size}"
    assert part.content == expected[1000:264000]
    tail = httpx.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert tail.content == expected[-5:]
    outside = httpx.get(url, headers={"Range": f"bytes={size}-"}, timeout=10)
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{size}"
    head = httpx.head(url, timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    files = list((cluster.markers / "outputs").rglob("*")) if where == "file" else []
    assert (where == "file") == any(f.is_file() and f.stat().st_size == size for f in files)
    token = ref["url"].split("/")[1]
    assert httpx.get(f"{cluster.b}/file/outputs/{token}/1", timeout=10).status_code == 404
    assert httpx.get(f"{cluster.b}/file/outputs/x{token}/0", timeout=10).status_code == 404


def test_a_large_image_is_a_reference_and_a_small_one_inline(cluster: Cluster) -> None:
    with httpx.stream("GET", f"{cluster.a}/image/run", params={"size": 700}, timeout=10) as run:
        large = _data(_all(run)[-1])["results"]["outputs"][0]
    with httpx.stream("GET", f"{cluster.a}/image/run", params={"size": 16}, timeout=10) as run:
        small = _data(_all(run)[-1])["results"]["outputs"][0]
    assert large["ref"]["kind"] == "image"
    assert large["ref"]["content_type"] == "image/png"
    png = httpx.get(f"{cluster.b}/image/{large['ref']['url']}", timeout=10).content
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) == large["ref"]["size"]
    assert set(small) == {"image"}


# -- cancel on leave --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "kind"),
    [
        ("hold_async", "async"),
        ("hold_sync", "sync"),
        ("hold_gen", "generator"),
        ("hold_sync_t", "sync"),
    ],
)
def test_a_client_that_leaves_cancels_the_task_on_the_worker(
    cluster: Cluster, task: str, kind: str
) -> None:
    marker = f"{task}-{secrets.token_hex(4)}"
    started = cluster.markers / f"{marker}.started"
    finished = cluster.markers / f"{marker}.finally"
    with httpx.Client(timeout=10) as client:
        response = get_accepted(client, f"{cluster.c}/{task}/run", marker=marker)
        assert response.status_code == 200
        wait_for(started.exists, 10, "the task started")
        assert not finished.exists()
        response.close()
        took = wait_for(finished.exists, 3, "the task's finally ran")
    assert finished.read_text() == kind
    assert took < 2.0


@pytest.mark.anyio
async def test_a_stream_closed_right_after_its_first_event_cancels_the_run(
    cluster: Cluster,
) -> None:
    from celery import Celery

    from ikproxy.deployments.celery import CeleryDeployment
    from ikproxy.stores import RedisStore

    # The web side of the same tasks, in this process: the worker runs its own function.
    store = RedisStore(cluster.redis, prefix=cluster.prefix)
    web = CeleryDeployment(Celery("web", broker=cluster.redis), store=store)

    @web.task
    async def hold_async(*, marker: str = "") -> Any:
        yield 0.1

    marker = f"first-{secrets.token_hex(4)}"
    token = f"t{secrets.token_hex(8)}"
    try:
        await store.create_run(token, {}, ttl=30)
        stream = web.run_logged(token, parameters={"marker": marker}, ttl=30)
        first = await stream.__anext__()
        assert first.state == "PENDING"
        await stream.aclose()  # the client left with the 200
        for _ in range(100):  # the worker dropped the run (started or not): its log is gone
            if await store.run_info(token) is None:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the run was not cancelled within 5 s")
        started = cluster.markers / f"{marker}.started"
        assert not started.exists() or (cluster.markers / f"{marker}.finally").exists()
    finally:
        await store.aclose()


def test_worker_runs_count_in_max_active_runs(cluster: Cluster) -> None:
    marker = f"cap-{secrets.token_hex(4)}"
    with httpx.Client(timeout=10) as client:
        first = get_accepted(client, f"{cluster.c}/hold_async/run", marker=marker)
        assert first.status_code == 200
        refused = client.get(f"{cluster.c}/hold_async/run", params={"marker": "x"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_runs"
        first.close()
        wait_for((cluster.markers / f"{marker}.finally").exists, 3, "the run was cancelled")
        again = get_accepted(client, f"{cluster.c}/steps/run", n=1)
        assert again.status_code == 200
        assert _all(again)[-1].event == "result"


# -- a worker killed, a broker restarted -------------------------------------------------------


def test_a_worker_killed_mid_run_ends_it_for_every_follower_and_frees_the_slot(
    cluster: Cluster,
) -> None:
    broker = cluster.redis.rsplit("/", 1)[0] + "/1"  # a queue of its own: only this worker
    env = cluster.env(broker=broker, window="30", max_runs="1")
    marker = f"killed-{secrets.token_hex(4)}"
    with (
        celery_worker(env, cluster.tmp / "doomed", concurrency=1) as worker,
        web_instance(env) as web,
        httpx.Client(timeout=httpx.Timeout(5.0, read=TAKEOVER_BOUND + 5)) as client,
    ):
        pool = children(worker.pid)
        assert pool
        response = client.send(
            client.build_request("GET", f"{web}/hold_async/run", params={"marker": marker}),
            stream=True,
        )
        assert response.status_code == 200
        events = _events(response)
        seen = [next(events) for _ in range(3)]  # PENDING, STARTED, 0.1
        assert int((cluster.markers / f"{marker}.started").read_text()) in pool
        with client.stream(
            "GET", f"{cluster.a}/hold_async/run", headers={"Last-Event-ID": seen[-1].id or ""}
        ) as elsewhere:
            os.kill(worker.pid, signal.SIGKILL)
            killed = time.monotonic()
            other = _all(elsewhere)
            lost_elsewhere = time.monotonic() - killed
        rest = list(events)
        lost_here = time.monotonic() - killed
        response.close()
        wait_for(lambda: not any(alive(pid) for pid in pool), 10, "the pool children exited")
        for last in (other, rest):
            assert last[-1].event == "error"
            assert _data(last[-1])["code"] == "run_lost"
            assert (parse_position(last[-1].id or "") or ("", 0))[1] == 4  # after the 3 seen
        assert lost_here < TAKEOVER_BOUND + 2
        assert lost_elsewhere < TAKEOVER_BOUND + 2
        # The slot was freed: the next run is accepted (it waits in the queue).
        with client.stream("GET", f"{web}/steps/run", params={"n": 1}) as after:
            assert after.status_code == 200


def test_a_broker_that_is_down_is_a_prompt_503_and_runs_resume_once_it_is_back(
    cluster: Cluster,
) -> None:
    port = free_port()
    env = cluster.env(broker=f"redis://127.0.0.1:{port}/0", window="30")
    with ExitStack() as broker:
        broker.enter_context(redis_server(cluster.tmp / "broker", port))
        with (
            celery_worker(env, cluster.tmp / "reconnecting", concurrency=1),
            web_instance(env) as web,
        ):
            ok = httpx.get(f"{web}/steps/run", params={"n": 1}, timeout=10)
            assert ok.status_code == 200
            assert "event: result" in ok.text
            broker.close()  # the broker stops
            start = time.monotonic()
            refused = httpx.get(f"{web}/steps/run", params={"n": 1}, timeout=10)
            assert time.monotonic() - start < 3.0
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "broker_unavailable"
            assert refused.json()["error"]["message"] == (
                "The task queue could not be reached; try again shortly."
            )
            with redis_server(cluster.tmp / "broker", port):
                # The worker reconnects by itself; the next run completes.
                again = httpx.get(f"{web}/steps/run", params={"n": 2}, timeout=30)
                assert again.status_code == 200
                assert "event: result" in again.text
