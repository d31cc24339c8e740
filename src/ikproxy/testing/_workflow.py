"""The workflow a fake deployment describes, and the checks a real one makes on a run body.

Pure functions and data: no I/O. `WorkflowIndex.check_run` raises `BadRunRequest`
with the message the fake sends back in its 400 answer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = ["BadRunRequest", "WorkflowIndex", "default_workflow"]


def default_workflow(input_type: str = "IODataType.IMAGE") -> dict[str, Any]:
    """A one-task workflow: image in (or `input_type`, e.g. `IODataType.VIDEO`), image
    out, parameters `strength` and `prompt`."""
    return {
        "api": {"version": "1.0"},
        "metadata": {
            "name": "fake_demo",
            "description": "A one-task workflow served by ikproxy's fake SCALE server.",
            "keywords": "fake,demo",
        },
        "tasks": [
            {
                "task_id": 0,
                "task_data": {
                    "name": "infer_demo",
                    "parameters": [
                        {"name": "strength", "value": "1.0"},
                        {"name": "prompt", "value": ""},
                    ],
                    "inputs": [{"name": input_type}],
                    "outputs": [{"name": "IODataType.IMAGE"}],
                },
            }
        ],
        "connections": [{"source_id": -1, "source_index": 0, "target_id": 0, "target_index": 0}],
    }


class BadRunRequest(ValueError):
    """A run body the deployment refuses; the message is the one sent in the 400 answer."""


@dataclass(frozen=True)
class _Task:
    name: str
    parameters: tuple[str, ...]
    n_outputs: int


class WorkflowIndex:
    """A workflow's tasks by name, built once; `ValueError` if the workflow is malformed."""

    def __init__(self, workflow: Any) -> None:
        if not isinstance(workflow, Mapping):
            raise ValueError(f"workflow must be a JSON object, not {_json_type(workflow)}")
        tasks = workflow.get("tasks")
        if not isinstance(tasks, list):
            raise ValueError("workflow.tasks must be a list")
        connections = workflow.get("connections", [])
        if not isinstance(connections, list):
            raise ValueError("workflow.connections must be a list")
        self.by_name: dict[str, list[_Task]] = {}
        for i, task in enumerate(tasks):
            parsed = _parse_task(task, f"workflow.tasks[{i}]")
            self.by_name.setdefault(parsed.name, []).append(parsed)

    def check_run(self, body: Any) -> None:
        """Refuse a run body as a real deployment would (`BadRunRequest` saying why)."""
        if not isinstance(body, Mapping):
            raise BadRunRequest("the run request must be a JSON object")
        self._check_inputs(body.get("inputs", []))
        self._check_outputs(body.get("outputs"))
        self._check_parameters(body.get("parameters", []))

    # -- parts of a run body ---------------------------------------------------

    def _check_inputs(self, inputs: Any) -> None:
        if not isinstance(inputs, list):
            raise BadRunRequest("inputs must be a list")
        for i, item in enumerate(inputs):
            if not isinstance(item, Mapping) or len(item) != 1:
                raise BadRunRequest(
                    f"inputs[{i}] must be a JSON object with exactly one key (its kind)"
                )
            if "image" in item:
                _check_base64(item["image"], f"inputs[{i}].image")

    def _check_outputs(self, outputs: Any) -> None:
        if outputs is None or outputs == []:
            raise BadRunRequest("at least one output must be named")
        if not isinstance(outputs, list):
            raise BadRunRequest("outputs must be a list")
        for i, item in enumerate(outputs):
            where = f"outputs[{i}]"
            if not isinstance(item, Mapping):
                raise BadRunRequest(f"{where} must be a JSON object")
            task = self._task(item, where)
            index = item.get("output_index", 0)
            if not _is_index(index):
                raise BadRunRequest(f"{where}.output_index must be a non-negative integer")
            if index >= task.n_outputs:
                raise BadRunRequest(
                    f"task {task.name!r} has no output {index}: it has {task.n_outputs} output(s)"
                )
            if not isinstance(item.get("save_temporary", False), bool):
                raise BadRunRequest(f"{where}.save_temporary must be a boolean")

    def _check_parameters(self, parameters: Any) -> None:
        if not isinstance(parameters, list):
            raise BadRunRequest("parameters must be a list")
        for i, item in enumerate(parameters):
            where = f"parameters[{i}]"
            if not isinstance(item, Mapping):
                raise BadRunRequest(f"{where} must be a JSON object")
            task = self._task(item, where)
            values = item.get("parameters")
            if not isinstance(values, Mapping):
                raise BadRunRequest(f"{where}.parameters must be a JSON object")
            for name, value in values.items():
                if name not in task.parameters:
                    valid = ", ".join(sorted(task.parameters)) or "none"
                    raise BadRunRequest(
                        f"unknown parameter {name!r} for task {task.name!r}: "
                        f"valid parameters are {valid}"
                    )
                if not isinstance(value, str):
                    raise BadRunRequest(
                        f"parameter {name!r} of task {task.name!r} must be a string, "
                        f"not {_json_type(value)}"
                    )

    def _task(self, item: Mapping[str, Any], where: str) -> _Task:
        """The task an output or parameter entry names by `task_name` and `task_index`."""
        name = item.get("task_name")
        if not isinstance(name, str):
            raise BadRunRequest(f"{where}.task_name must be a string")
        same_name = self.by_name.get(name)
        if not same_name:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise BadRunRequest(f"unknown task {name!r}: the workflow's tasks are {known}")
        index = item.get("task_index", 0)
        if not _is_index(index):
            raise BadRunRequest(f"{where}.task_index must be a non-negative integer")
        if index >= len(same_name):
            raise BadRunRequest(
                f"task {name!r} has no index {index}: "
                f"the workflow has {len(same_name)} task(s) of that name"
            )
        return same_name[index]


def _parse_task(task: Any, where: str) -> _Task:
    if not isinstance(task, Mapping):
        raise ValueError(f"{where} must be a JSON object")
    if not _is_index(task.get("task_id")):
        raise ValueError(f"{where}.task_id must be a non-negative integer")
    data = task.get("task_data")
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}.task_data must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.task_data.name must be a non-empty string")
    parameters = data.get("parameters", [])
    if not isinstance(parameters, list) or not all(
        isinstance(p, Mapping) and isinstance(p.get("name"), str) for p in parameters
    ):
        raise ValueError(f"{where}.task_data.parameters must be a list of {{name, value}} objects")
    outputs = data.get("outputs", [])
    if not isinstance(outputs, list):
        raise ValueError(f"{where}.task_data.outputs must be a list")
    return _Task(name, tuple(p["name"] for p in parameters), len(outputs))


def _check_base64(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise BadRunRequest(f"{where} must be a base64 string, not {_json_type(value)}")
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise BadRunRequest(f"{where} is not valid base64") from None


def _is_index(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "an array"
    return type(value).__name__
