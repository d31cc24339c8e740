"""Running one task: its progress and outputs as items, within a deadline, errors wrapped.

Independent of `LocalDeployment`, so that a worker elsewhere can run the same tasks.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ikproxy.deployments.tasks import (
    IN_TASK_THREAD,
    Task,
    TaskFailed,
    Update,
    as_update,
    eta_pair,
    outputs,
    quote,
)
from ikproxy.errors import IkproxyError, RunTimeout
from ikproxy.io import BaseIO
from ikproxy.model import Eta, Progress, Results, State

__all__ = ["Done", "TaskRun", "task_items"]

logger = logging.getLogger("ikproxy.local")

T = TypeVar("T")


class TaskRun:
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
        eta = eta_pair(update)
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

    async def next_item(self, items: AsyncIterator[Update | Done]) -> Update | Done:
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
        return RunTimeout(f"task {quote(self.task)} did not finish within {self.timeout:g} s")


@dataclass(frozen=True)
class Done:
    """The task's outputs: the end of its items."""

    outputs: tuple[BaseIO, ...]


@dataclass(frozen=True)
class _Returned:
    """The value a sync generator returned."""

    value: object


async def task_items(
    spec: Task, inputs: list[BaseIO], params: dict[str, Any]
) -> AsyncGenerator[Update | Done, None]:
    """Run the task, yielding its progress updates, then its outputs as `Done`."""
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
        yield Done(await outputs(result))
        return
    async with aclosing(steps):
        async for item in steps:
            if isinstance(item, _Returned):
                item = item.value
            elif (update := as_update(item)) is not None:
                yield update
                continue
            yield Done(await outputs(item))
            return
    yield Done(())


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
    IN_TASK_THREAD.set(True)  # in the copy of the context made for this call only
    return fn()
