"""What a task is, wherever it runs: its signature, its progress updates, its outputs.

Kept apart from `LocalDeployment` so that the same task shapes can run elsewhere.
"""

from __future__ import annotations

import contextvars
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import anyio
import anyio.from_thread
import anyio.to_thread

from ikproxy.errors import IkproxyError, InvalidParameter
from ikproxy.io import BaseIO, FileIO, ImageIO, io_from_json
from ikproxy.model import Eta, Results

__all__ = [
    "IN_TASK_THREAD",
    "PNG_MODES",
    "Task",
    "TaskFailed",
    "TaskTable",
    "Update",
    "as_update",
    "check_cancelled",
    "eta_pair",
    "is_number",
    "outputs",
    "quote",
    "task_decorator",
    "to_output",
    "to_outputs",
]

#: True inside the worker thread that runs a step of a task (see `check_cancelled`).
IN_TASK_THREAD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ikproxy_in_task_thread", default=False
)

#: The PIL image modes PNG stores as they are; others are converted first.
PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})

# Longest name and most names quoted in an error message, so that a request
# with a huge or endless parameter name cannot make the message huge.
_MAX_SHOWN_NAME = 40
_MAX_SHOWN_NAMES = 5


@dataclass(frozen=True)
class Update:
    """A progress report a generator task yields: a fraction done and/or an ETA.

    `eta` is the time left in milliseconds, as one number or a `(lower, upper)`
    pair (either bound None if unknown). Yielding a bare float `f` is the same
    as yielding `Update(fraction=f)`.
    """

    fraction: float | None = None
    eta: float | tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if self.fraction is not None:
            if not is_number(self.fraction) or not 0.0 <= self.fraction <= 1.0:
                raise ValueError(f"fraction must be a number from 0 to 1, not {self.fraction!r}")
            object.__setattr__(self, "fraction", float(self.fraction))
        if self.eta is not None:
            bounds = self.eta if isinstance(self.eta, tuple) else (self.eta, self.eta)
            if len(bounds) != 2 or not all(b is None or _is_ms(b) for b in bounds):
                raise ValueError(
                    "eta must be milliseconds >= 0 or a (lower, upper) pair of them, "
                    f"not {self.eta!r}"
                )


def eta_pair(update: Update) -> Eta | None:
    """The ETA `update` reports as whole `(lower, upper)` milliseconds, or None."""
    if update.eta is None:
        return None
    lower, upper = update.eta if isinstance(update.eta, tuple) else (update.eta, update.eta)
    return (
        None if lower is None else round(lower),
        None if upper is None else round(upper),
    )


class TaskFailed(IkproxyError):
    """A local task raised an exception; the exception is the `__cause__`.

    The message names the task and the exception type only, never the
    exception's text, which may hold a secret (a path, a key, a query).
    """

    code = "workflow_failed"
    status = 502
    public_message = "The workflow failed while processing this request."

    def __init__(self, task: str, error_type: str) -> None:
        super().__init__(f"task {quote(task)} failed: {error_type}")
        self.task = task
        self.error_type = error_type


def check_cancelled() -> None:
    """Raise the cancellation exception if the run calling it was cancelled or timed out.

    Call it now and then from a long sync task (or generator step): a thread
    cannot be stopped from outside, so this is how it learns to stop early. It
    raises a `BaseException`, so `except Exception` blocks let it through and
    `finally` blocks run. Outside a task's worker thread it does nothing, so a
    task stays callable as a plain function (in tests, say).
    """
    if IN_TASK_THREAD.get():
        anyio.from_thread.check_cancelled()


# -- progress and outputs --------------------------------------------------------


def as_update(item: object) -> Update | None:
    """The progress `item` reports, or None if `item` is an output."""
    if isinstance(item, Update):
        return item
    if is_number(item):
        return Update(fraction=item)
    return None


async def outputs(value: object) -> tuple[BaseIO, ...]:
    """Typed outputs, normalised in a worker thread: encoding a PIL image takes time."""
    if value is None:
        return ()
    return await anyio.to_thread.run_sync(to_outputs, value)


def to_outputs(value: object) -> tuple[BaseIO, ...]:
    """Typed outputs from what a task produced; `TypeError` for anything else."""
    if value is None:
        return ()
    if isinstance(value, Results):
        return value.outputs
    if isinstance(value, (list, tuple)):
        found: list[BaseIO] = []
        for item in value:
            if isinstance(item, Results):
                found.extend(item.outputs)
            else:
                found.append(to_output(item))
        return tuple(found)
    return (to_output(value),)


def to_output(value: object) -> BaseIO:
    """One typed output from one value a task produced; `TypeError` if unsupported."""
    from PIL import Image

    if isinstance(value, BaseIO):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageIO.from_bytes(bytes(value))
    if isinstance(value, Image.Image):
        if value.mode not in PNG_MODES:
            value = value.convert("RGBA" if "A" in value.getbands() else "RGB")
        return ImageIO.from_pil(value, format="PNG")
    if isinstance(value, Mapping):
        return io_from_json(value)
    raise TypeError(
        f"a task output of type {type(value).__name__} is not supported: return a BaseIO, "
        "a PIL image, image bytes, a one-key dict, a Results, or a list of them"
    )


# -- task signatures -------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A registered task: its callable, kind, and what its signature accepts."""

    name: str
    fn: Callable[..., Any]
    kind: str  # "async", "sync", "generator" (sync or async)
    validate: Callable[..., object] | None
    min_inputs: int
    max_inputs: int | None  # None: any number (`*args`)
    parameters: frozenset[str]  # keyword-only parameters
    required: frozenset[str]
    any_parameters: bool  # `**kwargs`
    path_inputs: frozenset[int] = frozenset()  # positions annotated `pathlib.Path`

    @classmethod
    def from_callable(
        cls, name: str, fn: Callable[..., Any], validate: Callable[..., object] | None
    ) -> Task:
        call = None if inspect.isroutine(fn) else type(fn).__call__  # a callable object
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            kind = "generator"
        elif inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call):
            kind = "async"
        elif inspect.isasyncgenfunction(call) or inspect.isgeneratorfunction(call):
            kind = "generator"
        else:
            kind = "sync"
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins: accept anything
            return cls(name, fn, kind, validate, 0, None, frozenset(), frozenset(), True)
        positional = 0
        required_positional = 0
        var_positional = any_parameters = False
        parameters: set[str] = set()
        required: set[str] = set()
        empty = inspect.Parameter.empty
        for param in signature.parameters.values():
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                positional += 1
                if param.default is empty:
                    required_positional = positional
            elif param.kind is param.VAR_POSITIONAL:
                var_positional = True
            elif param.kind is param.KEYWORD_ONLY:
                parameters.add(param.name)
                if param.default is empty:
                    required.add(param.name)
            else:
                any_parameters = True
        return cls(
            name=name,
            fn=fn,
            kind=kind,
            validate=validate,
            min_inputs=required_positional,
            max_inputs=None if var_positional else positional,
            path_inputs=_path_positions(fn, signature),
            parameters=frozenset(parameters),
            required=frozenset(required),
            any_parameters=any_parameters,
        )

    def bind_paths(self, inputs: list[BaseIO]) -> list[Any]:
        """The inputs as the task takes them: a file's path where it asks for a `Path`."""
        if not self.path_inputs:
            return inputs
        bound: list[Any] = list(inputs)
        for index in self.path_inputs:
            if index < len(bound):
                value = bound[index]
                if not isinstance(value, FileIO):
                    raise InvalidParameter(
                        f"task {quote(self.name)} takes a file as input {index}, "
                        f"not {type(value).__name__}"
                    )
                bound[index] = value.path
        return bound

    def check(self, n_inputs: int, params: Mapping[Any, Any]) -> None:
        """Refuse a call the signature does not accept, with `InvalidParameter`."""
        too_many = self.max_inputs is not None and n_inputs > self.max_inputs
        if n_inputs < self.min_inputs or too_many:
            raise InvalidParameter(
                f"task {quote(self.name)} takes {self._inputs_wanted()}, got {n_inputs}"
            )
        if not all(isinstance(key, str) for key in params):
            raise InvalidParameter("parameter names must be strings")
        unknown = sorted(set(params) - self.parameters)
        if unknown and not self.any_parameters:
            valid = ", ".join(sorted(self.parameters)) or "none"
            raise InvalidParameter(
                f"unknown {_names('parameter', unknown)} for task {quote(self.name)}; "
                f"valid parameters: {valid}"
            )
        missing = sorted(self.required - set(params))
        if missing:
            raise InvalidParameter(
                f"task {quote(self.name)} is missing required {_names('parameter', missing)}"
            )

    def _inputs_wanted(self) -> str:
        low, high = self.min_inputs, self.max_inputs
        if high is None:
            return f"at least {_count(low, 'input')}"
        if low == high:
            return _count(low, "input") if low else "no inputs"
        return f"{low} to {high} inputs"


def _path_positions(fn: Callable[..., Any], signature: inspect.Signature) -> frozenset[int]:
    """The positions of the positional parameters annotated `pathlib.Path`."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: read them as written
        hints = {}
    positions = set()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for p in signature.parameters.values() if p.kind in positional]
    for index, param in enumerate(params):
        hint = hints.get(param.name, param.annotation)
        if hint is Path or hint in ("Path", "pathlib.Path"):
            positions.add(index)
    return frozenset(positions)


class TaskTable:
    """The tasks of one deployment by name, the default (first registered) one first.

    Shared by every deployment that runs task functions, wherever they run.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def add(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        validate: Callable[..., object] | None = None,
    ) -> Task:
        """Register `fn` as task `name` (default: the function's name); return its `Task`."""
        if not callable(fn):
            raise TypeError(f"a task must be callable, not {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(name, str) or not name:
            raise ValueError("a task name must be a non-empty string")
        if name in self._tasks:
            raise ValueError(f"task {name!r} is already registered")
        spec = self._tasks[name] = Task.from_callable(name, fn, validate)
        return spec

    def get(self, name: str | None, deployment: str) -> Task:
        """Task `name` (None: the default one); `InvalidParameter` naming the valid ones."""
        if not self._tasks:
            raise InvalidParameter(f"deployment {deployment!r} has no tasks")
        if name is None:
            return next(iter(self._tasks.values()))
        spec = self._tasks.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidParameter(
                f"unknown task {quote(name)}; valid tasks: {', '.join(sorted(self._tasks))}"
            )
        return spec


def task_decorator(
    add: Callable[..., object], fn_or_name: Callable[..., Any] | str | None, **options: Any
) -> Any:
    """What `@deployment.task` and `@deployment.task("name", ...)` return, given `add_task`."""
    if callable(fn_or_name):
        add(fn_or_name, **options)
        return fn_or_name
    name = fn_or_name

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        add(fn, name, **options)
        return fn

    return register


# -- messages --------------------------------------------------------------------


def quote(name: object) -> str:
    """`repr` of a name, shortened so that an error message stays short."""
    text = name if isinstance(name, str) else str(name)
    if len(text) > _MAX_SHOWN_NAME:
        text = text[: _MAX_SHOWN_NAME - 3] + "..."
    return repr(text)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _names(noun: str, names: list[str]) -> str:
    """`parameter 'a'` or `parameters 'a', 'b'`, showing a bounded number of names."""
    shown = ", ".join(quote(n) for n in names[:_MAX_SHOWN_NAMES])
    if len(names) > _MAX_SHOWN_NAMES:
        shown += f" and {len(names) - _MAX_SHOWN_NAMES} more"
    return f"{noun}{'' if len(names) == 1 else 's'} {shown}"


def is_number(value: object) -> TypeGuard[float]:
    """A real number: an int or a float, but not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_ms(value: object) -> bool:
    return is_number(value) and 0 <= value < math.inf
