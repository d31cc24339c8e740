"""`CeleryDeployment`: task functions run by a pool of Celery workers, followed from any instance.

    celery_app = Celery("paint", broker="redis://redis:6379/1")
    store = RedisStore("redis://redis:6379/0")
    deployment = CeleryDeployment(celery_app, store=store)

    @deployment.task
    def blur(image: ImageIO, *, radius: float = 2.0) -> Image.Image: ...

The same module is imported by the web app (`create_app(deployment,
resume_window=60)`) and by the workers (`celery -A paint:celery_app worker`).
Tasks have the shapes, calling convention and outputs of `LocalDeployment`'s
(`def`, `async def`, generators; `Update`, `check_cancelled()`), run by the
same code (`ikproxy.deployments.runner`).

A run goes this way: the web instance checks the inputs and parameters
against the task's signature (and `validate`), creates the run's log in the
store, logs PENDING, and publishes the Celery message, all before its 200; a
broker that cannot take the message in `publish_timeout` seconds is a 503
`broker_unavailable`. A worker takes the run's lease, runs the task, and
appends every event to the log; each web instance follows the log (a blocking
read of the Redis stream) and renews nothing. Closing the stream before the
end asks the worker to stop the run (`CancelSignals`), heard at once. A
worker that dies leaves its lease to lapse; a follower then ends the run with
`run_lost` (`ikproxy.runs.ownership`). Celery's result backend is not used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, TypeVar, overload
from uuid import uuid4

import anyio
import anyio.to_thread

from ikproxy.concurrency import aclose
from ikproxy.deployments import results_of
from ikproxy.deployments.celery.worker import WorkerLoop, execute
from ikproxy.deployments.runner import TaskRun
from ikproxy.deployments.tasks import Task, TaskTable, task_decorator
from ikproxy.errors import BrokerUnavailable, IkproxyError, InvalidInput, InvalidParameter
from ikproxy.io import BaseIO, FileIO, ImageIO, InputLike, RefIO, as_inputs
from ikproxy.model import Progress, Results, State
from ikproxy.runs.ownership import Takeover, lease_name
from ikproxy.runs.registry import StoredRun
from ikproxy.stores import RunInfo, StoreUnavailable
from ikproxy.stores.outputs import SharedOutput, SharedOutputs
from ikproxy.stores.redis import RedisStore
from ikproxy.stores.signals import CancelSignals
from ikproxy.stores.tail import LogTail

__all__ = ["CeleryDeployment"]

logger = logging.getLogger("ikproxy.celery")

F = TypeVar("F", bound=Callable[..., Any])


class CeleryDeployment:
    """Task functions registered as Celery tasks; their runs logged in `store` by the workers.

    `celery_app` is your Celery app (its broker may be the store's Redis or
    another); `store` the `RedisStore` the proxy shares (pass the same one to
    `create_app`, or none there: the proxy then uses this one). `timeout` is
    the default deadline of a run in seconds, counted from its submission (its
    time in the queue included). A run not started by a worker within
    `queue_timeout` seconds is ended as lost. `publish_timeout` bounds the
    wait for the broker before a 503 (and the app's broker connect timeouts,
    unless it sets shorter ones). `log_ttl` is how long a run's log lives
    in the store after its last event when no `resume_window` sets it.

    Outputs: an image over `inline_output_limit` bytes (None: none) and every
    file a task returns (`FileIO`) reach the client by reference; the worker
    keeps them for `output_window` seconds (keep it equal to the proxy's
    `output_window`) in the shared output store (`ikproxy.stores.outputs`):
    in Redis up to `redis_output_limit` bytes, and at the fsspec URL
    `outputs_location` beyond (`file:///srv/outputs`, `s3://bucket/outputs`:
    a place every instance reads; without one, Redis keeps them all).
    """

    def __init__(
        self,
        celery_app: Any,
        *,
        store: RedisStore,
        name: str = "celery",
        timeout: float | None = None,
        queue_timeout: float = 600.0,
        publish_timeout: float = 2.0,
        log_ttl: float = 60.0,
        inline_output_limit: int | None = 1_000_000,
        output_window: float = 300.0,
        outputs_location: str | None = None,
        redis_output_limit: int = 1024 * 1024,
    ) -> None:
        for label, value in (
            ("queue_timeout", queue_timeout),
            ("publish_timeout", publish_timeout),
            ("log_ttl", log_ttl),
            ("output_window", output_window),
            ("timeout", timeout if timeout is not None else 1.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{label} must be a number of seconds > 0, not {value!r}")
        self.app = celery_app
        self.store = store
        self.name = name
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.publish_timeout = publish_timeout
        self.log_ttl = log_ttl
        self.inline_output_limit = inline_output_limit
        self.output_window = output_window
        #: Where workers keep the outputs served by reference, for every instance.
        self.outputs = SharedOutputs(
            store.url,
            prefix=store.prefix,
            timeout=store.timeout,
            location=outputs_location,
            redis_limit=redis_output_limit,
        )
        #: The reader of the run logs this instance follows: one connection for them all.
        self._tail = LogTail(store.url, prefix=store.prefix, timeout=store.timeout)
        #: Cancel requests from the web instances to the workers.
        self.signals = CancelSignals(store.url, prefix=store.prefix, timeout=store.timeout)
        #: Who follows runs here, for the store (the takeover of a run whose worker died).
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._tasks = TaskTable()
        self._queues: dict[str, str | None] = {}
        self._celery_tasks: dict[str, Any] = {}
        self._loop = WorkerLoop()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._takeover = Takeover(
            store, self.instance, attach=None, adopt=_never_adopted, ttl=log_ttl
        )
        _bound_broker_waits(celery_app, publish_timeout)

    def __repr__(self) -> str:
        return f"<CeleryDeployment {self.name!r} tasks={list(self._tasks.names)!r}>"

    # -- registration ------------------------------------------------------------

    @property
    def task_names(self) -> tuple[str, ...]:
        """The registered task names, the default one first."""
        return self._tasks.names

    def celery_task_name(self, task: str) -> str:
        """The name of task `task` in Celery (`ikproxy.<deployment>.<task>`)."""
        return f"ikproxy.{self.name}.{task}"

    def add_task(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        *,
        validate: Callable[..., object] | None = None,
        queue: str | None = None,
    ) -> None:
        """Register `fn` as task `name`, and as a Celery task of the app.

        `validate` is checked on the web instance before the run is accepted,
        as with `LocalDeployment.add_task`. `queue` routes the task's messages
        to a Celery queue (a GPU pool's `celery worker -Q gpu`, say).
        """
        spec = self._tasks.add(fn, name, validate)
        self._queues[spec.name] = queue

        def run(message: dict[str, Any]) -> None:
            self._loop.run(execute(self, spec, message))

        run.__name__ = run.__qualname__ = f"ikproxy_{spec.name}"
        # The queue is given to each message (Celery deprecates a task's `queue` attribute).
        options: dict[str, Any] = {"ignore_result": True, "acks_late": False}
        self._celery_tasks[spec.name] = self.app.task(
            name=self.celery_task_name(spec.name), **options
        )(run)

    @overload
    def task(self, fn: F, /) -> F: ...
    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        validate: Callable[..., object] | None = None,
        queue: str | None = None,
    ) -> Callable[[F], F]: ...
    def task(
        self,
        fn_or_name: Callable[..., Any] | str | None = None,
        /,
        *,
        validate: Callable[..., object] | None = None,
        queue: str | None = None,
    ) -> Any:
        """Decorator registering a task: `@deployment.task` or `@deployment.task(queue="gpu")`."""
        return task_decorator(self.add_task, fn_or_name, validate=validate, queue=queue)

    # -- running -----------------------------------------------------------------

    async def run_stream(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[Progress, None]:
        """Run a task on a worker: PENDING, then STARTED with progress, then SUCCESS.

        Refusals (the signature, `validate`, the store, the broker) raise from
        the first `__anext__()`. Closing the stream before the end cancels the run.
        """
        token, ttl = secrets.token_urlsafe(18), self.log_ttl
        spec, message = self.prepare(
            *inputs, parameters=parameters, task=task, timeout=timeout, token=token, ttl=ttl
        )
        await self.store.create_run(token, {"instance": self.instance}, ttl=ttl)
        stream = self._submitted(spec, message)
        async with aclosing(stream):
            async for progress in stream:
                yield progress

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

    async def run_logged(
        self,
        token: str,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
        ttl: float,
    ) -> AsyncGenerator[Progress, None]:
        """Submit a run whose (empty) log `token` exists in the store, then follow that log."""
        spec, message = self.prepare(
            *inputs, parameters=parameters, task=task, timeout=timeout, token=token, ttl=ttl
        )
        stream = self._submitted(spec, message)
        async with aclosing(stream):
            async for progress in stream:
                yield progress

    async def _submitted(
        self, spec: Task, message: dict[str, Any]
    ) -> AsyncGenerator[Progress, None]:
        """Submit a prepared run (its log exists), then follow its log to the end."""
        token, ttl = message["token"], message["ttl"]
        pending = TaskRun(spec.name, message["run_id"], None).progress(State.PENDING).to_json()
        await self._submit(spec, token, message["owner"], pending, message, ttl)

        finished = False
        reader = self._tail.follow(token)
        try:
            yield Progress.from_json(pending)  # a client that leaves here cancels the run too
            follower = StoredRun(
                self.store,
                token,
                RunInfo(1, False, False),
                ttl,
                self._takeover,
                mark_followed=False,
                read=reader.read,
            )
            events = follower.follow(1)
            try:
                async for event in events:
                    progress = Progress.from_json(event)
                    finished = progress.results is not None
                    yield progress
            finally:
                await aclose(events)
        except IkproxyError:
            finished = True  # the run's terminal error, or its log is gone
            raise
        finally:
            reader.close()
            if not finished:
                await self._cancel(token, ttl)

    def prepare(
        self,
        *inputs: InputLike,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
        token: str,
        ttl: float,
    ) -> tuple[Task, dict[str, Any]]:
        """The task and the Celery message of a run, once its checks passed (else a refusal).

        The signature, the task's `validate`, and what a message can carry (no
        file inputs, JSON parameters), before anything is sent anywhere.
        """
        timeout = self.timeout if timeout is None else timeout
        spec = self._tasks.get(task, self.name)
        values = as_inputs(*inputs)
        params = dict(parameters or {})
        spec.check(len(values), params)
        spec.bind_paths(values)
        run_id = uuid4().hex
        if spec.validate is not None:
            TaskRun(spec.name, run_id, None).call_validator(spec.validate, values, params)
        message = {
            "token": token,
            "run_id": run_id,
            "owner": f"celery:{run_id}",
            "ttl": ttl,
            "deadline": None if timeout is None else time.time() + timeout,
            "inputs": _wire_inputs(values),
            "parameters": params,
        }
        _check_json(message)
        return spec, message

    async def _submit(
        self,
        spec: Task,
        token: str,
        owner: str,
        pending: dict[str, Any],
        message: dict[str, Any],
        ttl: float,
    ) -> None:
        """Hold the lease for the queued run, log PENDING, publish; undo it all on a refusal."""
        store = self.store
        await store.acquire_lease(lease_name(token), owner, ttl=self.queue_timeout)
        try:
            if await store.append_events(token, 1, [pending], ttl=ttl) != 1:
                raise StoreUnavailable("the run's log is not in the store")
            await self._publish(spec, message)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await store.release_lease(lease_name(token), owner)
                    await store.delete_run(token)
                except StoreUnavailable:
                    pass
            raise

    async def _publish(self, spec: Task, message: dict[str, Any]) -> None:
        """Send the run's message; `BrokerUnavailable` if the broker does not take it in time."""
        from kombu.exceptions import KombuError
        from redis.exceptions import RedisError

        celery_task = self._celery_tasks[spec.name]
        queue = self._queues.get(spec.name)
        options: dict[str, Any] = {"task_id": message["run_id"], "retry": False}
        if queue is not None:
            options["queue"] = queue

        def send() -> None:
            celery_task.apply_async(args=(message,), **options)

        # One thread publishes for the whole process: a burst of runs queues for it rather
        # than growing a thread (and a broker connection) per run being submitted.
        future = asyncio.get_running_loop().run_in_executor(self._publisher(), send)
        try:
            with anyio.fail_after(self.publish_timeout):
                await asyncio.shield(future)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker did not take the run within {self.publish_timeout:g} s"
            ) from None
        except (OSError, KombuError, RedisError) as exc:
            raise BrokerUnavailable(f"the broker refused the run: {type(exc).__name__}") from exc

    def _publisher(self) -> ThreadPoolExecutor:
        """The thread that publishes this process's messages (made again after a fork)."""
        with self._lock:
            if self._executor is None or self._executor_pid != os.getpid():
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="ikproxy-publish")
                self._executor_pid = os.getpid()
            return self._executor

    async def _cancel(self, token: str, ttl: float) -> None:
        """Ask the run's worker to stop it (heard at once); never raises, never waits long."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self.signals.request(token, ttl=max(ttl, self.queue_timeout))
            except StoreUnavailable as exc:
                logger.warning("could not ask a worker to cancel a run [token=%s]: %s", token, exc)

    # -- on the worker -------------------------------------------------------------

    async def worker_outputs(self, outputs: tuple[BaseIO, ...], token: str) -> tuple[BaseIO, ...]:
        """The outputs as the run's log carries them: large ones kept for every instance.

        The worker calls it at the end of a run; each kept output becomes a
        reference (`outputs/<token>/<index>`) that any instance serves.
        """
        limit = self.inline_output_limit
        kept: list[SharedOutput | None] = []
        for output in outputs:
            if isinstance(output, FileIO):
                if output.is_dir:
                    raise TypeError("a task of a CeleryDeployment cannot return a folder")
                kept.append(SharedOutput(output.content_type, path=output.path))
            elif isinstance(output, ImageIO) and limit is not None:
                data = output.to_bytes()
                kept.append(SharedOutput(output.mime_type, data) if len(data) > limit else None)
            else:
                kept.append(None)
        if not any(kept):
            return outputs
        out = await self.outputs.put(kept, window=self.output_window)
        refs: list[BaseIO] = []
        for index, (output, shared) in enumerate(zip(outputs, kept, strict=True)):
            if shared is None:
                refs.append(output)
                continue
            of = output.kind if output.kind in ("image", "storage_object") else "file"
            url = f"outputs/{out}/{index}"
            refs.append(RefIO(url, of=of, content_type=shared.content_type, size=shared.size))
        return tuple(refs)


def _wire_inputs(values: list[BaseIO]) -> list[dict[str, Any]]:
    """The inputs as the Celery message carries them (their wire form)."""
    wire = []
    for index, value in enumerate(values):
        if isinstance(value, FileIO):
            raise InvalidInput(f"input {index} is a file: a Celery task takes inline inputs only")
        wire.append(value.to_json())
    return wire


def _check_json(message: dict[str, Any]) -> None:
    try:
        json.dumps(message)
    except (TypeError, ValueError):
        raise InvalidParameter("the parameters of a Celery run must be JSON values") from None


def _never_adopted(*_: object) -> object:
    raise AssertionError("a Celery run is never attached to: its takeover ends it lost")


def _bound_broker_waits(celery_app: Any, seconds: float) -> None:
    """Connecting to the broker gives up after `seconds`, unless the app says otherwise."""
    conf = celery_app.conf
    options = dict(conf.broker_transport_options or {})
    options.setdefault("socket_connect_timeout", seconds)
    conf.broker_transport_options = options
    if not conf.get("broker_connection_timeout") or conf.broker_connection_timeout > seconds:
        conf.broker_connection_timeout = seconds
