"""`Client.attach(uuid)`: follow a SCALE run submitted elsewhere, against the fake SCALE server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from ikproxy import (
    ImageIO,
    LocalDeployment,
    Progress,
    RunNotFound,
    RunTimeout,
    SyncClient,
    UpstreamHTTPError,
    WorkflowFailed,
)
from ikproxy.deployments import SupportsAttach
from ikproxy.deployments.scale import Client
from ikproxy.testing import TINY_PNG, FakeScale

ENDPOINT = "http://endpoint.test"
API = "http://scale.test"
IMAGE = ImageIO(TINY_PNG)


def make_client(fake: FakeScale, **options: Any) -> Client:
    options = {"retry_backoff": 0.0, "poll_schedule": lambda n: 0.0} | options
    return Client(ENDPOINT, fake.token, api_url=API, transport=fake.transport(), **options)


async def assert_no_more_polls(fake: FakeScale, within: float = 0.3) -> None:
    polls = fake.count("poll")
    with pytest.raises(TimeoutError):
        await fake.wait_for("poll", count=polls + 1, timeout=within)


def test_the_scale_client_can_attach_and_a_local_deployment_cannot() -> None:
    assert isinstance(make_client(FakeScale()), SupportsAttach)
    assert not isinstance(LocalDeployment({"t": lambda: 1}), SupportsAttach)


@pytest.mark.anyio
async def test_a_second_client_attaches_to_a_running_run() -> None:
    fake = FakeScale(polls_before_done=4)
    async with make_client(fake) as submitter, make_client(fake) as watcher:
        stream = submitter.run_stream(IMAGE)
        first = await stream.__anext__()
        assert first.uuid is not None  # the upstream id, from the first progress on
        attached = [p async for p in watcher.attach(first.uuid)]
        rest = [p async for p in stream]
    assert [p.state for p in attached] == ["PENDING", "STARTED", "STARTED", "STARTED", "SUCCESS"]
    assert attached[-1].results is not None
    assert all(p.results is None for p in attached[:-1])
    assert attached[-1].results.get_output(0, expect=ImageIO) == IMAGE
    assert attached[-1].results == rest[-1].results
    # The same run under the same ids, whichever client follows it.
    assert {(p.uuid, p.run_id, p.name) for p in attached + rest} == {
        (first.uuid, first.run_id, "infer_demo")
    }
    # The attaching client polled the submitted run; it never submitted one.
    assert fake.count("run") == 1
    assert [r.path for r in fake.requests if r.kind == "poll"] == [
        f"/api/results/{first.uuid}"
    ] * fake.count("poll")


@pytest.mark.anyio
async def test_attaching_after_the_run_finished_gets_its_results_at_once() -> None:
    fake = FakeScale(polls_before_done=1)
    async with make_client(fake) as submitter, make_client(fake) as watcher:
        results = await submitter.run(IMAGE)
        assert results.uuid is not None
        polls = fake.count("poll")
        attached = [p async for p in watcher.attach(results.uuid)]
    assert len(attached) == 1
    assert attached[0].state == "SUCCESS"
    assert attached[0].results == results
    assert fake.count("poll") == polls + 1


@pytest.mark.anyio
async def test_an_unknown_uuid_raises_run_not_found_from_the_first_item() -> None:
    fake = FakeScale()
    async with make_client(fake) as client:
        stream = client.attach("no-such-run")
        with pytest.raises(RunNotFound) as caught:
            await stream.__anext__()
    assert isinstance(caught.value, UpstreamHTTPError)
    assert caught.value.status_code == 404
    assert caught.value.code == "upstream_failed"
    assert str(caught.value) == "the deployment does not know this run (HTTP 404)"
    assert fake.count("poll") == 1  # a 404 is not retried


@pytest.mark.anyio
async def test_an_empty_uuid_is_refused() -> None:
    async with make_client(FakeScale()) as client:
        with pytest.raises(ValueError, match="uuid must be a non-empty string"):
            await client.attach("").__anext__()


@pytest.mark.anyio
async def test_closing_an_attached_stream_stops_polling() -> None:
    fake = FakeScale(next_poll_in=50, polls_before_done=1000)
    async with make_client(fake) as submitter, make_client(fake) as watcher:
        stream = submitter.run_stream(IMAGE)
        first = await stream.__anext__()
        await stream.aclose()
        assert first.uuid is not None
        attached = watcher.attach(first.uuid)
        await attached.__anext__()
        await attached.__anext__()  # one advised poll later
        await attached.aclose()
        await assert_no_more_polls(fake)
    assert fake.count("poll") == 2


@pytest.mark.anyio
async def test_cancelling_an_attached_stream_stops_polling() -> None:
    fake = FakeScale(next_poll_in=50, polls_before_done=1000)
    async with make_client(fake) as client:
        first = await client.run_stream(IMAGE).__anext__()
        assert first.uuid is not None
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                async for _ in client.attach(first.uuid or ""):
                    pass

            tg.start_soon(follow)
            await fake.wait_for("poll", count=2)
            tg.cancel_scope.cancel()
        await assert_no_more_polls(fake)


@pytest.mark.anyio
async def test_attach_has_the_run_streams_deadline_and_retries() -> None:
    fake = FakeScale(next_poll_in=20, polls_before_done=1000)
    async with make_client(fake) as client:
        first = await client.run_stream(IMAGE).__anext__()
        assert first.uuid is not None
        fake.fail("poll", 503)  # retried, as for run_stream
        with pytest.raises(RunTimeout, match=r"did not finish within 0\.3 s"):
            async for _ in client.attach(first.uuid, timeout=0.3):
                pass
    assert fake.count("poll") > 2


@pytest.mark.anyio
async def test_a_failed_run_raises_workflow_failed_when_attached() -> None:
    fake = FakeScale(polls_before_done=3)
    async with make_client(fake) as client:
        first = await client.run_stream(IMAGE).__anext__()
        assert first.uuid is not None
        fake.fail("poll", 520, times=1)
        with pytest.raises(WorkflowFailed):
            async for _ in client.attach(first.uuid):
                pass


def test_a_sync_client_attaches_to_a_run_on_a_served_fake() -> None:
    fake = FakeScale(polls_before_done=2, next_poll_in=10)
    with (
        fake.serve() as url,
        SyncClient(url, fake.token, api_url=url) as submitter,
        SyncClient(url, fake.token, api_url=url) as watcher,
    ):
        stream = submitter.run_stream(IMAGE)
        first = next(iter(stream))
        assert first.uuid is not None
        attached: list[Progress] = list(watcher.attach(first.uuid))
        closing = watcher.attach(first.uuid)
        next(iter(closing))
        polls = fake.count("poll")
        closing.close()  # type: ignore[attr-defined]
        with pytest.raises(TimeoutError):
            fake.wait_for_sync("poll", count=polls + 1, timeout=0.2)
        with pytest.raises(RunNotFound):
            next(iter(watcher.attach("no-such-run")))
    assert attached[-1].results is not None
    assert attached[-1].results.get_output(0) == IMAGE
    assert {p.run_id for p in attached} == {first.run_id}
