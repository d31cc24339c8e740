"""CeleryDeployment on the web side: registration as Celery tasks, and every refusal before a run.

No broker and no Redis: refusals come before either is touched (the store here
points at a closed port, so that a test that reached it would fail).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from starlette.testclient import TestClient

from ikproxy.asgi import create_app
from ikproxy.deployments import SupportsRunLog
from ikproxy.deployments.celery import CeleryDeployment, Update
from ikproxy.errors import InvalidInput, InvalidParameter
from ikproxy.io import FileIO, TaskIO
from ikproxy.stores import RedisStore

CLOSED = "redis://127.0.0.1:1/0"


def _deployment(**options: Any) -> CeleryDeployment:
    app = Celery("unit", broker=CLOSED)
    return CeleryDeployment(app, store=RedisStore(CLOSED, timeout=0.5), **options)


def _check(value: int) -> None:
    if value > 3:
        raise InvalidParameter("value must be at most 3")


@pytest.fixture
def deployment() -> CeleryDeployment:
    deployment = _deployment()

    @deployment.task
    def steps(*, n: int = 2) -> Iterator[Any]:
        yield Update(fraction=0.5)
        yield {"text": str(n)}

    @deployment.task("gpu_task", queue="gpu", validate=lambda *, value: _check(value))
    def echo(*, value: int) -> dict[str, Any]:
        return {"text": str(value)}

    return deployment


def test_tasks_are_registered_in_the_celery_app(deployment: CeleryDeployment) -> None:
    assert deployment.task_names == ("steps", "gpu_task")
    assert isinstance(deployment, SupportsRunLog)
    tasks = deployment.app.tasks
    assert deployment.celery_task_name("steps") == "ikproxy.celery.steps"
    assert "ikproxy.celery.steps" in tasks
    assert tasks["ikproxy.celery.steps"].ignore_result is True
    assert tasks["ikproxy.celery.steps"].acks_late is False
    assert repr(deployment) == "<CeleryDeployment 'celery' tasks=['steps', 'gpu_task']>"
    with pytest.raises(ValueError, match="task 'steps' is already registered"):
        deployment.add_task(lambda: None, "steps")


def test_broker_waits_are_bounded_by_the_publish_timeout() -> None:
    deployment = _deployment(publish_timeout=1.5)
    conf = deployment.app.conf
    assert conf.broker_transport_options["socket_connect_timeout"] == 1.5
    assert conf.broker_connection_timeout == 1.5


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("timeout", 0, "timeout must be a number of seconds > 0, not 0"),
        ("queue_timeout", -1.0, "queue_timeout must be a number of seconds > 0, not -1.0"),
        ("publish_timeout", True, "publish_timeout must be a number of seconds > 0, not True"),
        ("log_ttl", "60", "log_ttl must be a number of seconds > 0, not '60'"),
        ("output_window", 0, "output_window must be a number of seconds > 0, not 0"),
    ],
)
def test_options_are_checked(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        _deployment(**{option: value})


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"task": "nope"}, InvalidParameter, "unknown task 'nope'; valid tasks: gpu_task, steps"),
        (
            {"parameters": {"m": 1}},
            InvalidParameter,
            "unknown parameter 'm' for task 'steps'; valid parameters: n",
        ),
        (
            {"inputs": (TaskIO("text", "x"),)},
            InvalidParameter,
            "task 'steps' takes no inputs, got 1",
        ),
        (
            {"parameters": {"n": object()}},
            InvalidParameter,
            "the parameters of a Celery run must be JSON values",
        ),
        (
            {"task": "gpu_task", "parameters": {"value": 4}},
            InvalidParameter,
            "value must be at most 3",
        ),
        (
            {"task": "gpu_task"},
            InvalidParameter,
            "task 'gpu_task' is missing required parameter 'value'",
        ),
    ],
)
@pytest.mark.anyio
async def test_a_refused_run_raises_before_the_store_or_the_broker(
    deployment: CeleryDeployment, call: dict[str, Any], error: type[Exception], message: str
) -> None:
    inputs = call.pop("inputs", ())
    stream = deployment.run_stream(*inputs, **call)
    with pytest.raises(error, match=f"^{message}$"):
        await stream.__anext__()
    await stream.aclose()


@pytest.mark.anyio
async def test_a_file_input_is_refused(tmp_path: Path) -> None:
    deployment = _deployment()

    @deployment.task
    def video(clip: FileIO) -> None:
        return None

    (tmp_path / "a.mp4").write_bytes(b"x")
    stream = deployment.run_stream(FileIO(tmp_path / "a.mp4"))
    message = "input 0 is a file: a Celery task takes inline inputs only"
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$"):
        await stream.__anext__()
    await stream.aclose()


def test_the_proxy_answers_refusals_and_an_unreachable_store_before_the_stream(
    deployment: CeleryDeployment,
) -> None:
    app = create_app(deployment, task="steps", parameters={"n": int, "m": int}, rate_limit=None)
    with TestClient(app) as client:
        refused = client.get("/run", params={"m": 1})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_parameter"
        unreachable = client.get("/run", params={"n": 1})
        assert unreachable.status_code == 503
        assert unreachable.headers["retry-after"] == "1"
        assert unreachable.json()["error"]["code"] == "store_unavailable"
        assert "127.0.0.1" not in unreachable.text
