"""A deployment made of plain Python callables: no SCALE account, same interface.

Register tasks, then run them exactly as you would run a SCALE deployment:

    deployment = LocalDeployment()

    @deployment.task
    def blur(image: ImageIO, *, radius: float = 2.0) -> Image.Image:
        return image.to_pil().filter(ImageFilter.GaussianBlur(radius))

    results = await deployment.run("photo.jpg", parameters={"radius": 4})

**Calling convention.** A task is called as `fn(*inputs, **parameters)`. Inputs
are typed IO values (`ImageIO`, `FileIO` for a video or file, ...) bound to the
positional parameters; a positional parameter annotated `pathlib.Path` gets a
file input's path instead (a file that lives as long as the run). Run
parameters are bound to the keyword-only ones (after `*`). Both are checked
against the signature before the run is accepted: a wrong number of inputs, an
unknown parameter (unless the task takes `**kwargs`) or a missing required
parameter raises `InvalidParameter`.

**Kinds of task.**

* `async def`: awaited; closing the stream cancels it at once.
* `def`: run in a worker thread so the event loop never blocks. Python cannot
  stop a thread, so a long function should call `check_cancelled()` now and
  then: it raises once the run is cancelled or times out.
* a generator (`def` with `yield`) or an async generator: yields progress, then
  its outputs. A sync generator is advanced one step at a time in a worker
  thread, so cancellation is seen between steps, and it is closed (its
  `finally` runs) when the run ends for any reason.

**Progress and outputs of a generator.** A yielded number (a fraction from 0
to 1) or `Update` reports progress. Any other yielded value is the output: it
ends the task, and the generator is closed. A sync generator may also
`return` its outputs. Without an ETA from the task, one is estimated from the
elapsed time and the fraction.

**Outputs** may be a `BaseIO` (a `FileIO` for a file the task wrote: the proxy
serves it by reference), a PIL image (encoded as PNG), image bytes, a one-key
wire dict such as `{"object_detection": {...}}`, a `Results`, None (no
outputs), or a list or tuple of those.

**Checks of your own.** `add_task(fn, validate=check)` runs `check(*inputs,
**parameters)` before the run is accepted, so that it can refuse values the
signature cannot express (a prompt too long, an image too large) with
`InvalidParameter`, before any progress is reported.

**Limits.** `max_concurrency` caps the runs that execute at once (the others
report PENDING until a slot frees up); `timeout` bounds a whole run, the wait
for a slot included, and fails it with `RunTimeout`.

**Errors.** An exception raised by a task fails the run with `TaskFailed`,
whose message names only the task and the exception type: an exception's text
may hold secrets, so it goes to the `ikproxy.local` log and `__cause__`
instead. A task that raises an `IkproxyError` (whose messages are safe by
design) fails the run with that error unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import typing
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
)
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar, overload
from uuid import uuid4

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ikproxy.errors import IkproxyError, InvalidParameter, RunTimeout
from ikproxy.io import BaseIO, FileIO, ImageIO, InputLike, as_inputs, io_from_json
from ikproxy.model import Eta, Progress, Results, State

__all__ = ["LocalDeployment", "TaskFailed", "Update", "check_cancelled"]

logger = logging.getLogger("ikproxy.local")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# True inside the worker thread that runs a step of a task (see `check_cancelled`).
_IN_TASK_THREAD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ikproxy_in_task_thread", default=False
)

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
            if not _is_number(self.fraction) or not 0.0 <= self.fraction <= 1.0:
                raise ValueError(f"fraction must be a number from 0 to 1, not {self.fraction!r}")
            object.__setattr__(self, "fraction", float(self.fraction))
        if self.eta is not None:
            bounds = self.eta if isinstance(self.eta, tuple) else (self.eta, self.eta)
            if len(bounds) != 2 or not all(b is None or _is_ms(b) for b in bounds):
                raise ValueError(
                    "eta must be milliseconds >= 0 or a (lower, upper) pair of them, "
                    f"not {self.eta!r}"
                )

    def _eta_pair(self) -> Eta | None:
        if self.eta is None:
            return None
        lower, upper = self.eta if isinstance(self.eta, tuple) else (self.eta, self.eta)
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
        super().__init__(f"task {_quote(task)} failed: {error_type}")
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
    if _IN_TASK_THREAD.get():
        anyio.from_thread.check_cancelled()


class LocalDeployment:
    """Run Python callables as tasks behind the `Deployment` interface.

    `tasks` maps task names to callables (more can be added with `task`); the
    first task is the default one. `max_concurrency` caps the runs that execute
    at once in an event loop (None: no cap); runs beyond it report PENDING
    until a slot frees up. `timeout` is the default overall deadline of a run,
    in seconds, including the wait for a slot (None: none).
    """

    def __init__(
        self,
        tasks: Mapping[str, Callable[..., Any]] | None = None,
        *,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        name: str = "local",
    ) -> None:
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValueError(
                f"max_concurrency must be an integer >= 1 or None, not {max_concurrency!r}"
            )
        _check_timeout(timeout)
        self.name = name
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self._tasks: dict[str, _Task] = {}
        # One limiter per event loop: anyio primitives belong to the loop that made them.
        self._limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
            f"ikproxy.local.limiter.{id(self):x}"
        )
        for task_name, fn in (tasks or {}).items():
            self.add_task(fn, task_name)

    def __repr__(self) -> str:
        return f"<LocalDeployment {self.name!r} tasks={list(self._tasks)!r}>"

    # -- registration ------------------------------------------------------------

    @property
    def task_names(self) -> tuple[str, ...]:
        """The registered task names, the default one first."""
        return tuple(self._tasks)

    def add_task(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        validate: Callable[..., object] | None = None,
    ) -> None:
        """Register `fn` as task `name` (default: the function's name).

        `validate`, if given, is called as `validate(*inputs, **parameters)`
        before a run is accepted, once the signature check passed: it raises
        `InvalidParameter` to refuse the run (an out-of-range value, an image
        too large), so the refusal comes before any progress. It runs in the
        event loop, so it must be quick.
        """
        if not callable(fn):
            raise TypeError(f"a task must be callable, not {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        if not isinstance(name, str) or not name:
            raise ValueError("a task name must be a non-empty string")
        if name in self._tasks:
            raise ValueError(f"task {name!r} is already registered")
        self._tasks[name] = _Task.from_callable(name, fn, validate)

    @overload
    def task(self, fn: F, /) -> F: ...
    @overload
    def task(
        self, name: str | None = None, /, *, validate: Callable[..., object] | None = None
    ) -> Callable[[F], F]: ...
    def task(
        self,
        fn_or_name: Callable[..., Any] | str | None = None,
        /,
        *,
        validate: Callable[..., object] | None = None,
    ) -> Any:
        """Decorator registering a task: `@deployment.task` or `@deployment.task("name")`."""
        if callable(fn_or_name):
            self.add_task(fn_or_name, validate=validate)
            return fn_or_name
        name = fn_or_name

        def register(fn: F) -> F:
            self.add_task(fn, name, validate=validate)
            return fn

        return register

    # -- running -----------------------------------------------------------------

    async def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[Progress, None]:
        """Run a task, yielding PENDING, then STARTED with progress, then SUCCESS with results.

        The checks (task, inputs, parameters, `validate`) run before the first
        item, so a refused run raises from the first `__anext__()`. `timeout`
        overrides the deployment's default. Closing the stream stops the task.
        """
        timeout = self.timeout if timeout is None else timeout
        _check_timeout(timeout)
        spec = self._get_task(task)
        values = as_inputs(*inputs)
        params = dict(parameters or {})
        spec.check(len(values), params)
        values = spec.bind_paths(values)
        run = _Run(spec.name, uuid4().hex, timeout)
        if spec.validate is not None:
            run.call_validator(spec.validate, values, params)

        yield run.progress(State.PENDING)
        limiter = self._get_limiter()
        holding = False
        try:
            if limiter is not None:
                await run.within_deadline(limiter.acquire_on_behalf_of(run))
                holding = True
            run.started = anyio.current_time()
            yield run.progress(State.STARTED)
            async with aclosing(_items(spec, values, params)) as items:
                while True:
                    item = await run.next_item(items)
                    if isinstance(item, _Done):
                        break
                    yield run.update(item)
        finally:
            if holding and limiter is not None:
                limiter.release_on_behalf_of(run)
        results = Results(item.outputs, uuid=run.run_id)
        yield run.progress(State.SUCCESS, fraction=1.0, eta=(0, 0), results=results)

    async def run(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> Results:
        """Run a task to completion and return its results."""
        stream = self.run_stream(*inputs, parameters=parameters, task=task, timeout=timeout)
        async with aclosing(stream):
            async for progress in stream:
                if progress.results is not None:
                    return progress.results
        raise RuntimeError("the run ended without results")  # pragma: no cover

    def run_sync(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> Results:
        """Blocking `run`, for scripts: starts an event loop, so not from inside one."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "run_sync() cannot be called from a running event loop: "
                "use `await deployment.run(...)` instead"
            )
        run = functools.partial(
            self.run, *inputs, parameters=parameters, task=task, timeout=timeout
        )
        return anyio.run(run)

    # -- helpers -----------------------------------------------------------------

    def _get_task(self, name: str | None) -> _Task:
        if not self._tasks:
            raise InvalidParameter(f"deployment {self.name!r} has no tasks")
        if name is None:
            return next(iter(self._tasks.values()))
        spec = self._tasks.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidParameter(
                f"unknown task {_quote(name)}; valid tasks: {', '.join(sorted(self._tasks))}"
            )
        return spec

    def _get_limiter(self) -> anyio.CapacityLimiter | None:
        if self.max_concurrency is None:
            return None
        limiter = self._limiter.get(None)
        if limiter is None:
            limiter = anyio.CapacityLimiter(self.max_concurrency)
            self._limiter.set(limiter)
        return limiter


# -- one run ---------------------------------------------------------------------


class _Run:
    """The state of one run: its ids, deadline, start time and last fraction."""

    def __init__(self, task: str, run_id: str, timeout: float | None) -> None:
        self.task = task
        self.run_id = run_id
        self.timeout = timeout
        self.deadline = math.inf if timeout is None else anyio.current_time() + timeout
        self.started = 0.0
        self.fraction: float | None = None

    def progress(
        self,
        state: str,
        *,
        fraction: float | None = None,
        eta: Eta = (None, None),
        results: Results | None = None,
    ) -> Progress:
        return Progress(
            state=state,
            eta=eta,
            run_id=self.run_id,
            uuid=self.run_id,
            name=self.task,
            fraction=fraction,
            results=results,
        )

    def update(self, update: Update) -> Progress:
        """A STARTED progress for `update`, estimating the ETA from the fraction if need be."""
        if update.fraction is not None:
            self.fraction = update.fraction
        eta = update._eta_pair()
        if eta is None:
            eta = (None, None)
            if self.fraction:  # neither None nor 0
                elapsed = anyio.current_time() - self.started
                left = round(elapsed * (1.0 - self.fraction) / self.fraction * 1000)
                eta = (left, left)
        return self.progress(State.STARTED, fraction=self.fraction, eta=eta)

    async def within_deadline(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`, raising `RunTimeout` if the run's deadline passes first."""
        with anyio.CancelScope(deadline=self.deadline):
            return await awaitable
        raise self.timed_out()

    def call_validator(
        self, validate: Callable[..., object], inputs: list[BaseIO], params: dict[str, Any]
    ) -> None:
        try:
            validate(*inputs, **params)
        except IkproxyError:
            raise
        except Exception as exc:
            raise self.failed(exc) from exc

    async def next_item(self, items: AsyncIterator[Update | _Done]) -> Update | _Done:
        """The task's next progress or outputs, within the deadline; its errors wrapped."""
        try:
            with anyio.CancelScope(deadline=self.deadline):
                return await items.__anext__()
        except IkproxyError:
            raise  # safe by design: passed on unchanged
        except Exception as exc:
            raise self.failed(exc) from exc
        raise self.timed_out()

    def failed(self, exc: Exception) -> TaskFailed:
        """The error a run fails with when its task raised `exc`, which is logged."""
        logger.error("task %r raised in run %s", self.task, self.run_id, exc_info=exc)
        return TaskFailed(self.task, type(exc).__name__)

    def timed_out(self) -> RunTimeout:
        return RunTimeout(f"task {_quote(self.task)} did not finish within {self.timeout:g} s")


@dataclass(frozen=True)
class _Done:
    """The task's outputs: the end of its items."""

    outputs: tuple[BaseIO, ...]


@dataclass(frozen=True)
class _Returned:
    """The value a sync generator returned."""

    value: object


async def _items(
    spec: _Task, inputs: list[BaseIO], params: dict[str, Any]
) -> AsyncGenerator[Update | _Done, None]:
    """Run the task, yielding its progress updates, then its outputs as `_Done`."""
    result: object
    if spec.kind == "async":
        result = await spec.fn(*inputs, **params)
    elif spec.kind == "sync":
        result = await _in_thread(functools.partial(spec.fn, *inputs, **params))
        if inspect.isawaitable(result):  # a sync wrapper around a coroutine function
            result = await result
    else:  # a generator function: calling it runs none of its code
        result = spec.fn(*inputs, **params)

    if inspect.isgenerator(result):
        steps: AsyncGenerator[object, Any] = _sync_steps(result)
    elif inspect.isasyncgen(result):
        steps = result
    else:
        yield _Done(await _outputs(result))
        return
    async with aclosing(steps):
        async for item in steps:
            if isinstance(item, _Returned):
                item = item.value
            elif (update := _as_update(item)) is not None:
                yield update
                continue
            yield _Done(await _outputs(item))
            return
    yield _Done(())


async def _sync_steps(gen: Generator[Any, Any, Any]) -> AsyncGenerator[object, None]:
    """Advance a sync generator one step at a time in a worker thread; close it at the end."""
    try:
        while True:
            done, value = await _in_thread(functools.partial(_advance, gen))
            if done:
                yield _Returned(value)
                return
            yield value
    finally:
        if inspect.getgeneratorstate(gen) != inspect.GEN_CLOSED:
            # Shielded: even when the run is cancelled, the generator's `finally` runs.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_close_generator, gen)


def _advance(gen: Generator[Any, Any, Any]) -> tuple[bool, object]:
    """One step of `gen`: `(False, yielded)` or `(True, returned)`."""
    try:
        return False, next(gen)
    except StopIteration as stop:
        return True, stop.value


def _close_generator(gen: Generator[Any, Any, Any]) -> None:
    try:
        gen.close()
    except Exception:
        logger.exception("closing a task generator raised")


async def _in_thread(fn: Callable[[], T]) -> T:
    """Call `fn` in a worker thread where `check_cancelled()` is live."""
    return await anyio.to_thread.run_sync(_call_in_task_thread, fn)


def _call_in_task_thread(fn: Callable[[], T]) -> T:
    _IN_TASK_THREAD.set(True)  # in the copy of the context made for this call only
    return fn()


def _as_update(item: object) -> Update | None:
    """The progress `item` reports, or None if `item` is an output."""
    if isinstance(item, Update):
        return item
    if _is_number(item):
        return Update(fraction=item)
    return None


async def _outputs(value: object) -> tuple[BaseIO, ...]:
    """Typed outputs, normalised in a worker thread: encoding a PIL image takes time."""
    if value is None:
        return ()
    return await anyio.to_thread.run_sync(_to_outputs, value)


def _to_outputs(value: object) -> tuple[BaseIO, ...]:
    """Typed outputs from what a task produced; `TypeError` for anything else."""
    if value is None:
        return ()
    if isinstance(value, Results):
        return value.outputs
    if isinstance(value, (list, tuple)):
        outputs: list[BaseIO] = []
        for item in value:
            if isinstance(item, Results):
                outputs.extend(item.outputs)
            else:
                outputs.append(_to_output(item))
        return tuple(outputs)
    return (_to_output(value),)


def _to_output(value: object) -> BaseIO:
    from PIL import Image

    if isinstance(value, BaseIO):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageIO.from_bytes(bytes(value))
    if isinstance(value, Image.Image):
        if value.mode not in _PNG_MODES:
            value = value.convert("RGBA" if "A" in value.getbands() else "RGB")
        return ImageIO.from_pil(value, format="PNG")
    if isinstance(value, Mapping):
        return io_from_json(value)
    raise TypeError(
        f"a task output of type {type(value).__name__} is not supported: return a BaseIO, "
        "a PIL image, image bytes, a one-key dict, a Results, or a list of them"
    )


_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


# -- task signatures -------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
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
    ) -> _Task:
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
                        f"task {_quote(self.name)} takes a file as input {index}, "
                        f"not {type(value).__name__}"
                    )
                bound[index] = value.path
        return bound

    def check(self, n_inputs: int, params: Mapping[Any, Any]) -> None:
        """Refuse a call the signature does not accept, with `InvalidParameter`."""
        too_many = self.max_inputs is not None and n_inputs > self.max_inputs
        if n_inputs < self.min_inputs or too_many:
            raise InvalidParameter(
                f"task {_quote(self.name)} takes {self._inputs_wanted()}, got {n_inputs}"
            )
        if not all(isinstance(key, str) for key in params):
            raise InvalidParameter("parameter names must be strings")
        unknown = sorted(set(params) - self.parameters)
        if unknown and not self.any_parameters:
            valid = ", ".join(sorted(self.parameters)) or "none"
            raise InvalidParameter(
                f"unknown {_names('parameter', unknown)} for task {_quote(self.name)}; "
                f"valid parameters: {valid}"
            )
        missing = sorted(self.required - set(params))
        if missing:
            raise InvalidParameter(
                f"task {_quote(self.name)} is missing required {_names('parameter', missing)}"
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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _names(noun: str, names: list[str]) -> str:
    """`parameter 'a'` or `parameters 'a', 'b'`, showing a bounded number of names."""
    shown = ", ".join(_quote(n) for n in names[:_MAX_SHOWN_NAMES])
    if len(names) > _MAX_SHOWN_NAMES:
        shown += f" and {len(names) - _MAX_SHOWN_NAMES} more"
    return f"{noun}{'' if len(names) == 1 else 's'} {shown}"


def _quote(name: object) -> str:
    """`repr` of a name, shortened so that an error message stays short."""
    text = name if isinstance(name, str) else str(name)
    if len(text) > _MAX_SHOWN_NAME:
        text = text[: _MAX_SHOWN_NAME - 3] + "..."
    return repr(text)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_ms(value: object) -> bool:
    return _is_number(value) and 0 <= value < math.inf


def _check_timeout(timeout: object) -> None:
    if timeout is not None and not (_is_number(timeout) and 0 < timeout < math.inf):
        raise ValueError(f"timeout must be a number of seconds > 0 or None, not {timeout!r}")
