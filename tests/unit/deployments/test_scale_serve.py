"""`ikproxy.Client` over real loopback HTTP, and the blocking `SyncClient` from plain threads."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from ikproxy import (
    ImageIO,
    InvalidParameter,
    Progress,
    Results,
    UpstreamConnectionError,
    UpstreamTimeout,
    WorkflowFailed,
)
from ikproxy.deployments.scale import Client, SyncClient
from ikproxy.testing import TINY_PNG, FakeScale

TOKEN = "fake-token"
IMAGE = ImageIO(TINY_PNG)


def no_wait(n: int) -> float:
    return 0.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def in_thread(work: Callable[[], Any]) -> Any:
    """Run `work` in a plain thread (no event loop anywhere in it); its result or exception."""
    outcome: dict[str, Any] = {}

    def main() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ikproxy-sync-client"]


# -- Client over loopback ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_run_over_loopback() -> None:
    fake = FakeScale(polls_before_done=1)
    with fake.serve() as url:
        async with Client(url, TOKEN, api_url=url, poll_schedule=no_wait) as client:
            items = [p async for p in client.run_stream(IMAGE, parameters={"prompt": "x"})]
    assert [r.kind for r in fake.requests] == ["jwt", "workflow", "run", "poll", "poll"]
    assert fake.requests[0].query == {"endpoint": url, "storage": "true"}
    assert fake.requests[2].json["parameters"][0]["parameters"] == {"prompt": "x"}
    assert [p.state for p in items] == ["PENDING", "PENDING", "SUCCESS"]
    assert items[-1].results == Results(outputs=(IMAGE,), uuid=items[0].uuid)


@pytest.mark.anyio
async def test_a_real_dropped_connection_while_polling_is_retried() -> None:
    fake = FakeScale(polls_before_done=1)
    fake.drop("poll", times=2)
    with fake.serve() as url:
        async with Client(url, TOKEN, api_url=url, retry_backoff=0) as client:
            results = await client.run(IMAGE)
    assert results.outputs == (IMAGE,)
    assert fake.count("poll") == 4


@pytest.mark.anyio
async def test_a_real_dropped_run_request_is_a_connection_error() -> None:
    fake = FakeScale()
    fake.drop("run")
    with fake.serve() as url:
        async with Client(url, TOKEN, api_url=url) as client:
            with pytest.raises(UpstreamConnectionError) as caught:
                await client.run(IMAGE)
    assert str(caught.value).startswith(
        "the run request failed: the connection to the deployment failed ("
    )
    assert fake.count("run") == 1


@pytest.mark.anyio
async def test_a_poll_that_times_out_is_retried_then_reported() -> None:
    fake = FakeScale(next_poll_in=0, next_poll_long=True, long_poll_hold=5)
    with fake.serve() as url:
        client = Client(url, TOKEN, api_url=url, http_timeout=0.2, max_retries=1, retry_backoff=0)
        async with client:
            with pytest.raises(UpstreamTimeout) as caught:
                await client.run(IMAGE)
    assert str(caught.value) == (
        "the poll timed out: the deployment did not answer in time (ReadTimeout)"
    )
    assert caught.value.code == "upstream_failed"
    assert fake.count("poll") == 2


@pytest.mark.anyio
async def test_nothing_listening() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with Client(url, TOKEN, api_url=url) as client:
        with pytest.raises(UpstreamConnectionError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == (
        "the token exchange failed: the connection to the SCALE API failed (ConnectError)"
    )


# -- SyncClient ----------------------------------------------------------------------------


def test_sync_run_from_a_plain_thread() -> None:
    fake = FakeScale(polls_before_done=1)
    with fake.serve() as url:

        def work() -> Results:
            with SyncClient(url, TOKEN, api_url=url, poll_schedule=no_wait) as client:
                return client.run(IMAGE, parameters={"strength": 2})

        results = in_thread(work)
    assert results.outputs == (IMAGE,)
    assert fake.requests[2].json["parameters"][0]["parameters"] == {"strength": "2"}


def test_sync_run_stream_from_a_plain_thread() -> None:
    fake = FakeScale(polls_before_done=2)

    def work() -> list[Progress]:
        with SyncClient("http://endpoint.test", TOKEN, transport=fake.transport()) as client:
            return list(client.run_stream(IMAGE))

    items = in_thread(work)
    assert [p.state for p in items] == ["PENDING", "PENDING", "STARTED", "SUCCESS"]
    assert len({p.run_id for p in items}) == 1
    assert items[-1].results == Results(outputs=(IMAGE,), uuid=items[0].uuid)


def test_one_sync_client_shared_by_threads() -> None:
    fake = FakeScale(polls_before_done=1)
    outcomes: list[Results] = []
    with SyncClient(
        "http://endpoint.test", TOKEN, transport=fake.transport(), poll_schedule=no_wait
    ) as client:
        threads = [
            threading.Thread(target=lambda: outcomes.append(client.run(IMAGE))) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(outcomes) == 4
    assert fake.count("workflow") == 1
    assert fake.count("run") == 4


def test_sync_errors_keep_their_type() -> None:
    fake = FakeScale()
    fake.fail("poll", 520, body={"message": "bad input image"})
    with SyncClient("http://endpoint.test", TOKEN, transport=fake.transport()) as client:
        with pytest.raises(InvalidParameter) as refused:
            client.run(IMAGE, parameters={"nope": 1})
        with pytest.raises(WorkflowFailed) as failed:
            list(client.run_stream(IMAGE))
    assert str(refused.value).startswith("unknown parameter 'nope' for task 'infer_demo'")
    assert str(failed.value) == "bad input image"


def test_closing_the_sync_iterator_stops_polling() -> None:
    fake = FakeScale(next_poll_in=50, polls_before_done=1000)
    with fake.serve() as url, SyncClient(url, TOKEN, api_url=url) as client:
        stream = client.run_stream(IMAGE)
        assert next(stream).state == "PENDING"
        assert next(stream).state == "PENDING"
        stream.close()  # type: ignore[attr-defined]
        polls = fake.count("poll")
        with pytest.raises(TimeoutError):
            fake.wait_for_sync("poll", count=polls + 1, timeout=0.5)
    assert polls == 1


def test_close_stops_the_loop_thread() -> None:
    fake = FakeScale(polls_before_done=0)
    before = loop_threads()
    client = SyncClient("http://endpoint.test", TOKEN, transport=fake.transport())
    assert loop_threads() == before  # started lazily
    client.run(IMAGE)
    (started,) = [t for t in loop_threads() if t not in before]
    assert started.daemon
    client.close()
    assert not started.is_alive()
    client.close()  # idempotent
    with pytest.raises(RuntimeError) as caught:
        client.run(IMAGE)
    assert str(caught.value) == "this client is closed"


def test_a_dropped_sync_client_stops_its_loop_thread() -> None:
    fake = FakeScale(polls_before_done=0)
    before = loop_threads()
    client = SyncClient("http://endpoint.test", TOKEN, transport=fake.transport())
    client.run(IMAGE)
    (started,) = [t for t in loop_threads() if t not in before]
    del client
    gc.collect()
    started.join(10)
    assert not started.is_alive()


def test_a_sync_client_left_open_does_not_hang_the_interpreter() -> None:
    script = textwrap.dedent(
        """
        from ikproxy.deployments.scale import SyncClient
        from ikproxy.testing import TINY_PNG, FakeScale

        fake = FakeScale(polls_before_done=0)
        client = SyncClient("http://endpoint.test", "fake-token", transport=fake.transport())
        print(len(client.run(TINY_PNG).outputs))
        KEEP = client  # never closed, still referenced at exit
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")
