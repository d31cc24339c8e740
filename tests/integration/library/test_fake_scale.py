"""The fake SCALE server speaks the protocol, records requests, and misbehaves on demand.

Protocol tests run twice: in process (`fake.transport()`) and over loopback
(`fake.serve()`, uvicorn in a thread), the two ways a client test reaches it.
"""

from __future__ import annotations

import base64
import io
import logging
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from subprocess import PIPE
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from ikproxy.testing import TINY_PNG, FakeScale, Fault, Kind, default_workflow

pytestmark = pytest.mark.anyio
pytest_plugins = ["pytester"]

IMAGE_B64 = base64.b64encode(TINY_PNG).decode("ascii")
TOKEN_HEADERS = {"Authorization": "Token fake-token"}
OUTPUT = {"task_name": "infer_demo", "task_index": 0, "output_index": 0, "save_temporary": False}
RUN_BODY: dict[str, Any] = {
    "inputs": [{"image": IMAGE_B64}],
    "outputs": [OUTPUT],
    "parameters": [{"task_name": "infer_demo", "task_index": 0, "parameters": {"strength": "0.5"}}],
}
ADVICE = {"advice": "true", "long": "false"}

Connect = Callable[[FakeScale], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(params=["transport", "serve"])
def connect(request: pytest.FixtureRequest) -> Connect:
    """Open an httpx client to a fake, in process or over loopback."""

    @asynccontextmanager
    async def open_client(fake: FakeScale) -> AsyncIterator[httpx.AsyncClient]:
        if request.param == "transport":
            async with httpx.AsyncClient(
                transport=fake.transport(), base_url="http://fake.test"
            ) as client:
                yield client
        else:
            with fake.serve() as url:
                async with httpx.AsyncClient(base_url=url) as client:
                    yield client

    return open_client


async def bearer(client: httpx.AsyncClient) -> dict[str, str]:
    """Exchange the token for a JWT; the headers that carry it."""
    answer = await client.get(
        "/v1/projects/jwt/",
        params={"endpoint": "http://fake.test", "storage": "true"},
        headers=TOKEN_HEADERS,
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['id_token']}"}


async def start_run(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.put("/api/run", params={"advice": "true"}, json=RUN_BODY, headers=headers)


async def poll(
    client: httpx.AsyncClient, run_uuid: str, headers: dict[str, str], long: bool = False
) -> httpx.Response:
    params = {"advice": "true", "long": "true" if long else "false"}
    return await client.get(f"/api/results/{run_uuid}", params=params, headers=headers)


# -- JWT exchange and authentication -------------------------------------------


async def test_jwt_exchange_gives_a_jwt_that_opens_the_workflow(connect: Connect) -> None:
    fake = FakeScale(jwt_expires_in=120)
    async with connect(fake) as client:
        answer = await client.get(
            "/v1/projects/jwt/",
            params={"endpoint": "https://xyz.scale.ikomia.ai", "storage": "true"},
            headers=TOKEN_HEADERS,
        )
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"id_token", "expires_in"}
        assert body["expires_in"] == 120
        assert isinstance(body["id_token"], str)
        assert body["id_token"] != "fake-token"

        workflow = await client.get(
            "/workflow", headers={"Authorization": f"Bearer {body['id_token']}"}
        )
    assert workflow.status_code == 200
    assert workflow.json() == default_workflow()


async def test_each_jwt_exchange_issues_a_new_jwt(connect: Connect) -> None:
    async with connect(FakeScale()) as client:
        first, second = await bearer(client), await bearer(client)
    assert first != second


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Token wrong-token"},
        {"Authorization": "Bearer fake-token"},
        {"Authorization": "fake-token"},
    ],
    ids=["missing", "wrong", "bearer-scheme", "no-scheme"],
)
async def test_jwt_exchange_refuses_a_bad_token(connect: Connect, headers: dict[str, str]) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        answer = await client.get(
            "/v1/projects/jwt/", params={"endpoint": "http://fake.test"}, headers=headers
        )
    assert answer.status_code == 401
    assert answer.json() == {"message": "invalid or missing API token"}


async def test_a_custom_token_is_the_only_one_accepted() -> None:
    fake = FakeScale(token="s3cret")
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        refused = await client.get(
            "/v1/projects/jwt/", params={"endpoint": "x"}, headers=TOKEN_HEADERS
        )
        accepted = await client.get(
            "/v1/projects/jwt/", params={"endpoint": "x"}, headers={"Authorization": "Token s3cret"}
        )
    assert (refused.status_code, accepted.status_code) == (401, 200)


async def test_jwt_exchange_requires_the_endpoint() -> None:
    fake = FakeScale()
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        answer = await client.get("/v1/projects/jwt/", headers=TOKEN_HEADERS)
    assert answer.status_code == 400
    assert answer.json() == {"message": "the endpoint query parameter is required"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/workflow"), ("PUT", "/api/run"), ("GET", "/api/results/some-uuid")],
)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing Bearer token"),
        ({"Authorization": "Token fake-token"}, "missing Bearer token"),
        ({"Authorization": "Bearer"}, "missing Bearer token"),
        ({"Authorization": "Bearer not-a-jwt-we-issued"}, "invalid or expired token"),
    ],
    ids=["none", "api-token", "empty", "unknown"],
)
async def test_endpoints_require_a_bearer_jwt(
    connect: Connect, method: str, path: str, headers: dict[str, str], message: str
) -> None:
    async with connect(FakeScale()) as client:
        answer = await client.request(method, path, json=RUN_BODY, headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {"message": message}


async def test_expire_jwts_invalidates_every_jwt_issued_so_far(connect: Connect) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        old = await bearer(client)
        assert (await client.get("/workflow", headers=old)).status_code == 200
        fake.expire_jwts()
        refused = await client.get("/workflow", headers=old)
        new = await bearer(client)
        accepted = await client.get("/workflow", headers=new)
    assert refused.status_code == 401
    assert refused.json() == {"message": "invalid or expired token"}
    assert accepted.status_code == 200


async def test_a_jwt_is_refused_once_its_lifetime_is_over() -> None:
    fake = FakeScale(jwt_expires_in=0)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        answer = await client.get("/workflow", headers=await bearer(client))
    assert answer.status_code == 401
    assert answer.json() == {"message": "invalid or expired token"}


# -- running and polling ---------------------------------------------------------


async def test_run_then_polls_until_success_with_advice(connect: Connect) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        headers = await bearer(client)
        run = await start_run(client, headers)
        assert run.status_code == 200
        accepted = run.json()
        run_uuid = accepted.pop("uuid")
        assert accepted == {
            "state": "PENDING",
            "eta": [3000, 4500],
            "next_poll_in": 20,
            "next_poll_long": False,
        }
        answers = [await poll(client, run_uuid, headers) for _ in range(4)]

    assert [a.status_code for a in answers] == [202, 202, 200, 200]
    assert answers[0].json() == {
        "state": "PENDING",
        "eta": [2000, 3000],
        "next_poll_in": 20,
        "next_poll_long": False,
    }
    assert answers[1].json() == {
        "state": "STARTED",
        "eta": [1000, 1500],
        "next_poll_in": 20,
        "next_poll_long": False,
    }
    done = {"results": [{"image": IMAGE_B64}], "state": "SUCCESS", "eta": [0, 0]}
    assert answers[2].json() == done
    assert answers[3].json() == done  # a finished run keeps answering its results


async def test_runs_are_independent(connect: Connect) -> None:
    fake = FakeScale(polls_before_done=1)
    async with connect(fake) as client:
        headers = await bearer(client)
        first = (await start_run(client, headers)).json()["uuid"]
        second = (await start_run(client, headers)).json()["uuid"]
        assert first != second
        assert (await poll(client, first, headers)).status_code == 202
        assert (await poll(client, first, headers)).status_code == 200
        assert (await poll(client, second, headers)).status_code == 202


async def test_an_unknown_run_is_404(connect: Connect) -> None:
    async with connect(FakeScale()) as client:
        answer = await poll(client, "no-such-run", await bearer(client))
    assert answer.status_code == 404
    assert answer.json() == {"message": "unknown run 'no-such-run'"}


async def test_polls_before_done_zero_finishes_at_the_first_poll() -> None:
    fake = FakeScale(polls_before_done=0)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        first = await poll(client, run["uuid"], headers)
    assert run["eta"] == [1000, 1500]
    assert first.status_code == 200
    assert first.json()["state"] == "SUCCESS"


async def test_etas_are_sent_in_order_and_the_last_one_repeats() -> None:
    fake = FakeScale(etas=[[100, 200], [None, 50], [7, None]], polls_before_done=3)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        etas = [run["eta"]] + [
            (await poll(client, run["uuid"], headers)).json()["eta"] for _ in range(4)
        ]
    assert etas == [[100, 200], [None, 50], [7, None], [7, None], [7, None]]


async def test_scripted_outputs_are_returned_as_given() -> None:
    outputs: list[dict[str, Any]] = [
        {"object_detection": {"boxes": [[1, 2, 3, 4]]}},
        {"image": IMAGE_B64},
    ]
    fake = FakeScale(outputs=outputs, polls_before_done=0)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        done = await poll(client, run["uuid"], headers)
    assert done.json()["results"] == outputs


async def test_an_outputs_factory_sees_the_run_body() -> None:
    def outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"echo": body["parameters"][0]["parameters"]}]

    fake = FakeScale(outputs=outputs, polls_before_done=0)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        done = await poll(client, run["uuid"], headers)
    assert done.json()["results"] == [{"echo": {"strength": "0.5"}}]


async def test_a_run_without_image_input_answers_a_generated_png() -> None:
    fake = FakeScale(polls_before_done=0)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        body = {"inputs": [{"text": "a prompt"}], "outputs": [OUTPUT]}
        run = await client.put("/api/run", params={"advice": "true"}, json=body, headers=headers)
        done = await poll(client, run.json()["uuid"], headers)
    (output,) = done.json()["results"]
    png = base64.b64decode(output["image"])
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.size) == ("PNG", (8, 8))


async def test_without_advice_the_answers_carry_no_poll_hints() -> None:
    fake = FakeScale(next_poll_in=None, polls_before_done=1)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        pending = await poll(client, run["uuid"], headers)
    assert set(run) == {"uuid", "state", "eta"}
    assert pending.json() == {"state": "PENDING", "eta": [1000, 1500]}


async def test_legacy_mode_answers_a_bare_uuid_and_no_advice(connect: Connect) -> None:
    fake = FakeScale(legacy=True, polls_before_done=1, next_poll_long=True)
    async with connect(fake) as client:
        headers = await bearer(client)
        run = await start_run(client, headers)
        run_uuid = run.json()
        assert isinstance(run_uuid, str)
        assert run.content == f'"{run_uuid}"'.encode()
        pending = await poll(client, run_uuid, headers, long=True)
        done = await poll(client, run_uuid, headers)
    assert (pending.status_code, pending.json()) == (202, {"state": "PENDING", "eta": [1000, 1500]})
    assert done.json() == {"results": [{"image": IMAGE_B64}], "state": "SUCCESS", "eta": [0, 0]}


# -- long polling ----------------------------------------------------------------


async def test_a_long_poll_is_held_open_before_it_is_answered(connect: Connect) -> None:
    fake = FakeScale(next_poll_long=True, long_poll_hold=0.2)
    async with connect(fake) as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        assert run["next_poll_long"] is True
        sent = time.monotonic()
        held = await poll(client, run["uuid"], headers, long=True)
        elapsed = time.monotonic() - sent
    assert elapsed >= 0.2
    assert held.status_code == 202
    assert held.json() == {
        "state": "PENDING",
        "eta": [2000, 3000],
        "next_poll_in": 20,
        "next_poll_long": True,
    }


@pytest.mark.parametrize(
    ("options", "long"),
    [({"next_poll_long": True}, False), ({"next_poll_long": False}, True)],
    ids=["short-poll-asked", "long-polling-off"],
)
async def test_a_poll_is_not_held_unless_both_sides_want_it(
    connect: Connect, options: dict[str, Any], long: bool
) -> None:
    fake = FakeScale(long_poll_hold=60, **options)
    async with connect(fake) as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        with anyio.fail_after(10):
            answer = await poll(client, run["uuid"], headers, long=long)
    assert answer.status_code == 202


async def test_a_finished_run_answers_a_long_poll_at_once() -> None:
    fake = FakeScale(next_poll_long=True, long_poll_hold=60, polls_before_done=0)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        run = (await start_run(client, headers)).json()
        fake.long_poll_hold = 0  # the first poll finishes the run without a wait
        await poll(client, run["uuid"], headers, long=True)
        fake.long_poll_hold = 60
        with anyio.fail_after(10):
            again = await poll(client, run["uuid"], headers, long=True)
    assert again.json()["state"] == "SUCCESS"


async def test_an_abandoned_long_poll_ends_and_does_not_advance_the_run(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeScale(next_poll_long=True, long_poll_hold=60)
    async with connect(fake) as client:
        headers = await bearer(client)
        run_uuid = (await start_run(client, headers)).json()["uuid"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll, client, run_uuid, headers, True)
            await fake.wait_for("poll")
            tg.cancel_scope.cancel()
        answer = await poll(client, run_uuid, headers)
    assert answer.json()["state"] == "PENDING"
    # A held poll still running would make uvicorn's shutdown cancel it, with an error log.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- validation of the run body -------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    return {**RUN_BODY, **changes}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _with(parameters=[{"task_name": "infer_demo", "parameters": {"conf": "0.5"}}]),
            "unknown parameter 'conf' for task 'infer_demo': valid parameters are prompt, strength",
        ),
        (
            _with(parameters=[{"task_name": "infer_demo", "parameters": {"strength": 0.5}}]),
            "parameter 'strength' of task 'infer_demo' must be a string, not a number",
        ),
        (
            _with(parameters=[{"task_name": "infer_other", "parameters": {}}]),
            "unknown task 'infer_other': the workflow's tasks are infer_demo",
        ),
        (
            _with(outputs=[{"task_name": "infer_other"}]),
            "unknown task 'infer_other': the workflow's tasks are infer_demo",
        ),
        (
            _with(outputs=[{"task_name": "infer_demo", "task_index": 1}]),
            "task 'infer_demo' has no index 1: the workflow has 1 task(s) of that name",
        ),
        (
            _with(outputs=[{"task_name": "infer_demo", "output_index": 1}]),
            "task 'infer_demo' has no output 1: it has 1 output(s)",
        ),
        (
            _with(outputs=[{"task_name": "infer_demo", "task_index": -1}]),
            "outputs[0].task_index must be a non-negative integer",
        ),
        (_with(outputs=[]), "at least one output must be named"),
        ({"inputs": [{"image": IMAGE_B64}]}, "at least one output must be named"),
        (_with(outputs={"task_name": "infer_demo"}), "outputs must be a list"),
        (_with(outputs=[{"task_index": 0}]), "outputs[0].task_name must be a string"),
        (
            _with(inputs=[{"image": "not base64!"}]),
            "inputs[0].image is not valid base64",
        ),
        (
            _with(inputs=[{"image": IMAGE_B64, "text": "two keys"}]),
            "inputs[0] must be a JSON object with exactly one key (its kind)",
        ),
        (
            _with(parameters=[{"task_name": "infer_demo", "parameters": [["strength", "1"]]}]),
            "parameters[0].parameters must be a JSON object",
        ),
        ([RUN_BODY], "the run request must be a JSON object"),
    ],
)
async def test_a_bad_run_body_is_refused_with_a_message(
    connect: Connect, body: Any, message: str
) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        headers = await bearer(client)
        answer = await client.put("/api/run", json=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json() == {"message": message}


async def test_a_run_body_that_is_not_json_is_refused() -> None:
    fake = FakeScale()
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = {**await bearer(client), "Content-Type": "application/json"}
        answer = await client.put("/api/run", content=b'{"outputs": [', headers=headers)
    assert answer.status_code == 400
    assert answer.json() == {"message": "the run request is not valid JSON"}
    assert fake.requests[-1].json is None
    assert fake.requests[-1].body == b'{"outputs": ['


async def test_tasks_of_the_same_name_are_addressed_by_index() -> None:
    workflow = default_workflow()
    second = {"task_id": 1, "task_data": {**workflow["tasks"][0]["task_data"], "parameters": []}}
    workflow["tasks"].append(second)
    fake = FakeScale(workflow)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        headers = await bearer(client)
        ok = await client.put(
            "/api/run", json=_with(outputs=[{**OUTPUT, "task_index": 1}]), headers=headers
        )
        no_params = await client.put(
            "/api/run",
            json=_with(
                parameters=[{"task_name": "infer_demo", "task_index": 1, "parameters": {"x": "1"}}]
            ),
            headers=headers,
        )
    assert ok.status_code == 200
    assert no_params.json() == {
        "message": "unknown parameter 'x' for task 'infer_demo': valid parameters are none"
    }


# -- scripted faults ------------------------------------------------------------


async def test_a_scripted_520_is_a_workflow_failure_with_message_and_detail(
    connect: Connect,
) -> None:
    fake = FakeScale()
    fake.fail("poll", 520)
    fake.fail("poll", 520, body={"message": "CUDA out of memory", "detail": "trace..."})
    async with connect(fake) as client:
        headers = await bearer(client)
        run_uuid = (await start_run(client, headers)).json()["uuid"]
        default = await poll(client, run_uuid, headers)
        custom = await poll(client, run_uuid, headers)
        after = await poll(client, run_uuid, headers)
    assert default.status_code == 520
    assert default.json() == {
        "message": "Workflow failed",
        "detail": "a failure scripted on the fake server",
    }
    assert (custom.status_code, custom.json()["message"]) == (520, "CUDA out of memory")
    # Faulted polls do not advance the run: the next real poll is its first.
    assert (after.status_code, after.json()["state"]) == (202, "PENDING")


async def test_faults_apply_before_auth_in_fifo_order_per_kind(connect: Connect) -> None:
    fake = FakeScale()
    fake.fail("workflow", 503, times=2)
    fake.fail("workflow", 500, body={"error": "boom"})
    fake.fail("run", 401)
    async with connect(fake) as client:
        headers = await bearer(client)
        answers = [await client.get("/workflow", headers=headers) for _ in range(4)]
        run = await start_run(client, headers)
    assert [(a.status_code, a.json()) for a in answers[:3]] == [
        (503, {"message": "Service Unavailable"}),
        (503, {"message": "Service Unavailable"}),
        (500, {"error": "boom"}),
    ]
    assert answers[3].status_code == 200
    assert (run.status_code, run.json()) == (401, {"message": "Unauthorized"})


async def test_a_bytes_fault_body_is_sent_as_text() -> None:
    fake = FakeScale()
    fake.fail("jwt", 502, body=b"<html>Bad Gateway</html>")
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        answer = await client.get("/v1/projects/jwt/", headers=TOKEN_HEADERS)
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.content == b"<html>Bad Gateway</html>"


async def test_a_status_without_a_reason_phrase_gets_a_generic_message() -> None:
    fake = FakeScale()
    fake.fail("workflow", 599)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        answer = await client.get("/workflow")
    assert (answer.status_code, answer.json()) == (599, {"message": "HTTP 599"})


@pytest.mark.parametrize("kind", ["jwt", "workflow", "run", "poll"])
async def test_a_dropped_connection_gets_no_response_at_all(
    connect: Connect, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        headers = await bearer(client)
        run_uuid = (await start_run(client, headers)).json()["uuid"]
        requests = {
            "jwt": lambda: client.get(
                "/v1/projects/jwt/", params={"endpoint": "x"}, headers=TOKEN_HEADERS
            ),
            "workflow": lambda: client.get("/workflow", headers=headers),
            "run": lambda: start_run(client, headers),
            "poll": lambda: poll(client, run_uuid, headers),
        }
        fake.drop(kind)
        with pytest.raises(httpx.RemoteProtocolError) as raised:
            await requests[kind]()
        retried = await requests[kind]()
    assert str(raised.value) == "Server disconnected without sending a response."
    assert retried.is_success
    assert fake.count(kind) == (3 if kind in ("jwt", "run") else 2)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_latency_delays_every_answer() -> None:
    fake = FakeScale(latency=0.1)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        sent = time.monotonic()
        await client.get("/workflow")
        elapsed = time.monotonic() - sent
    assert elapsed >= 0.1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda f: f.fail("polls"),
            ValueError,
            "unknown request kind 'polls': expected one of jwt, workflow, run, poll, storage, other",
        ),
        (lambda f: f.drop("run", times=0), ValueError, "times must be at least 1, not 0"),
        (lambda f: f.fail("run", 404, times=-1), ValueError, "times must be at least 1, not -1"),
        (lambda f: f.fail("run", 99), ValueError, "status must be between 200 and 599, not 99"),
        (lambda f: f.fail("run", 600), ValueError, "status must be between 200 and 599, not 600"),
        (lambda f: f.fail("run", "503"), TypeError, "status must be an int, not str"),
        (
            lambda f: f.count("runs"),
            ValueError,
            "unknown request kind 'runs': expected one of jwt, workflow, run, poll, storage, other",
        ),
    ],
)
def test_scripting_refuses_bad_arguments(
    call: Callable[[FakeScale], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        call(FakeScale())
    assert str(raised.value) == message


async def test_inject_takes_a_fault_object() -> None:
    fake = FakeScale()
    fake.inject("other", Fault(status=418, body={"message": "teapot"}), times=2)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        answers = [await client.get("/nowhere") for _ in range(3)]
    assert [a.status_code for a in answers] == [418, 418, 404]
    assert answers[2].json() == {"message": "Not Found"}


# -- recorded requests and waiting on them ---------------------------------------


async def test_requests_are_recorded_with_their_kind_and_content(connect: Connect) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        headers = {**await bearer(client), "X-Trace": "abc"}
        run_uuid = (await start_run(client, headers)).json()["uuid"]
        await poll(client, run_uuid, headers)
        missing = await client.get("/v2/elsewhere?x=1")
        wrong_method = await client.post("/api/run", headers=headers)
    assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"message": "Method Not Allowed"},
    )

    jwt, run, polled, other, posted = fake.requests
    assert [r.kind for r in fake.requests] == ["jwt", "run", "poll", "other", "run"]
    assert (jwt.method, jwt.path) == ("GET", "/v1/projects/jwt/")
    assert jwt.query == {"endpoint": "http://fake.test", "storage": "true"}
    assert jwt.headers["authorization"] == "Token fake-token"
    assert jwt.json is None
    assert (run.method, run.path, run.query) == ("PUT", "/api/run", {"advice": "true"})
    assert run.json == RUN_BODY
    assert run.headers["x-trace"] == "abc"
    assert run.headers["authorization"] == headers["Authorization"]
    assert (polled.path, polled.query) == (f"/api/results/{run_uuid}", ADVICE)
    assert (other.path, other.query) == ("/v2/elsewhere", {"x": "1"})
    assert posted.method == "POST"
    times = [r.time for r in fake.requests]
    assert times == sorted(times)
    assert [fake.count(k) for k in ("jwt", "workflow", "run", "poll", "other")] == [1, 0, 2, 1, 1]


async def test_requests_is_a_snapshot() -> None:
    fake = FakeScale()
    snapshot = fake.requests
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        await client.get("/workflow")
    assert snapshot == []
    assert len(fake.requests) == 1


async def test_wait_for_returns_once_the_request_arrives(connect: Connect) -> None:
    fake = FakeScale()
    async with connect(fake) as client:
        headers = await bearer(client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(start_run, client, headers)
            recorded = await fake.wait_for("run")
        already = await fake.wait_for("jwt")
    assert recorded.kind == "run"
    assert recorded.json == RUN_BODY
    assert already.kind == "jwt"


async def test_wait_for_returns_the_count_th_request() -> None:
    fake = FakeScale()
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        for n in range(3):
            await client.get(f"/other/{n}")
    assert (await fake.wait_for("other", count=2)).path == "/other/1"


async def test_wait_for_times_out_with_a_message() -> None:
    fake = FakeScale()
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://f") as client:
        await client.get("/workflow")
    with pytest.raises(TimeoutError) as raised:
        await fake.wait_for("workflow", count=2, timeout=0.05)
    assert str(raised.value) == "waited 0.05 s for 2 'workflow' request(s); 1 arrived"


async def test_wait_for_can_be_cancelled() -> None:
    fake = FakeScale()
    with anyio.fail_after(10):  # a wait that ignored cancellation would hold on for 60 s
        with anyio.move_on_after(0.05) as scope:
            await fake.wait_for("run", timeout=60)
    assert scope.cancelled_caught


async def test_wait_for_refuses_a_bad_count() -> None:
    with pytest.raises(ValueError, match=r"^count must be at least 1, not 0$"):
        await FakeScale().wait_for("run", count=0)


def test_wait_for_sync_waits_on_a_served_fake() -> None:
    fake = FakeScale()
    with fake.serve() as url:
        thread = threading.Thread(target=httpx.get, args=(f"{url}/workflow",))
        thread.start()
        recorded = fake.wait_for_sync("workflow")
        thread.join()
        with pytest.raises(TimeoutError) as raised:
            fake.wait_for_sync("workflow", count=2, timeout=0.05)
    assert recorded.path == "/workflow"
    assert str(raised.value) == "waited 0.05 s for 2 'workflow' request(s); 1 arrived"


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workflow": []}, "workflow must be a JSON object, not an array"),
        ({"workflow": {"tasks": {}}}, "workflow.tasks must be a list"),
        (
            {"workflow": {"tasks": [{"task_id": 0, "task_data": {"name": ""}}]}},
            "workflow.tasks[0].task_data.name must be a non-empty string",
        ),
        (
            {"workflow": {"tasks": [{"task_id": "0", "task_data": {"name": "x"}}]}},
            "workflow.tasks[0].task_id must be a non-negative integer",
        ),
        (
            {
                "workflow": {
                    "tasks": [{"task_id": 0, "task_data": {"name": "x", "parameters": [1]}}]
                }
            },
            "workflow.tasks[0].task_data.parameters must be a list of {name, value} objects",
        ),
        ({"workflow": {"tasks": [], "connections": {}}}, "workflow.connections must be a list"),
        (
            {"outputs": [{"image": "a", "text": "b"}]},
            "outputs[0] must be a JSON object with exactly one key (its kind)",
        ),
        ({"polls_before_done": -1}, "polls_before_done must be a non-negative number, not -1"),
        ({"latency": True}, "latency must be a non-negative number, not True"),
        ({"next_poll_in": -5}, "next_poll_in must be a non-negative number, not -5"),
        ({"etas": [[1, 2, 3]]}, "etas[0] must be a pair [lower_ms, upper_ms] of integers or None"),
        ({"etas": [[1.5, 2]]}, "etas[0] must be a pair [lower_ms, upper_ms] of integers or None"),
        ({"etas": []}, "etas must not be empty"),
    ],
)
def test_bad_options_are_refused_with_a_message(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FakeScale(**options)


def test_the_workflow_is_copied() -> None:
    workflow = default_workflow()
    fake = FakeScale(workflow)
    workflow["tasks"].clear()
    assert fake.workflow == default_workflow()


def test_the_default_workflow_has_one_image_task() -> None:
    workflow = default_workflow()
    (task,) = workflow["tasks"]
    assert task["task_id"] == 0
    assert task["task_data"]["name"] == "infer_demo"
    assert task["task_data"]["parameters"] == [
        {"name": "strength", "value": "1.0"},
        {"name": "prompt", "value": ""},
    ]
    assert workflow["connections"] == [
        {"source_id": -1, "source_index": 0, "target_id": 0, "target_index": 0}
    ]
    assert default_workflow() is not workflow


# -- serving -----------------------------------------------------------------------


def test_serve_listens_on_loopback_and_stops_on_exit() -> None:
    fake = FakeScale()
    with fake.serve() as url:
        assert url.startswith("http://127.0.0.1:")
        answer = httpx.get(f"{url}/v1/projects/jwt/?endpoint={url}", headers=TOKEN_HEADERS)
        assert answer.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/workflow")


def test_serve_on_a_given_port() -> None:
    port = _free_port()
    with FakeScale().serve(port=port) as url:
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/workflow").status_code == 401


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_line_server_answers_then_stops_on_a_signal(signum: int) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ikproxy.testing", "--port", str(port)]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True) as process:

        def read_lines() -> None:
            for line in process.stdout or ():
                lines.put(line)
            lines.put("")  # end of output: the process is gone

        reader = threading.Thread(target=read_lines)
        reader.start()
        try:
            # The first line is printed once the server accepts connections.
            announced = lines.get(timeout=30)
            assert announced == f"Fake Ikomia SCALE server running on {url} (Ctrl-C to stop)\n"
            answer = httpx.get(
                f"{url}/v1/projects/jwt/",
                params={"endpoint": url, "storage": "true"},
                headers=TOKEN_HEADERS,
            )
            assert answer.status_code == 200
            assert answer.json()["expires_in"] == 3600
        finally:
            process.send_signal(signum)
            returncode = process.wait(timeout=30)
            reader.join(timeout=30)
            stderr = process.stderr.read() if process.stderr else ""
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


def test_command_line_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ikproxy.testing", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"cannot listen on 127.0.0.1:{port}: ")


def test_command_line_refuses_a_bad_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ikproxy.testing", "--polls", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.endswith("error: polls_before_done must be a non-negative number, not -1\n")


# -- the pytest plugin ------------------------------------------------------------


def test_the_pytest_plugin_gives_fixtures_and_a_marker(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["ikproxy.testing.pytest_plugin"]')
    pytester.makepyfile(
        """
        import httpx
        import pytest

        def test_fake_scale_is_fresh(fake_scale):
            assert fake_scale.requests == []
            assert fake_scale.polls_before_done == 2

        @pytest.mark.fake_scale(token="t0k", legacy=True)
        def test_marker_options(fake_scale):
            assert (fake_scale.token, fake_scale.legacy) == ("t0k", True)

        def test_url_serves_the_same_fake(fake_scale, fake_scale_url):
            answer = httpx.get(fake_scale_url + "/workflow")
            assert answer.status_code == 401
            assert fake_scale.count("workflow") == 1
        """
    )
    result = pytester.runpytest_inprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
