"""One run observed from its request to its terminal event: its span, its metrics, its summary.

The proxy core makes a `RunObserver` when a `/run` request is routed. A
refusal before the stream ends it with `refused(code)`; otherwise the
stream that sends the run to its client (`ikproxy.proxy.stream.RunStream`,
whatever the deployment and whether the run is new, resumed or followed
from the store) reports its events and bytes, and calls `end(outcome)` once,
after the terminal event or when the client left. That one place records
the run's metrics, ends its span, and hands a `RunSummary` to the run-end
hook in a task of its own, so that a slow hook never delays a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Iterator
from typing import Any

from ikproxy.telemetry.instruments import UPSTREAM_CODES, Telemetry
from ikproxy.telemetry.logs import log_context, set_run_id
from ikproxy.telemetry.summary import RunEndHook, RunSummary

__all__ = ["RunObserver", "call_hook"]

logger = logging.getLogger("ikproxy")

#: The hooks in flight (a task is kept referenced until it is done).
_hooks: set[asyncio.Task[None]] = set()


class RunObserver:
    """A run's telemetry and accounting, from its request to its end (each reported once)."""

    __slots__ = (
        "_attributes",
        "_first_at",
        "_on_end",
        "_span",
        "_start",
        "_streaming",
        "caller_key",
        "ended",
        "native",
        "request_id",
        "resumed",
        "run_id",
        "source",
        "started_at",
        "task",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        request_id: str,
        *,
        task: str | None = None,
        deployment: str = "",
        native: Any = None,
        on_end: RunEndHook | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.request_id = request_id
        self.task = task
        self.native = native
        self._on_end = on_end
        self.caller_key: str | None = None
        self.resumed = False
        self.run_id: str | None = None
        #: The run followed (a resumable run): whether it was taken over is read from it.
        self.source: Any = None
        self.ended = False
        self._streaming = False
        self._first_at: float | None = None
        self.started_at = time.time()
        self._start = time.perf_counter()
        self._attributes = {"task": task} if task else {}
        self._span: Any = None
        if telemetry.tracing():
            attributes = {"ikproxy.task": task or "", "ikproxy.deployment": deployment}
            span = telemetry.tracer.start_span("ikproxy.run", attributes=attributes)
            # Without an SDK the span is the API's invalid one: nothing to carry or end.
            self._span = span if span.get_span_context().is_valid else None

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make the run's span the current one (its child spans nest under it) in this block."""
        if self._span is None:
            yield
            return
        from ikproxy.telemetry.instruments import otel_api

        with otel_api().trace.use_span(self._span, end_on_exit=False):
            yield

    def refused(self, code: str) -> None:
        """The request was refused before its stream: count it by `code`, end the span."""
        if self.ended:
            return
        self.ended = True
        telemetry = self.telemetry
        telemetry.refused.add(1, {"code": code})
        if code in UPSTREAM_CODES:
            telemetry.upstream_errors.add(1, {"code": code})
        if code == "resume_expired":
            telemetry.resumes.add(1, {"outcome": "expired"})
        if self._span is not None:
            self._end_span(code, error=True)

    def streaming(self) -> Any:
        """The stream starts in this context: the run counts as active until `end`, and its
        span is the current one until `detach(token)` (the returned token)."""
        if not self._streaming:
            self._streaming = True
            self.telemetry.runs_active.add(1, self._attributes)
            if self.resumed:
                self.telemetry.resumes.add(1, {"outcome": "resumed"})
        if self._span is None:
            return None
        from ikproxy.telemetry.instruments import otel_api

        api = otel_api()
        return api.context.attach(api.trace.set_span_in_context(self._span))

    def detach(self, token: Any) -> None:
        """Undo `streaming`'s current span (`token` is what it returned)."""
        if token is not None:
            from ikproxy.telemetry.instruments import otel_api

            otel_api().context.detach(token)

    def first_event(self, obj: Any) -> None:
        """The first event is out: note the time, and the upstream run id it names."""
        self._first_at = time.perf_counter()
        run_id = obj.get("uuid") if hasattr(obj, "get") else None
        if isinstance(run_id, str) and run_id:
            self.run_id = run_id
            set_run_id(run_id)
            if self._span is not None:
                self._span.set_attribute("ikproxy.run_id", run_id)

    def end(self, outcome: str, events: int, sent: int) -> None:
        """The stream ended with `outcome` after `events` events and `sent` bytes (once)."""
        if self.ended:
            return
        self.ended = True
        now = time.perf_counter()
        duration = now - self._start
        telemetry = self.telemetry
        if telemetry.enabled:
            attributes = self._attributes
            if self._streaming:
                telemetry.runs_active.add(-1, attributes)
            telemetry.runs.add(1, {"outcome": outcome, **attributes})
            telemetry.duration.record(duration, {"outcome": outcome, **attributes})
            if self._first_at is not None:
                telemetry.first_event.record(self._first_at - self._start, attributes)
            telemetry.events.add(events, attributes)
            telemetry.bytes.add(sent, attributes)
            if outcome in UPSTREAM_CODES:
                telemetry.upstream_errors.add(1, {"code": outcome})
            if self._span is not None:
                self._span.set_attribute("ikproxy.events", events)
                self._span.set_attribute("ikproxy.resumed", self.resumed)
                self._end_span(outcome, error=outcome not in ("result", "disconnected"))
        if self._on_end is not None:
            summary = RunSummary(
                task=self.task,
                outcome=outcome,
                caller_key=self.caller_key,
                request_id=self.request_id,
                started_at=self.started_at,
                ended_at=self.started_at + duration,
                duration=duration,
                events=events,
                bytes=sent,
                upstream_run_id=self.run_id,
                resumed=self.resumed,
                taken_over=bool(getattr(self.source, "taken_over", False)),
            )
            call_hook(self._on_end, self.native, summary, self.request_id)

    def _end_span(self, outcome: str, *, error: bool) -> None:
        from ikproxy.telemetry.instruments import otel_api

        span = self._span
        span.set_attribute("ikproxy.outcome", outcome)
        if error:
            span.set_status(otel_api().trace.Status(otel_api().trace.StatusCode.ERROR, outcome))
        span.end()


def call_hook(hook: RunEndHook, request: Any, summary: RunSummary, request_id: str) -> None:
    """Call `hook(request, summary)` in a task of its own (a sync hook in a worker thread).

    Its exceptions are logged under the request id; nothing waits for it.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        with log_context(request_id):
            _run_sync(hook, request, summary, request_id)
        return
    task = loop.create_task(_call_async(hook, request, summary, request_id))
    _hooks.add(task)
    task.add_done_callback(_hooks.discard)


async def _call_async(hook: RunEndHook, request: Any, summary: RunSummary, request_id: str) -> None:
    try:
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
            getattr(hook, "__call__", None)  # noqa: B004
        ):
            result: Any = hook(request, summary)
        else:
            result = await asyncio.to_thread(hook, request, summary)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("the on_run_end hook failed [request_id=%s]", request_id)


def _run_sync(hook: RunEndHook, request: Any, summary: RunSummary, request_id: str) -> None:
    try:
        result: Any = hook(request, summary)
        if inspect.isawaitable(result):
            asyncio.run(result)  # type: ignore[arg-type]
    except Exception:
        logger.exception("the on_run_end hook failed [request_id=%s]", request_id)
