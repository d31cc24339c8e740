"""The SCALE protocol without I/O: poll schedule, workflow, parameters, run body, answers."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from ikproxy import ImageIO, InvalidParameter, TaskIO, UpstreamError, WorkflowFailed
from ikproxy.deployments.scale.protocol import (
    MAX_POLLS,
    Answer,
    Workflow,
    encode_parameters,
    parse_poll_answer,
    parse_run_answer,
    run_body,
    scale_poll_schedule,
)
from ikproxy.testing import TINY_PNG, default_workflow

# -- the fallback poll schedule ------------------------------------------------


@pytest.mark.parametrize(
    ("n", "seconds"),
    [(0, 0.219), (1, 0.295), (5, 0.948), (10, 3.648), (14, 8.511), (15, 10.0), (16, 11.488),
     (20, 16.351), (30, 19.780), (99, 19.999)],
)  # fmt: skip
def test_schedule_values(n: int, seconds: float) -> None:
    assert scale_poll_schedule(n) == seconds


def test_schedule_is_the_logistic_curve_in_whole_milliseconds() -> None:
    for n in range(MAX_POLLS):
        expected_ms = int(20000 / (1 + math.exp(-0.3 * (n - 15))))
        assert scale_poll_schedule(n) == expected_ms / 1000


def test_schedule_grows_to_twenty_seconds() -> None:
    delays = [scale_poll_schedule(n) for n in range(MAX_POLLS)]
    assert delays == sorted(delays)
    assert max(delays) < 20.0
    assert MAX_POLLS == 100


# -- workflow ------------------------------------------------------------------


def _task(task_id: int, name: str, parameters: tuple[str, ...] = (), outputs: int = 1) -> dict:
    return {
        "task_id": task_id,
        "task_data": {
            "name": name,
            "parameters": [{"name": p, "value": ""} for p in parameters],
            "inputs": [{"name": "IODataType.IMAGE"}],
            "outputs": [{"name": "IODataType.IMAGE"}] * outputs,
        },
    }


def _link(source: int, target: int) -> dict:
    return {"source_id": source, "source_index": 0, "target_id": target, "target_index": 0}


# resize -> infer_x (0) -> caption ; resize -> infer_x (1) (final) ; caption is final too
BRANCHED = {
    "metadata": {"name": "branched"},
    "tasks": [
        _task(0, "resize", ("size",)),
        _task(1, "infer_x", ("conf",)),
        _task(2, "infer_x", ("conf", "iou"), outputs=2),
        _task(3, "caption", outputs=0),
    ],
    "connections": [_link(-1, 0), _link(0, 1), _link(0, 2), _link(1, 3)],
}


def test_default_workflow_runs_its_only_task() -> None:
    task = Workflow.from_json(default_workflow()).resolve()
    assert (task.name, task.index, task.parameters, task.outputs) == (
        "infer_demo",
        0,
        ("strength", "prompt"),
        1,
    )


def test_default_task_is_the_first_final_task() -> None:
    workflow = Workflow.from_json(BRANCHED)
    assert workflow.final_ids == (2, 3)
    task = workflow.resolve()
    assert (task.task_id, task.name, task.index) == (2, "infer_x", 1)


def test_task_by_name_and_index() -> None:
    workflow = Workflow.from_json(BRANCHED)
    assert workflow.resolve("infer_x").task_id == 1
    assert workflow.resolve("infer_x", 0).task_id == 1
    assert workflow.resolve("infer_x", 1).task_id == 2
    assert workflow.resolve("caption").task_id == 3


@pytest.mark.parametrize(
    ("task", "task_index", "message"),
    [
        ("nope", None, "unknown task 'nope'; valid tasks: 'caption', 'infer_x', 'resize'"),
        ("infer_x", 2, "task_index 2 out of range: the workflow has 2 task(s) named 'infer_x'"),
        ("resize", 1, "task_index 1 out of range: the workflow has 1 task(s) named 'resize'"),
        ("infer_x", -1, "task_index must be an integer >= 0, not -1"),
        ("infer_x", True, "task_index must be an integer >= 0, not True"),
        (None, 1, "task_index needs a task name (task=...)"),
        (3, None, "task must be a task name, not int"),
    ],
)
def test_bad_task_selection(task: Any, task_index: Any, message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        Workflow.from_json(BRANCHED).resolve(task, task_index)
    assert str(caught.value) == message


def test_workflow_without_tasks_has_nothing_to_run() -> None:
    with pytest.raises(UpstreamError) as caught:
        Workflow.from_json({"tasks": [], "connections": []}).resolve()
    assert str(caught.value) == "the deployment's workflow has no final task to run"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "workflow",
        {},
        {"tasks": None},
        {"tasks": [{"task_id": 0}]},
        {"tasks": [{"task_id": "0", "task_data": {"name": "x"}}]},
        {"tasks": [{"task_id": 0, "task_data": {"name": 7}}]},
        {"tasks": [{"task_id": 0, "task_data": {"name": "x", "parameters": [{"value": 1}]}}]},
        {"tasks": [{"task_id": 0, "task_data": {"name": "x"}}], "connections": [{}]},
    ],
)
def test_unreadable_workflow(body: Any) -> None:
    with pytest.raises(UpstreamError) as caught:
        Workflow.from_json(body)
    assert str(caught.value) == "the deployment sent a workflow description ikproxy cannot read"


def test_minimal_workflow_is_read() -> None:
    workflow = Workflow.from_json({"tasks": [{"task_id": 5, "task_data": {"name": "x"}}]})
    task = workflow.resolve()
    assert (task.task_id, task.parameters, task.outputs) == (5, (), 0)


# -- outputs -------------------------------------------------------------------


def test_outputs_default_to_all_outputs_of_the_task() -> None:
    workflow = Workflow.from_json(BRANCHED)
    target = workflow.resolve()
    assert workflow.outputs(target, None) == [{"task_name": "infer_x", "task_index": 1}]


def test_outputs_by_index_name_and_pair() -> None:
    workflow = Workflow.from_json(BRANCHED)
    target = workflow.resolve()  # infer_x #1, two outputs
    assert workflow.outputs(target, [1, "caption", ("resize", 0), 1, ("infer_x", 0)]) == [
        {"task_name": "infer_x", "task_index": 1, "output_index": 1},
        {"task_name": "caption", "task_index": 0},
        {"task_name": "resize", "task_index": 0, "output_index": 0},
        {"task_name": "infer_x", "task_index": 1, "output_index": 0},
    ]


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([], "outputs must name at least one output"),
        ("caption", "outputs must be a list of output indexes, task names or pairs"),
        ([2], "output index 2 out of range: task 'infer_x' has 2 output(s)"),
        ([("resize", 1)], "output index 1 out of range: task 'resize' has 1 output(s)"),
        ([-1], "an output index must be an integer >= 0, not -1"),
        ([("resize", "0")], "an output index must be an integer >= 0, not '0'"),
        (["nope"], "unknown task 'nope'; valid tasks: 'caption', 'infer_x', 'resize'"),
        ([True], "invalid output True: expected an output index, a task name "
                 "or a (task name, output index) pair"),
        ([("a", 1, 2)], "invalid output ('a', 1, 2): expected an output index, a task name "
                        "or a (task name, output index) pair"),
    ],
)  # fmt: skip
def test_bad_outputs(outputs: Any, message: str) -> None:
    workflow = Workflow.from_json(BRANCHED)
    with pytest.raises(InvalidParameter) as caught:
        workflow.outputs(workflow.resolve(), outputs)
    assert str(caught.value) == message


def test_output_index_unchecked_when_the_workflow_lists_no_outputs() -> None:
    workflow = Workflow.from_json(BRANCHED)
    caption = workflow.resolve("caption")
    assert workflow.outputs(caption, [4]) == [
        {"task_name": "caption", "task_index": 0, "output_index": 4}
    ]


# -- parameters ----------------------------------------------------------------


def test_parameter_values_are_sent_as_strings() -> None:
    task = Workflow.from_json(BRANCHED).resolve()  # conf, iou
    assert encode_parameters(task, {"conf": 0.5, "iou": "0.45"}) == {"conf": "0.5", "iou": "0.45"}
    assert encode_parameters(task, {"conf": True, "iou": False}) == {"conf": "true", "iou": "false"}
    assert encode_parameters(task, {"conf": 3, "iou": 10**20}) == {
        "conf": "3",
        "iou": "100000000000000000000",
    }
    assert encode_parameters(task, {"conf": 0.1, "iou": 1e-7}) == {"conf": "0.1", "iou": "1e-07"}
    assert encode_parameters(task, {"conf": Fraction(1, 4), "iou": ""}) == {
        "conf": "0.25",
        "iou": "",
    }


def test_no_parameters() -> None:
    task = Workflow.from_json(BRANCHED).resolve()
    assert encode_parameters(task, None) == {}
    assert encode_parameters(task, {}) == {}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"nope": 1},
         "unknown parameter 'nope' for task 'infer_x'; valid parameters: 'conf', 'iou'"),
        ({"b": 1, "conf": 1, "a": 2},
         "unknown parameters 'a', 'b' for task 'infer_x'; valid parameters: 'conf', 'iou'"),
        ({"conf": None}, "parameter 'conf' must be a string, a number or a bool, not NoneType"),
        ({"conf": [1]}, "parameter 'conf' must be a string, a number or a bool, not list"),
        ({"conf": Decimal("0.5")},
         "parameter 'conf' must be a string, a number or a bool, not Decimal"),
        ({"conf": math.nan}, "parameter 'conf' must be a finite number, not nan"),
        ({"conf": -math.inf}, "parameter 'conf' must be a finite number, not -inf"),
        (["conf"], "parameters must be a mapping, not list"),
    ],
)  # fmt: skip
def test_bad_parameters(parameters: Any, message: str) -> None:
    task = Workflow.from_json(BRANCHED).resolve()
    with pytest.raises(InvalidParameter) as caught:
        encode_parameters(task, parameters)
    assert str(caught.value) == message


def test_unknown_parameter_of_a_task_without_parameters() -> None:
    task = Workflow.from_json(BRANCHED).resolve("caption")
    with pytest.raises(InvalidParameter) as caught:
        encode_parameters(task, {"x": 1})
    assert str(caught.value) == "unknown parameter 'x' for task 'caption'; it has no parameters"


# -- the run body --------------------------------------------------------------


def test_run_body() -> None:
    workflow = Workflow.from_json(BRANCHED)
    target = workflow.resolve()
    image = ImageIO(TINY_PNG)
    body = run_body(
        [image, TaskIO("text", {"a": 1})],
        workflow.outputs(target, None),
        target,
        {"conf": "0.5"},
    )
    assert body == {
        "inputs": [{"image": image.to_base64()}, {"text": {"a": 1}}],
        "outputs": [{"task_name": "infer_x", "task_index": 1}],
        "parameters": [{"task_name": "infer_x", "task_index": 1, "parameters": {"conf": "0.5"}}],
    }


def test_run_body_without_parameters() -> None:
    target = Workflow.from_json(default_workflow()).resolve()
    body = run_body([], [{"task_name": "infer_demo", "task_index": 0}], target, {})
    assert body["parameters"] == []


# -- answers -------------------------------------------------------------------


def test_run_answer_with_advice() -> None:
    body = {
        "uuid": "u-1",
        "state": "PENDING",
        "eta": [1000, 2000],
        "next_poll_in": 250,
        "next_poll_long": True,
    }
    assert parse_run_answer(body) == Answer(
        "PENDING", (1000, 2000), uuid="u-1", next_poll_in=0.25, next_poll_long=True
    )


def test_legacy_run_answer_is_a_bare_uuid() -> None:
    assert parse_run_answer("u-2") == Answer("PENDING", (None, None), uuid="u-2")


@pytest.mark.parametrize("body", [None, "", 3, [], {}, {"uuid": 1}, {"uuid": ""}])
def test_unreadable_run_answer(body: Any) -> None:
    with pytest.raises(UpstreamError) as caught:
        parse_run_answer(body)
    assert (
        str(caught.value) == "the deployment sent an answer to the run request ikproxy cannot read"
    )


def test_poll_answer_done() -> None:
    image = ImageIO(TINY_PNG)
    body = {"results": [image.to_json(), {"object_detection": {"n": 1}}], "state": "SUCCESS"}
    answer = parse_poll_answer(200, body | {"eta": [0, 0]})
    assert answer == Answer(
        "SUCCESS", (0, 0), outputs=(image, TaskIO("object_detection", {"n": 1}))
    )


def test_poll_answer_done_without_state() -> None:
    assert parse_poll_answer(200, {"results": []}) == Answer("SUCCESS", outputs=())


def test_legacy_poll_answer_done_is_a_bare_list() -> None:
    assert parse_poll_answer(200, [{"text": "hi"}]) == Answer(
        "SUCCESS", outputs=(TaskIO("text", "hi"),)
    )


def test_poll_answer_not_done() -> None:
    body = {"state": "STARTED", "eta": [None, 900], "next_poll_in": 20, "next_poll_long": False}
    assert parse_poll_answer(202, body) == Answer("STARTED", (None, 900), next_poll_in=0.02)


@pytest.mark.parametrize("body", [None, "PENDING", ""])
def test_legacy_poll_answer_not_done(body: Any) -> None:
    assert parse_poll_answer(202, body) == Answer("PENDING")


@pytest.mark.parametrize(
    ("advice", "delay", "long"),
    [
        ({"next_poll_in": 1500, "next_poll_long": True}, 1.5, True),
        ({"next_poll_in": 0}, 0.0, False),
        ({"next_poll_in": -5, "next_poll_long": True}, 0.0, True),
        ({"next_poll_in": 12.5}, 0.0125, False),
        ({"next_poll_in": None, "next_poll_long": True}, None, False),
        ({"next_poll_in": True}, None, False),
        ({"next_poll_in": "20"}, None, False),
        ({"next_poll_in": math.inf}, None, False),
        ({"next_poll_long": True}, None, False),
        ({"next_poll_in": 10, "next_poll_long": "yes"}, 0.01, False),
    ],
)
def test_poll_advice(advice: dict, delay: float | None, long: bool) -> None:
    answer = parse_poll_answer(202, {"state": "STARTED"} | advice)
    assert (answer.next_poll_in, answer.next_poll_long) == (delay, long)


@pytest.mark.parametrize("eta", ["soon", [1], [1, 2, 3], ["a", 1], [math.nan, 1], {"a": 1}])
def test_an_odd_eta_is_unknown_not_fatal(eta: Any) -> None:
    assert parse_poll_answer(202, {"state": "STARTED", "eta": eta}).eta == (None, None)


def test_missing_state_defaults_to_pending() -> None:
    assert parse_poll_answer(202, {"eta": [1, 2]}).state == "PENDING"


def test_failure_state_raises_workflow_failed() -> None:
    with pytest.raises(WorkflowFailed) as caught:
        parse_poll_answer(200, {"state": "FAILURE", "message": "CUDA out of memory"})
    assert str(caught.value) == "CUDA out of memory"
    with pytest.raises(WorkflowFailed) as caught:
        parse_poll_answer(202, {"state": "FAILURE"})
    assert str(caught.value) == "the workflow failed"


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, None, "the deployment sent an answer to the poll ikproxy cannot read"),
        (200, "done", "the deployment sent an answer to the poll ikproxy cannot read"),
        (202, 42, "the deployment sent an answer to the poll ikproxy cannot read"),
        (200, {"results": {"image": "x"}}, "the deployment sent results ikproxy cannot read"),
        (200, {"results": [{"a": 1, "b": 2}]}, "the deployment sent results ikproxy cannot read"),
        (200, [{"image": 5}], "the deployment sent results ikproxy cannot read"),
    ],
)
def test_unreadable_poll_answer(status: int, body: Any, message: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        parse_poll_answer(status, body)
    assert str(caught.value) == message
