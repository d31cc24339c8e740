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
import functools
import math
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any, TypeVar, overload
from uuid import uuid4

import anyio
import anyio.lowlevel

from ikproxy.deployments import results_of
from ikproxy.deployments.runner import Done, TaskRun, task_items
from ikproxy.deployments.tasks import (
    Task,
    TaskFailed,
    TaskTable,
    Update,
    check_cancelled,
    is_number,
    task_decorator,
)
from ikproxy.io import InputLike, as_inputs
from ikproxy.model import Progress, Results, State

__all__ = ["LocalDeployment", "TaskFailed", "Update", "check_cancelled"]

F = TypeVar("F", bound=Callable[..., Any])


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
        self._tasks = TaskTable()
        # One limiter per event loop: anyio primitives belong to the loop that made them.
        self._limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
            f"ikproxy.local.limiter.{id(self):x}"
        )
        for task_name, fn in (tasks or {}).items():
            self.add_task(fn, task_name)

    def __repr__(self) -> str:
        return f"<LocalDeployment {self.name!r} tasks={list(self._tasks.names)!r}>"

    # -- registration ------------------------------------------------------------

    @property
    def task_names(self) -> tuple[str, ...]:
        """The registered task names, the default one first."""
        return self._tasks.names

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
        self._tasks.add(fn, name, validate)

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
        return task_decorator(self.add_task, fn_or_name, validate=validate)

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
        run = TaskRun(spec.name, uuid4().hex, timeout)
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
            async with aclosing(task_items(spec, values, params)) as items:
                while True:
                    item = await run.next_item(items)
                    if isinstance(item, Done):
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
        return await results_of(
            self.run_stream(*inputs, parameters=parameters, task=task, timeout=timeout)
        )

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

    def _get_task(self, name: str | None) -> Task:
        return self._tasks.get(name, self.name)

    def _get_limiter(self) -> anyio.CapacityLimiter | None:
        if self.max_concurrency is None:
            return None
        limiter = self._limiter.get(None)
        if limiter is None:
            limiter = anyio.CapacityLimiter(self.max_concurrency)
            self._limiter.set(limiter)
        return limiter


def _check_timeout(timeout: object) -> None:
    if timeout is not None and not (is_number(timeout) and 0 < timeout < math.inf):
        raise ValueError(f"timeout must be a number of seconds > 0 or None, not {timeout!r}")
