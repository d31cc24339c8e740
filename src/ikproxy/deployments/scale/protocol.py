"""The SCALE deployment protocol without I/O: workflow, run body, answers, poll schedule.

Everything here is a pure function of JSON values, so every edge case is tested
without a network. The HTTP side lives in `_scale_http`, the run loop in `scale`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ikproxy.errors import InvalidInput, InvalidParameter, UpstreamError, WorkflowFailed
from ikproxy.io import BaseIO, io_from_json
from ikproxy.model import Eta, State, parse_eta

__all__ = [
    "MAX_POLLS",
    "STORED_DATA_TYPES",
    "Answer",
    "OutputSpec",
    "Task",
    "Workflow",
    "encode_parameters",
    "infer_data_type",
    "parse_poll_answer",
    "parse_run_answer",
    "run_body",
    "scale_poll_schedule",
]

MAX_POLLS = 100
"""Polls made without advice from the deployment before giving up, as the official client."""

OutputSpec = Union[int, str, tuple[str, int]]
"""An output to ask for: an output index of the run's task, a task name (all its
outputs), or a `(task name, output index)` pair."""


def scale_poll_schedule(n: int) -> float:
    """Seconds to wait before poll `n` (from 0) when the deployment gives no advice.

    The official client's logistic curve, `20000 / (1 + e^(-0.3 (n - 15)))` ms
    truncated to whole milliseconds: about 0.2 s at first, 10 s at poll 15, then 20 s.
    """
    return int(20000 / (1.0 + math.exp(-0.3 * (n - 15)))) / 1000


# -- workflow -----------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One task of a workflow, addressed on the wire by `(name, index)`."""

    task_id: int
    name: str
    index: int  # rank among the tasks of the same name
    parameters: tuple[str, ...]
    outputs: int  # how many outputs the workflow lists for it


class Workflow:
    """The parts of `GET /workflow` a run needs: tasks, their parameters, final tasks."""

    def __init__(
        self,
        tasks: Sequence[Task],
        final_ids: Sequence[int],
        input_types: Sequence[str | None] = (),
    ) -> None:
        self.tasks = tuple(tasks)
        self.final_ids = tuple(final_ids)
        #: The data type of each workflow input, in order (`"image"`, `"video"`,
        #: `"file_path"`, `"folder_path"`, ...), None where the workflow says nothing.
        self.input_types = tuple(input_types)

    @classmethod
    def from_json(cls, obj: Any) -> Workflow:
        """Parse a workflow description; `UpstreamError` if it is not one."""
        try:
            return cls._parse(obj)
        except (KeyError, TypeError, ValueError):
            raise UpstreamError(
                "the deployment sent a workflow description ikproxy cannot read"
            ) from None

    @classmethod
    def _parse(cls, obj: Any) -> Workflow:
        tasks: list[Task] = []
        seen: dict[str, int] = {}
        for raw in obj["tasks"]:
            data = raw["task_data"]
            name = data["name"]
            task_id = raw["task_id"]
            if not isinstance(name, str) or not _is_int(task_id):
                raise TypeError
            parameters = tuple(_name_of(p) for p in data.get("parameters") or ())
            outputs = len(data.get("outputs") or ())
            tasks.append(Task(task_id, name, seen.get(name, 0), parameters, outputs))
            seen[name] = seen.get(name, 0) + 1
        connections = obj.get("connections") or ()
        sources = {c["source_id"] for c in connections}
        finals = [t.task_id for t in tasks if t.task_id not in sources]
        inputs_of = {raw["task_id"]: raw["task_data"].get("inputs") or () for raw in obj["tasks"]}
        input_types = [
            _input_type(inputs_of.get(c["target_id"], ()), c.get("target_index"))
            for c in connections
            if c["source_id"] == -1
        ]
        return cls(tasks, finals, input_types)

    def resolve(self, task: str | None = None, task_index: int | None = None) -> Task:
        """The task a run targets: by name and rank, or the first final task."""
        if task_index is not None and (not _is_int(task_index) or task_index < 0):
            raise InvalidParameter(f"task_index must be an integer >= 0, not {task_index!r}")
        if task is None:
            if task_index is not None:
                raise InvalidParameter("task_index needs a task name (task=...)")
            for candidate in self.tasks:
                if candidate.task_id in self.final_ids:
                    return candidate
            raise UpstreamError("the deployment's workflow has no final task to run")
        if not isinstance(task, str):
            raise InvalidParameter(f"task must be a task name, not {type(task).__name__}")
        named = [t for t in self.tasks if t.name == task]
        if not named:
            valid = ", ".join(repr(n) for n in sorted({t.name for t in self.tasks}))
            raise InvalidParameter(f"unknown task {task!r}; valid tasks: {valid}")
        index = task_index or 0
        if index >= len(named):
            raise InvalidParameter(
                f"task_index {index} out of range: the workflow has {len(named)} task(s) "
                f"named {task!r}"
            )
        return named[index]

    def outputs(self, target: Task, specs: Sequence[OutputSpec] | None) -> list[dict[str, Any]]:
        """The `outputs` of a run body: all outputs of `target` unless `specs` names some."""
        if specs is None:
            return [_output(target, None)]
        if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
            raise InvalidParameter("outputs must be a list of output indexes, task names or pairs")
        wanted: list[dict[str, Any]] = []
        for spec in specs:
            if isinstance(spec, str):
                entry = _output(self._named(spec, target), None)
            elif _is_int(spec):
                entry = _output(target, self._checked_index(target, spec))
            elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
                task = self._named(spec[0], target)
                entry = _output(task, self._checked_index(task, spec[1]))
            else:
                raise InvalidParameter(
                    f"invalid output {spec!r}: expected an output index, a task name "
                    "or a (task name, output index) pair"
                )
            if entry not in wanted:
                wanted.append(entry)
        if not wanted:
            raise InvalidParameter("outputs must name at least one output")
        return wanted

    def _named(self, name: str, target: Task) -> Task:
        return target if name == target.name else self.resolve(name)

    @staticmethod
    def _checked_index(task: Task, index: Any) -> int:
        if not _is_int(index) or index < 0:
            raise InvalidParameter(f"an output index must be an integer >= 0, not {index!r}")
        if task.outputs and index >= task.outputs:
            raise InvalidParameter(
                f"output index {index} out of range: task {task.name!r} has "
                f"{task.outputs} output(s)"
            )
        return int(index)


def _output(task: Task, output_index: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"task_name": task.name, "task_index": task.index}
    if output_index is not None:
        entry["output_index"] = output_index
    return entry


def _input_type(inputs: Sequence[Any], index: Any) -> str | None:
    """`IODataType.VIDEO` -> `"video"`; None when the workflow does not say."""
    if not _is_int(index) or not 0 <= index < len(inputs) or not isinstance(inputs[index], Mapping):
        return None
    name = inputs[index].get("name")
    if not isinstance(name, str):
        return None
    return name.removeprefix("IODataType.").lower()


def _name_of(parameter: Any) -> str:
    name = parameter["name"]
    if not isinstance(name, str):
        raise TypeError
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# -- parameters and the run body ----------------------------------------------


def encode_parameters(target: Task, parameters: Mapping[str, Any] | None) -> dict[str, str]:
    """Check parameter names against the task and encode the values as strings.

    Strings are sent as they are, bools as `"true"` / `"false"`, integers with
    `str()` and other real numbers with `repr(float(x))` (the shortest exact form).
    """
    if not parameters:
        return {}
    if not isinstance(parameters, Mapping):
        raise InvalidParameter(f"parameters must be a mapping, not {type(parameters).__name__}")
    unknown = sorted(str(k) for k in parameters if k not in target.parameters)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        plural = "s" if len(unknown) > 1 else ""
        if target.parameters:
            valid = "valid parameters: " + ", ".join(repr(p) for p in sorted(target.parameters))
        else:
            valid = "it has no parameters"
        raise InvalidParameter(
            f"unknown parameter{plural} {names} for task {target.name!r}; {valid}"
        )
    return {name: _encode_value(name, value) for name, value in parameters.items()}


def _encode_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_int(value):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidParameter(f"parameter {name!r} must be a finite number, not {number!r}")
        return repr(number)
    raise InvalidParameter(
        f"parameter {name!r} must be a string, a number or a bool, not {type(value).__name__}"
    )


def run_body(
    inputs: Sequence[BaseIO],
    outputs: list[dict[str, Any]],
    target: Task,
    parameters: Mapping[str, str],
) -> dict[str, Any]:
    """The JSON body of `PUT /api/run`."""
    body_parameters = []
    if parameters:
        body_parameters.append(
            {"task_name": target.name, "task_index": target.index, "parameters": dict(parameters)}
        )
    return {
        "inputs": [value.to_json() for value in inputs],
        "outputs": outputs,
        "parameters": body_parameters,
    }


# -- inputs -------------------------------------------------------------------

STORED_DATA_TYPES = frozenset({"video", "file_path", "folder_path"})
"""Data types always sent through storage (an image goes inline unless asked otherwise)."""


def infer_data_type(
    *,
    is_directory: bool,
    content_type: str,
    data_type: str | None = None,
    workflow_type: str | None = None,
) -> tuple[str, str]:
    """The `(data_type, content type to upload)` of a file or folder input.

    The official client's rule: an explicit `data_type` wins (a folder only
    accepts `folder_path`); else the workflow's input type decides (an image
    input also takes a video); else the content type (image/*, video/*, any
    other file, a folder). A folder is uploaded zipped (`application/zip`).
    `InvalidInput` when nothing matches, naming both sides.
    """
    if is_directory:
        content_type = ""
    if data_type is not None:
        if not is_directory:
            return data_type, content_type
        if data_type == "folder_path":
            return "folder_path", "application/zip"
        raise InvalidInput(
            f"a folder can only be sent as data_type 'folder_path', not {data_type!r}"
        )
    is_image = content_type.startswith("image/")
    is_video = content_type.startswith("video/")
    if workflow_type is None:
        if is_directory:
            return "folder_path", "application/zip"
        if is_image:
            return "image", content_type
        if is_video:
            return "video", content_type
        return "file_path", content_type
    if workflow_type == "image" and (is_image or is_video):
        return ("image" if is_image else "video"), content_type
    if workflow_type == "video" and is_video:
        return "video", content_type
    if workflow_type == "file_path" and not is_directory:
        return "file_path", content_type
    if workflow_type == "folder_path" and (is_directory or content_type == "application/zip"):
        return "folder_path", "application/zip"
    what = "a folder" if is_directory else f"a file of type {content_type!r}"
    raise InvalidInput(
        f"cannot send {what} to a workflow input of type {workflow_type!r}; "
        "pass data_type= (FileIO) to choose explicitly"
    )


# -- answers ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one run or poll answer says: state, ETA, advice, and the outputs once done."""

    state: str
    eta: Eta = (None, None)
    uuid: str | None = None
    next_poll_in: float | None = None  # seconds; None when the deployment gives no advice
    next_poll_long: bool = False
    outputs: tuple[BaseIO, ...] | None = None  # set when the run is done


def parse_run_answer(body: Any) -> Answer:
    """The answer to `PUT /api/run`: an object with a uuid, or a bare uuid (legacy)."""
    if isinstance(body, str) and body:
        return Answer(State.PENDING, uuid=body)
    if isinstance(body, Mapping) and isinstance(body.get("uuid"), str) and body["uuid"]:
        return _progress(body, uuid=body["uuid"])
    raise UpstreamError("the deployment sent an answer to the run request ikproxy cannot read")


def parse_poll_answer(status_code: int, body: Any) -> Answer:
    """The answer to `GET /api/results/{uuid}` (a 2xx): done with outputs, or not yet.

    A 200 with `results` (or a bare list, from legacy endpoints) is done; any other
    2xx reports progress. A 2xx that reports `FAILURE` raises `WorkflowFailed`.
    """
    if status_code == 200 and isinstance(body, list):
        return Answer(State.SUCCESS, outputs=_outputs(body))
    if isinstance(body, Mapping):
        if status_code == 200 and "results" in body:
            answer = _progress(body, default_state=State.SUCCESS)
            return Answer(answer.state, answer.eta, outputs=_outputs(body["results"]))
        if body.get("state") == State.FAILURE:
            message = body.get("message")
            raise WorkflowFailed(message if isinstance(message, str) else "the workflow failed")
        return _progress(body)
    if status_code != 200 and (body is None or isinstance(body, str)):
        return Answer(State.PENDING)  # legacy: not done yet, no advice
    raise UpstreamError("the deployment sent an answer to the poll ikproxy cannot read")


def _progress(
    body: Mapping[str, Any], *, uuid: str | None = None, default_state: str = State.PENDING
) -> Answer:
    state = body.get("state")
    delay = _advised_delay(body.get("next_poll_in"))
    return Answer(
        state=state if isinstance(state, str) and state else default_state,
        eta=_lenient_eta(body.get("eta")),
        uuid=uuid,
        next_poll_in=delay,
        next_poll_long=delay is not None and body.get("next_poll_long") is True,
    )


def _advised_delay(value: Any) -> float | None:
    """`next_poll_in` (ms) in seconds, or None when absent or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return max(0.0, value / 1000)


def _lenient_eta(value: Any) -> Eta:
    """An ETA, or unknown when the deployment sends something odd: never fail a run on it."""
    try:
        return parse_eta(value)
    except ValueError:
        return (None, None)


def _outputs(results: Any) -> tuple[BaseIO, ...]:
    if not isinstance(results, list):
        raise UpstreamError("the deployment sent results ikproxy cannot read")
    try:
        return tuple(io_from_json(o) for o in results)
    except ValueError:
        raise UpstreamError("the deployment sent results ikproxy cannot read") from None
