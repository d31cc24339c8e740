"""A run on a Celery worker: the task run by `deployments.runner`, its events in the store's log.

The worker is the run's producer, as an instance is for a proxied run: it
holds the run's owner lease (`runs.ownership.OwnerLease`, renewed while the
task runs) and appends every event with the `LogWriter` a proxied run uses,
so that any web instance follows the run live from the store. It stops the
task when a web instance asks (`stores.signals.CancelSignals`, a blocking
read: heard at once), when the run's deadline passes, or when its lease went
to another instance (which declared the run lost).

Each worker process runs its runs on one event loop, in a thread of its own,
so that connections to Redis stay open from one run to the next; a Celery
pool thread (or the prefork child's main thread) waits for its run there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

import anyio

from ikproxy.deployments.runner import Done, TaskRun, task_items
from ikproxy.deployments.tasks import Task
from ikproxy.errors import IkproxyError, error_code
from ikproxy.io import BaseIO, io_from_json
from ikproxy.model import Results, State
from ikproxy.runs.log import LogWriter, RunLog
from ikproxy.runs.ownership import OwnerLease
from ikproxy.stores import Store, StoreUnavailable
from ikproxy.stores.signals import CancelSignals

__all__ = ["WorkerDeployment", "WorkerLoop", "WorkerRun", "execute"]

logger = logging.getLogger("ikproxy.celery")

T = TypeVar("T")


class WorkerDeployment(Protocol):
    """What a worker needs of its deployment: the store, the cancel requests, the outputs."""

    @property
    def store(self) -> Store: ...

    @property
    def signals(self) -> CancelSignals: ...

    async def worker_outputs(
        self, outputs: tuple[BaseIO, ...], token: str
    ) -> tuple[BaseIO, ...]: ...


class WorkerLoop:
    """One event loop per process, in a daemon thread; made again in a forked child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="ikproxy-worker-loop", daemon=True
                )
                thread.start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the process's loop and wait for its result in this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._get()).result()


class WorkerRun:
    """One run's events on the worker, as `LogWriter` writes them (a `runs.log.LoggedRun`)."""

    def __init__(self, log: RunLog, logged: list[dict[str, Any]]) -> None:
        self.token = log.token
        self.log: RunLog | None = log
        self.items = logged
        self.failure: str | None = None
        self.done = False
        self.disowned = False
        self.flushed = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self.items)

    def log_events(self) -> list[dict[str, Any]]:
        if self.done and self.failure is not None:
            return [*self.items, {"error": self.failure}]
        return self.items


class _Writers:
    """The log writers of the worker's loop, one per TTL (runs of one proxy share one)."""

    def __init__(self) -> None:
        self._by_loop: dict[tuple[int, float], LogWriter] = {}

    def get(self, deployment: WorkerDeployment, ttl: float) -> LogWriter:
        key = (id(asyncio.get_running_loop()), ttl)
        writer = self._by_loop.get(key)
        if writer is None:
            writer = self._by_loop[key] = LogWriter(deployment.store, ttl)
        return writer


WRITERS = _Writers()


async def execute(deployment: WorkerDeployment, spec: Task, message: Mapping[str, Any]) -> None:
    """Run one task for the run `message` names, writing its events to the run's log."""
    store = deployment.store
    token = str(message["token"])
    ttl = float(message["ttl"])
    lease = OwnerLease(store, token, str(message["owner"]))
    if not await _retrying(lease.acquire):
        logger.warning("a run was taken over before it started [token=%s]", token)
        return
    try:
        info = await store.run_info(token)
        if info is None or info.done:
            logger.info("a run ended before it started (cancelled or lost) [token=%s]", token)
            return
        logged = await store.read_events(token, 0, timeout=0.001, limit=max(info.count, 1))
        log = RunLog(store, token, info.meta, ttl)
        log.written = info.count
        run = WorkerRun(log, [event for _, event in logged[: info.count]])
        writer = WRITERS.get(deployment, ttl)
        await _produce(deployment, spec, message, run, writer, lease)
        with anyio.move_on_after(ttl):
            await run.flushed.wait()  # the LogWriter retries while the store is away
    finally:
        await lease.release()


async def _retrying(acquire: Callable[[], Awaitable[bool]], patience: float = 10.0) -> bool:
    """`acquire()`, tried again while the store is unreachable, for up to `patience` s."""
    backoff = 0.1
    with anyio.fail_after(patience):
        while True:
            try:
                return await acquire()
            except StoreUnavailable as exc:
                logger.warning("the store is unreachable, retrying: %s", exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


async def _produce(
    deployment: WorkerDeployment,
    spec: Task,
    message: Mapping[str, Any],
    run: WorkerRun,
    writer: LogWriter,
    lease: OwnerLease,
) -> None:
    """Run the task until it ends, is cancelled, times out, or its lease is lost."""
    deadline = message.get("deadline")
    left = None if deadline is None else max(float(deadline) - time.time(), 0.0)
    task = TaskRun(spec.name, str(message["run_id"]), left)
    cancelled = False

    with anyio.CancelScope() as scope:

        def lose() -> None:
            run.disowned = True
            writer.drop(run.token)
            scope.cancel()

        lease.keep(lose)
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal cancelled
                while not await _cancel_requested(deployment, run.token):
                    pass
                cancelled = True
                scope.cancel()

            group.start_soon(watch)
            try:
                if left is not None and left <= 0:
                    raise task.timed_out()
                await _steps(deployment, spec, message, run, writer, task)
            except Exception as exc:
                run.failure = error_code(exc)
                if not isinstance(exc, IkproxyError):  # a task's own errors are logged already
                    logger.error("a run failed [token=%s]", run.token, exc_info=exc)
            finally:
                group.cancel_scope.cancel()
    if run.disowned:
        logger.error("another instance took over a run; stopped [token=%s]", run.token)
        run.flushed.set()
        return
    if cancelled:
        logger.info("a run was cancelled [token=%s]", run.token)
        run.failure = None  # no terminal event: the writer forgets the run's log
    run.done = True
    writer.mark(run)


async def _cancel_requested(deployment: WorkerDeployment, token: str) -> bool:
    try:
        return await deployment.signals.wait(token)
    except StoreUnavailable as exc:
        logger.warning("waiting for a cancel request failed [token=%s]: %s", token, exc)
        await anyio.sleep(1.0)
        return False


async def _steps(
    deployment: WorkerDeployment,
    spec: Task,
    message: Mapping[str, Any],
    run: WorkerRun,
    writer: LogWriter,
    task: TaskRun,
) -> None:
    """Report STARTED, each progress, then SUCCESS with the outputs."""

    def add(event: dict[str, Any]) -> None:
        run.items.append(event)
        writer.mark(run)

    values = spec.bind_paths([io_from_json(value) for value in message["inputs"]])
    params = dict(message["parameters"])
    task.started = anyio.current_time()
    add(task.progress(State.STARTED).to_json())
    async with aclosing(task_items(spec, values, params)) as items:
        while True:
            item = await task.next_item(items)
            if isinstance(item, Done):
                break
            add(task.update(item).to_json())
    outputs = await deployment.worker_outputs(item.outputs, run.token)
    results = Results(outputs, uuid=task.run_id)
    add(task.progress(State.SUCCESS, fraction=1.0, eta=(0, 0), results=results).to_json())
    run.done = True
