"""`ikproxy.Client` against the fake SCALE server, in process (`FakeScale.transport()`)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from ikproxy import (
    AuthenticationFailed,
    IkproxyError,
    ImageIO,
    InvalidParameter,
    Progress,
    Results,
    RunTimeout,
    TaskIO,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    WorkflowFailed,
)
from ikproxy.__about__ import __version__
from ikproxy.deployments import Deployment
from ikproxy.deployments.scale import Client, ScaleDeployment
from ikproxy.testing import TINY_PNG, FakeScale, default_workflow

pytestmark = pytest.mark.anyio

ENDPOINT = "http://endpoint.test"
API = "http://scale.test"
TOKEN = "fake-token"
IMAGE = ImageIO(TINY_PNG)


def no_wait(n: int) -> float:
    return 0.0


def make_client(fake: FakeScale, **options: Any) -> Client:
    options = {"retry_backoff": 0.0, "poll_schedule": no_wait} | options
    return Client(
        options.pop("url", ENDPOINT),
        options.pop("token", TOKEN),
        api_url=options.pop("api_url", API),
        transport=fake.transport(),
        **options,
    )


def kinds(fake: FakeScale) -> list[str]:
    return [r.kind for r in fake.requests]


async def collect(client: Client, *inputs: Any, **options: Any) -> list[Progress]:
    return [p async for p in client.run_stream(*inputs, **options)]


# -- the exact requests ----------------------------------------------------------


async def test_a_run_speaks_the_protocol_exactly() -> None:
    fake = FakeScale()
    async with make_client(fake) as client:
        results = await client.run(IMAGE, parameters={"strength": 0.5, "prompt": "a cat"})

    assert kinds(fake) == ["jwt", "workflow", "run", "poll", "poll", "poll"]
    jwt, workflow, run, *polls = fake.requests
    user_agent = f"ikproxy/{__version__} (+httpx)"

    assert (jwt.method, jwt.path) == ("GET", "/v1/projects/jwt/")
    assert jwt.query == {"endpoint": ENDPOINT, "storage": "true"}
    assert jwt.headers["authorization"] == "Token fake-token"
    assert jwt.headers["host"] == "scale.test"
    assert jwt.headers["user-agent"] == user_agent

    bearer = workflow.headers["authorization"]
    assert re.fullmatch(r"Bearer fakejwt-\S+", bearer)
    assert (workflow.method, workflow.path, workflow.query) == ("GET", "/workflow", {})
    assert workflow.headers["host"] == "endpoint.test"

    assert (run.method, run.path, run.query) == ("PUT", "/api/run", {"advice": "true"})
    assert run.headers["content-type"] == "application/json"
    assert run.json == {
        "inputs": [{"image": IMAGE.to_base64()}],
        "outputs": [{"task_name": "infer_demo", "task_index": 0}],
        "parameters": [
            {
                "task_name": "infer_demo",
                "task_index": 0,
                "parameters": {"strength": "0.5", "prompt": "a cat"},
            }
        ],
    }
    assert results.uuid is not None
    for poll in polls:
        assert (poll.method, poll.path) == ("GET", f"/api/results/{results.uuid}")
        assert poll.query == {"advice": "true", "long": "false"}
    for request in (workflow, run, *polls):
        assert request.headers["authorization"] == bearer
        assert request.headers["user-agent"] == user_agent
        assert "fake-token" not in str(request.headers)

    assert results == Results(outputs=(IMAGE,), uuid=results.uuid)


async def test_progress_items() -> None:
    fake = FakeScale(polls_before_done=2)
    async with make_client(fake) as client:
        items = await collect(client, IMAGE)
    run_ids = {p.run_id for p in items}
    uuids = {p.uuid for p in items}
    assert len(run_ids) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", run_ids.pop() or "")
    assert len(uuids) == 1
    assert uuids.pop() == items[-1].uuid
    assert [(p.state, p.eta, p.name, p.done) for p in items] == [
        ("PENDING", (3000, 4500), "infer_demo", False),  # the run answer
        ("PENDING", (2000, 3000), "infer_demo", False),
        ("STARTED", (1000, 1500), "infer_demo", False),
        ("SUCCESS", (0, 0), "infer_demo", True),
    ]
    assert items[-1].results == Results(outputs=(IMAGE,), uuid=items[-1].uuid)


async def test_each_run_has_its_own_run_id() -> None:
    fake = FakeScale(polls_before_done=0)
    async with make_client(fake) as client:
        first, second = await collect(client, IMAGE), await collect(client, IMAGE)
    assert first[0].run_id != second[0].run_id
    assert first[0].uuid != second[0].uuid


async def test_without_parameters_the_body_names_none() -> None:
    fake = FakeScale(polls_before_done=0)
    async with make_client(fake) as client:
        await client.run(IMAGE)
    assert fake.requests[2].json["parameters"] == []


async def test_bools_and_numbers_are_sent_as_strings() -> None:
    fake = FakeScale(polls_before_done=0)
    async with make_client(fake) as client:
        await client.run(IMAGE, parameters={"strength": True, "prompt": 7})
        await client.run(IMAGE, parameters={"strength": 0.1})
    bodies = [r.json for r in fake.requests if r.kind == "run"]
    assert bodies[0]["parameters"][0]["parameters"] == {"strength": "true", "prompt": "7"}
    assert bodies[1]["parameters"][0]["parameters"] == {"strength": "0.1"}


async def test_inputs_of_every_kind() -> None:
    fake = FakeScale(polls_before_done=0, outputs=[{"text": "ok"}])
    raw = {"storage_object": {"url": "https://scalefs.test/v1/objects/x", "data_type": "image"}}
    async with make_client(fake) as client:
        results = await client.run(TINY_PNG, IMAGE, raw, TaskIO("text", "hello"))
    assert fake.requests[2].json["inputs"] == [
        IMAGE.to_json(),
        IMAGE.to_json(),
        raw,
        {"text": "hello"},
    ]
    assert results.outputs == (TaskIO("text", "ok"),)


async def test_chaining_a_results_as_input() -> None:
    fake = FakeScale(polls_before_done=0, outputs=[{"image": IMAGE.to_base64()}, {"n": 1}])
    async with make_client(fake) as client:
        first = await client.run(IMAGE)
        await client.run(first)
    second_body = [r.json for r in fake.requests if r.kind == "run"][1]
    assert second_body["inputs"] == [IMAGE.to_json(), {"n": 1}]


async def test_a_client_is_a_deployment() -> None:
    client = make_client(FakeScale())
    assert isinstance(client, Deployment)
    assert ScaleDeployment is Client
    await client.aclose()


# -- JWT -----------------------------------------------------------------------------


async def test_one_jwt_exchange_for_two_runs() -> None:
    fake = FakeScale(polls_before_done=0)
    async with make_client(fake) as client:
        await client.run(IMAGE)
        await client.run(IMAGE)
    assert fake.count("jwt") == 1
    assert len({r.headers["authorization"] for r in fake.requests if r.kind != "jwt"}) == 1


async def test_a_jwt_is_renewed_60_seconds_before_it_expires() -> None:
    fake = FakeScale(jwt_expires_in=30)  # already within the renewal margin
    async with make_client(fake) as client:
        await client.run(IMAGE)
    endpoint_requests = [r for r in fake.requests if r.kind != "jwt"]
    assert kinds(fake) == ["jwt", "workflow", "jwt", "run"] + ["jwt", "poll"] * 3
    assert len({r.headers["authorization"] for r in endpoint_requests}) == len(endpoint_requests)


async def test_a_jwt_with_time_left_is_kept() -> None:
    fake = FakeScale(jwt_expires_in=61)
    async with make_client(fake) as client:
        await client.run(IMAGE)
    assert fake.count("jwt") == 1


async def test_a_401_renews_the_jwt_and_retries_once() -> None:
    fake = FakeScale(polls_before_done=0)
    async with make_client(fake) as client:
        await client.run(IMAGE)
        fake.expire_jwts()
        results = await client.run(IMAGE)
    assert kinds(fake) == ["jwt", "workflow", "run", "poll", "run", "jwt", "run", "poll"]
    refused, retried = fake.requests[4], fake.requests[6]
    assert refused.json == retried.json
    assert refused.headers["authorization"] != retried.headers["authorization"]
    assert results.outputs == (IMAGE,)


async def test_a_401_while_polling_renews_the_jwt() -> None:
    fake = FakeScale(polls_before_done=1)
    async with make_client(fake) as client:
        stream = client.run_stream(IMAGE)
        await stream.__anext__()
        fake.expire_jwts()
        items = [p async for p in stream]
    assert kinds(fake) == ["jwt", "workflow", "run", "poll", "jwt", "poll", "poll"]
    assert items[-1].results is not None


async def test_a_second_401_is_an_authentication_failure() -> None:
    fake = FakeScale()
    fake.fail("run", 401, times=2)
    async with make_client(fake) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == (
        "the run request was refused: the deployment rejected the credentials (HTTP 401)"
    )
    assert caught.value.status_code == 401
    assert caught.value.code == "unauthorized"
    assert kinds(fake) == ["jwt", "workflow", "run", "jwt", "run"]


async def test_a_403_is_an_authentication_failure_without_retry() -> None:
    fake = FakeScale()
    fake.fail("workflow", 403)
    async with make_client(fake) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == (
        "the workflow request was refused: the deployment rejected the credentials (HTTP 403)"
    )
    assert caught.value.status_code == 403
    assert kinds(fake) == ["jwt", "workflow"]


async def test_a_refused_token() -> None:
    fake = FakeScale(token="the-right-token")
    async with make_client(fake, token="a-wrong-token") as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == (
        "the token exchange was refused: SCALE rejected the API token (HTTP 401)"
    )
    assert kinds(fake) == ["jwt"]


async def test_the_token_exchange_failing() -> None:
    fake = FakeScale()
    fake.fail("jwt", 502)
    async with make_client(fake) as client:
        with pytest.raises(UpstreamHTTPError) as caught:
            await client.run(IMAGE)
        assert str(caught.value) == "the token exchange failed: the SCALE API answered HTTP 502"
        assert caught.value.status_code == 502
        fake.fail("jwt", 200, body={"id_token": 5})
        with pytest.raises(UpstreamError) as caught:
            await client.run(IMAGE)
        assert str(caught.value) == (
            "the token exchange failed: the SCALE API sent an answer ikproxy cannot read"
        )
        fake.fail("jwt", 200, body=b"<html>")
        with pytest.raises(UpstreamError) as caught:
            await client.run(IMAGE)
        assert str(caught.value) == (
            "the token exchange failed: the SCALE API sent an answer that is not JSON"
        )
        await client.run(IMAGE)  # not cached: the next run exchanges again
    assert fake.count("jwt") == 4


# -- workflow and concurrency ---------------------------------------------------------


async def test_concurrent_first_runs_share_one_exchange_and_one_workflow_fetch() -> None:
    fake = FakeScale(latency=0.02)
    results: list[Results] = []
    async with make_client(fake) as client:

        async def one() -> None:
            results.append(await client.run(IMAGE))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert len(results) == 5
    assert fake.count("jwt") == 1
    assert fake.count("workflow") == 1
    assert fake.count("run") == 5


async def test_concurrent_401s_share_one_renewal() -> None:
    fake = FakeScale(polls_before_done=0, latency=0.02)
    async with make_client(fake) as client:
        await client.run(IMAGE)
        fake.expire_jwts()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(client.run, IMAGE)
    assert fake.count("jwt") == 2
    assert fake.count("run") == 1 + 5 * 2  # each refused once, then retried


async def test_a_failed_workflow_fetch_is_not_cached() -> None:
    fake = FakeScale(polls_before_done=0)
    fake.fail("workflow", 500)
    async with make_client(fake) as client:
        with pytest.raises(UpstreamHTTPError):
            await client.run(IMAGE)
        await client.run(IMAGE)
        await client.run(IMAGE)
    assert fake.count("workflow") == 2


async def test_an_unreadable_workflow() -> None:
    fake = FakeScale()
    fake.fail("workflow", 200, body={"tasks": "none"})
    async with make_client(fake) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == "the deployment sent a workflow description ikproxy cannot read"


# -- parameters, tasks, outputs ---------------------------------------------------------


async def test_unknown_parameter_is_refused_before_submitting() -> None:
    fake = FakeScale()
    async with make_client(fake) as client:
        stream = client.run_stream(IMAGE, parameters={"strenght": 1})
        assert fake.requests == []  # nothing happens before the first __anext__
        with pytest.raises(InvalidParameter) as caught:
            await stream.__anext__()
    assert str(caught.value) == (
        "unknown parameter 'strenght' for task 'infer_demo'; valid parameters: 'prompt', 'strength'"
    )
    assert caught.value.code == "invalid_parameter"
    assert fake.count("run") == 0


def _two_heads() -> dict[str, Any]:
    """A backbone feeding two tasks of the same name; the second one is final."""
    workflow = default_workflow()
    backbone = workflow["tasks"][0]
    backbone["task_data"]["name"] = "backbone"
    head = {
        "task_data": {
            "name": "head",
            "parameters": [{"name": "conf", "value": "0.5"}],
            "inputs": [{"name": "IODataType.IMAGE"}],
            "outputs": [{"name": "IODataType.IMAGE"}, {"name": "IODataType.OUTPUT_TEXT"}],
        }
    }
    workflow["tasks"] += [{"task_id": 1} | head, {"task_id": 2} | head]
    workflow["connections"] += [
        {"source_id": 0, "source_index": 0, "target_id": 1, "target_index": 0},
        {"source_id": 0, "source_index": 0, "target_id": 2, "target_index": 0},
        {"source_id": 1, "source_index": 0, "target_id": 0, "target_index": 0},
    ]
    return workflow


@pytest.mark.parametrize(
    ("options", "target"),
    [
        ({}, {"task_name": "head", "task_index": 1}),
        ({"task": "head"}, {"task_name": "head", "task_index": 0}),
        ({"task": "head", "task_index": 1}, {"task_name": "head", "task_index": 1}),
        ({"task": "backbone"}, {"task_name": "backbone", "task_index": 0}),
    ],
)
async def test_task_selection(options: dict[str, Any], target: dict[str, Any]) -> None:
    fake = FakeScale(_two_heads(), polls_before_done=0)
    parameters = {"conf": 0.25} if target["task_name"] == "head" else {"strength": 2}
    async with make_client(fake) as client:
        items = await collect(client, IMAGE, parameters=parameters, **options)
    body = fake.requests[2].json
    assert body["outputs"] == [target]
    assert body["parameters"] == [
        target | {"parameters": {k: str(v) for k, v in parameters.items()}}
    ]
    assert {p.name for p in items} == {target["task_name"]}


async def test_unknown_task_and_task_index() -> None:
    fake = FakeScale(_two_heads())
    async with make_client(fake) as client:
        with pytest.raises(InvalidParameter) as caught:
            await client.run(IMAGE, task="tail")
        assert str(caught.value) == "unknown task 'tail'; valid tasks: 'backbone', 'head'"
        with pytest.raises(InvalidParameter) as caught:
            await client.run(IMAGE, task="head", task_index=2)
        assert str(caught.value) == (
            "task_index 2 out of range: the workflow has 2 task(s) named 'head'"
        )
    assert fake.count("run") == 0


async def test_named_outputs() -> None:
    fake = FakeScale(_two_heads(), polls_before_done=0)
    async with make_client(fake) as client:
        await client.run(IMAGE, outputs=[1, ("backbone", 0)])
        await client.run(IMAGE, task="head", outputs=["backbone", 0])
    first, second = (r.json["outputs"] for r in fake.requests if r.kind == "run")
    assert first == [
        {"task_name": "head", "task_index": 1, "output_index": 1},
        {"task_name": "backbone", "task_index": 0, "output_index": 0},
    ]
    assert second == [
        {"task_name": "backbone", "task_index": 0},
        {"task_name": "head", "task_index": 0, "output_index": 0},
    ]


# -- polling ------------------------------------------------------------------------------


async def test_polls_follow_next_poll_in() -> None:
    fake = FakeScale(next_poll_in=150, polls_before_done=1)
    schedule: list[int] = []

    def recording(n: int) -> float:
        schedule.append(n)
        return 0.0

    async with make_client(fake, poll_schedule=recording) as client:
        await client.run(IMAGE)
    run, *polls = [r for r in fake.requests if r.kind in ("run", "poll")]
    times = [run.time] + [p.time for p in polls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 2
    assert all(gap >= 0.14 for gap in gaps), gaps  # the advice; never earlier
    assert schedule == []  # the fallback schedule is for deployments that give no advice


async def test_long_polling_when_advised() -> None:
    fake = FakeScale(next_poll_in=0, next_poll_long=True, long_poll_hold=0.01)
    async with make_client(fake) as client:
        await client.run(IMAGE)
    polls = [r for r in fake.requests if r.kind == "poll"]
    assert len(polls) == 3
    assert all(p.query == {"advice": "true", "long": "true"} for p in polls)


@pytest.mark.parametrize("legacy", [True, False])
async def test_without_advice_the_fallback_schedule_paces_the_polls(legacy: bool) -> None:
    fake = FakeScale(polls_before_done=3, legacy=legacy, next_poll_in=None)
    schedule: list[int] = []

    def recording(n: int) -> float:
        schedule.append(n)
        return 0.0

    async with make_client(fake, poll_schedule=recording) as client:
        items = await collect(client, IMAGE)
    assert schedule == [0, 1, 2, 3]
    assert all(r.query["long"] == "false" for r in fake.requests if r.kind == "poll")
    assert [p.state for p in items] == ["PENDING", "PENDING", "STARTED", "STARTED", "SUCCESS"]
    assert items[-1].results == Results(outputs=(IMAGE,), uuid=items[0].uuid)


async def test_legacy_run_answer_is_a_bare_uuid() -> None:
    fake = FakeScale(legacy=True, polls_before_done=0)
    async with make_client(fake) as client:
        items = await collect(client, IMAGE)
    first = items[0]
    assert (first.state, first.eta) == ("PENDING", (None, None))
    assert first.uuid is not None
    assert fake.requests[3].path == f"/api/results/{first.uuid}"


async def test_without_advice_it_gives_up_after_100_polls() -> None:
    fake = FakeScale(legacy=True, polls_before_done=1000)
    async with make_client(fake) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == "the deployment gave no results after 100 polls"
    assert fake.count("poll") == 100


async def test_with_advice_the_deadline_bounds_the_run_not_a_poll_count() -> None:
    fake = FakeScale(next_poll_in=0, polls_before_done=150)
    async with make_client(fake) as client:
        results = await client.run(IMAGE)
    assert fake.count("poll") == 151
    assert results.outputs == (IMAGE,)


# -- failures -------------------------------------------------------------------------------


async def test_520_on_run_is_workflow_failed() -> None:
    fake = FakeScale()
    fake.fail("run", 520)
    async with make_client(fake) as client:
        with pytest.raises(WorkflowFailed) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == "Workflow failed"
    assert caught.value.status_code == 520
    assert caught.value.code == "workflow_failed"
    assert fake.count("run") == 1


async def test_520_while_polling_keeps_the_server_message_and_is_not_retried() -> None:
    fake = FakeScale()
    fake.fail("poll", 520, body={"message": "CUDA out of memory", "detail": "Traceback ..."})
    async with make_client(fake) as client:
        stream = client.run_stream(IMAGE)
        assert (await stream.__anext__()).state == "PENDING"
        with pytest.raises(WorkflowFailed) as caught:
            await stream.__anext__()
    assert str(caught.value) == "CUDA out of memory"
    assert fake.count("poll") == 1


async def test_520_without_a_message() -> None:
    fake = FakeScale()
    fake.fail("poll", 520, body=b"oops")
    async with make_client(fake) as client:
        with pytest.raises(WorkflowFailed) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == "the workflow failed"


async def test_500_while_polling_is_not_retried() -> None:
    fake = FakeScale()
    fake.fail("poll", 500)
    async with make_client(fake) as client:
        with pytest.raises(UpstreamHTTPError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == "the poll failed: the deployment answered HTTP 500"
    assert caught.value.status_code == 500
    assert caught.value.code == "upstream_failed"
    assert fake.count("poll") == 1


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_errors_while_polling_are_retried(status: int) -> None:
    fake = FakeScale(polls_before_done=1)
    fake.fail("poll", status, times=3)
    async with make_client(fake) as client:
        results = await client.run(IMAGE)
    assert results.outputs == (IMAGE,)
    assert fake.count("poll") == 3 + 2


async def test_dropped_polls_are_retried() -> None:
    fake = FakeScale(polls_before_done=1)
    fake.drop("poll", times=2)
    async with make_client(fake) as client:
        results = await client.run(IMAGE)
    assert results.outputs == (IMAGE,)
    assert fake.count("poll") == 2 + 2


async def test_retries_reset_after_a_good_poll() -> None:
    fake = FakeScale(polls_before_done=1)
    async with make_client(fake, max_retries=1) as client:
        stream = client.run_stream(IMAGE)
        await stream.__anext__()
        fake.fail("poll", 503)
        await stream.__anext__()  # retried once, then a good answer
        fake.fail("poll", 503)
        final = [p async for p in stream][-1]
    assert final.results is not None
    assert fake.count("poll") == 4


async def test_retries_exhausted_on_503() -> None:
    fake = FakeScale()
    fake.fail("poll", 503, times=3)
    async with make_client(fake, max_retries=2) as client:
        with pytest.raises(UpstreamHTTPError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == "the poll failed: the deployment answered HTTP 503"
    assert caught.value.status_code == 503
    assert fake.count("poll") == 3


async def test_retries_exhausted_on_drops() -> None:
    fake = FakeScale()
    fake.drop("poll", times=4)
    async with make_client(fake) as client:  # max_retries=3 by default
        with pytest.raises(UpstreamConnectionError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == (
        "the poll failed: the connection to the deployment failed (RemoteProtocolError)"
    )
    assert fake.count("poll") == 4


async def test_no_retries() -> None:
    fake = FakeScale()
    fake.fail("poll", 503)
    async with make_client(fake, max_retries=0) as client:
        with pytest.raises(UpstreamHTTPError):
            await client.run(IMAGE)
    assert fake.count("poll") == 1


async def test_retry_backoff_doubles() -> None:
    fake = FakeScale(next_poll_in=0, polls_before_done=0)
    fake.fail("poll", 503, times=3)
    async with make_client(fake, retry_backoff=0.05) as client:
        await client.run(IMAGE)
    times = [r.time for r in fake.requests if r.kind == "poll"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, backoff in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert gap >= backoff - 0.01, gaps


@pytest.mark.parametrize("status", [400, 500, 502, 503, 520])
async def test_the_run_request_is_never_retried(status: int) -> None:
    fake = FakeScale()
    fake.fail("run", status)
    async with make_client(fake) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.run(IMAGE)
    assert caught.value.status_code == status
    assert fake.count("run") == 1


async def test_a_dropped_run_request_is_not_retried() -> None:
    fake = FakeScale()
    fake.drop("run")
    async with make_client(fake) as client:
        with pytest.raises(UpstreamConnectionError) as caught:
            await client.run(IMAGE)
    assert str(caught.value) == (
        "the run request failed: the connection to the deployment failed (RemoteProtocolError)"
    )
    assert fake.count("run") == 1


async def test_an_unreadable_run_answer() -> None:
    fake = FakeScale()
    fake.fail("run", 200, body=b"accepted")
    async with make_client(fake) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.run(IMAGE)
    assert (
        str(caught.value)
        == "the run request failed: the deployment sent an answer that is not JSON"
    )


# -- deadlines, closing, cancelling ---------------------------------------------------------


async def test_run_timeout_while_waiting_for_results() -> None:
    fake = FakeScale(next_poll_in=60_000)
    async with make_client(fake, timeout=0.2) as client:
        stream = client.run_stream(IMAGE)
        assert (await stream.__anext__()).state == "PENDING"
        with pytest.raises(RunTimeout) as caught:
            await stream.__anext__()
    assert str(caught.value) == "the run did not finish within 0.2 s"
    assert caught.value.code == "timeout"
    assert fake.count("poll") == 0


async def test_run_timeout_before_the_run_is_accepted() -> None:
    fake = FakeScale(latency=30)
    async with make_client(fake) as client:
        with pytest.raises(RunTimeout) as caught:
            await client.run(IMAGE, timeout=0.1)
    assert str(caught.value) == "the run did not finish within 0.1 s"
    assert kinds(fake) == ["jwt"]


async def test_the_call_timeout_overrides_the_client_timeout() -> None:
    fake = FakeScale(next_poll_in=300, polls_before_done=0)
    async with make_client(fake, timeout=0.1) as client:
        results = await client.run(IMAGE, timeout=10)
        with pytest.raises(RunTimeout):
            await client.run(IMAGE)
    assert results.outputs == (IMAGE,)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "1", True])
async def test_bad_timeouts(timeout: Any) -> None:
    message = f"timeout must be a number of seconds > 0 or None, not {timeout!r}"
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        Client(ENDPOINT, TOKEN, timeout=timeout)
    assert str(caught.value) == message
    async with make_client(FakeScale()) as client:
        with pytest.raises(ValueError, match=re.escape(message)) as caught:
            await client.run(IMAGE, timeout=timeout)
    assert str(caught.value) == message


async def assert_no_more_polls(fake: FakeScale, within: float = 0.5) -> None:
    """No poll arrives in `within` s, when the fake advises one every 50 ms."""
    polls = fake.count("poll")
    with pytest.raises(TimeoutError):
        await fake.wait_for("poll", count=polls + 1, timeout=within)


async def test_aclose_stops_polling() -> None:
    fake = FakeScale(next_poll_in=50, polls_before_done=1000)
    async with make_client(fake) as client:
        stream = client.run_stream(IMAGE)
        await stream.__anext__()
        await stream.__anext__()  # mid-run: one poll answered
        await stream.aclose()
        await assert_no_more_polls(fake)
    assert fake.count("poll") == 1


async def test_breaking_out_of_the_loop_stops_polling() -> None:
    fake = FakeScale(next_poll_in=50, polls_before_done=1000)
    async with make_client(fake) as client:
        stream = client.run_stream(IMAGE)
        async for progress in stream:
            if progress.state == "STARTED":
                break
        await stream.aclose()
        await assert_no_more_polls(fake)
    assert fake.count("poll") == 2


async def test_cancellation_stops_polling() -> None:
    fake = FakeScale(next_poll_in=50, polls_before_done=1000)
    seen: list[Progress] = []
    async with make_client(fake) as client:
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async for progress in client.run_stream(IMAGE):
                    seen.append(progress)

            tg.start_soon(consume)
            await fake.wait_for("poll", count=2)
            tg.cancel_scope.cancel()
        polls = fake.count("poll")
        await assert_no_more_polls(fake)
    assert polls in (2, 3)  # the cancel may land while the third poll is on the wire
    assert fake.count("poll") == polls
    assert seen
    assert seen[-1].results is None


async def test_a_closed_client_refuses_to_run() -> None:
    client = make_client(FakeScale())
    await client.aclose()
    with pytest.raises(RuntimeError) as caught:
        await client.run(IMAGE)
    assert str(caught.value) == "this client is closed"


# -- construction ------------------------------------------------------------------------------


def test_the_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IKOMIA_TOKEN", raising=False)
    message = "no SCALE API token: pass token= or set the IKOMIA_TOKEN environment variable"
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        Client(ENDPOINT)
    assert str(caught.value) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        Client(ENDPOINT, "")


async def test_token_and_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IKOMIA_TOKEN", "env-token")
    monkeypatch.setenv("IKOMIA_URL", "http://scale-from-env.test")
    fake = FakeScale(token="env-token", polls_before_done=0)
    async with Client(ENDPOINT, transport=fake.transport(), poll_schedule=no_wait) as client:
        await client.run(IMAGE)
    jwt = fake.requests[0]
    assert jwt.headers["host"] == "scale-from-env.test"
    assert jwt.headers["authorization"] == "Token env-token"


def test_the_default_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IKOMIA_URL", raising=False)
    fake = FakeScale(polls_before_done=0)
    client = Client(ENDPOINT, TOKEN, transport=fake.transport(), poll_schedule=no_wait)
    anyio.run(client.run, IMAGE)  # built outside any event loop, used inside one
    anyio.run(client.aclose)
    assert fake.requests[0].headers["host"] == "scale.ikomia.ai"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"url": "endpoint.test"}, "url must be an http:// or https:// URL"),
        ({"url": None}, "url must be an http:// or https:// URL"),
        ({"api_url": "ftp://scale.test"}, "api_url must be an http:// or https:// URL"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, not -1"),
        ({"max_retries": 1.5}, "max_retries must be an integer >= 0, not 1.5"),
        ({"retry_backoff": -0.5}, "retry_backoff must be a number of seconds >= 0, not -0.5"),
    ],
)
def test_bad_arguments(arguments: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"url": ENDPOINT, "token": TOKEN} | arguments
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        Client(options.pop("url"), options.pop("token"), **options)
    assert str(caught.value) == message


def test_repr_holds_no_secret() -> None:
    client = Client(ENDPOINT, TOKEN)
    assert repr(client) == "<Client for a SCALE deployment>"


# -- no secret in any message ----------------------------------------------------------------


SECRET_ENDPOINT = "http://secret-endpoint-7f3a.test"
SECRET_API = "http://secret-api-91c2.test"
SECRET_TOKEN = "secret-token-5e8d"


def _scenarios() -> list[tuple[str, Callable[[FakeScale], None], dict[str, Any]]]:
    return [
        ("refused token", lambda f: f.fail("jwt", 401), {}),
        ("jwt 500", lambda f: f.fail("jwt", 500), {}),
        ("jwt drop", lambda f: f.drop("jwt"), {}),
        ("workflow 403", lambda f: f.fail("workflow", 403), {}),
        ("run 401 twice", lambda f: f.fail("run", 401, times=2), {}),
        ("run 400", lambda f: f.fail("run", 400), {}),
        ("run 520", lambda f: f.fail("run", 520), {}),
        ("run drop", lambda f: f.drop("run"), {}),
        ("poll 500", lambda f: f.fail("poll", 500), {}),
        ("poll drops", lambda f: f.drop("poll", times=9), {}),
        ("poll 503s", lambda f: f.fail("poll", 503, times=9), {}),
        ("unknown parameter", lambda f: None, {"parameters": {"nope": 1}}),
        ("unknown task", lambda f: None, {"task": "nope"}),
        ("deadline", lambda f: setattr(f, "next_poll_in", 10_000), {"timeout": 0.05}),
    ]


@pytest.mark.parametrize(
    ("name", "script", "options"), _scenarios(), ids=[s[0] for s in _scenarios()]
)
async def test_no_secret_in_any_error(
    name: str, script: Callable[[FakeScale], None], options: dict[str, Any]
) -> None:
    fake = FakeScale(token=SECRET_TOKEN)
    script(fake)
    client = Client(
        SECRET_ENDPOINT,
        SECRET_TOKEN,
        api_url=SECRET_API,
        transport=fake.transport(),
        retry_backoff=0,
        poll_schedule=no_wait,
    )
    async with client:
        with pytest.raises(IkproxyError) as caught:
            await client.run(IMAGE, **options)
    jwts = {r.headers["authorization"].partition(" ")[2] for r in fake.requests if r.kind != "jwt"}
    secrets = {SECRET_TOKEN, SECRET_ENDPOINT, SECRET_API, "secret-endpoint", "secret-api"} | jwts
    error = caught.value
    texts = [str(error), repr(error), *map(str, error.args)]
    for secret in secrets:
        for text in texts:
            assert secret not in text, (name, text)
