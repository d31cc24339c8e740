"""Logs that join up: the request id, run id and trace ids as fields of every ikproxy record.

`LogContext` is a `logging.Filter` set on the `ikproxy` logger: it copies the
current request's ids (held in a context variable, so that they follow the
request into its tasks) onto each record as `request_id`, `run_id`,
`trace_id` and `span_id` (None when unknown), where a JSON formatter reads
them like any `extra` field.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["LogContext", "bind_request", "install_log_context", "log_context", "set_run_id"]

#: The loggers ikproxy writes to (a filter on a logger sees only its own records).
LOGGERS = ("ikproxy", "ikproxy.deployments.scale", "ikproxy.local")

#: (request id, run id) of the request being handled in this context.
_IDS: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "ikproxy_log_ids", default=(None, None)
)


@contextlib.contextmanager
def log_context(request_id: str | None, run_id: str | None = None) -> Iterator[None]:
    """Tag the ikproxy log records of this block (and the tasks it starts) with these ids."""
    token = _IDS.set((request_id, run_id))
    try:
        yield
    finally:
        _IDS.reset(token)


def bind_request(request_id: str) -> str:
    """Tag this context's ikproxy log records with `request_id` (a new request); return it."""
    _IDS.set((request_id, None))
    return request_id


def set_run_id(run_id: str) -> None:
    """Add the run id, once known, to the ids of the current context."""
    request_id, _ = _IDS.get()
    _IDS.set((request_id, run_id))


class LogContext(logging.Filter):
    """Adds `request_id`, `run_id`, `trace_id` and `span_id` to every record it sees.

    A field already given by the call (`extra={"request_id": ...}`) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id, run_id = _IDS.get()
        fields = record.__dict__
        fields.setdefault("request_id", request_id)
        fields.setdefault("run_id", run_id)
        if "trace_id" not in fields:
            fields["trace_id"], fields["span_id"] = _trace_ids()
        return True


def _trace_ids() -> tuple[str | None, str | None]:
    """The current span's trace and span ids in hex, when OpenTelemetry has one."""
    from ikproxy.telemetry.instruments import otel_api

    api = otel_api()
    if api is None:
        return None, None
    trace: Any = api.trace
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def install_log_context() -> None:
    """Put one `LogContext` on each of ikproxy's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LogContext) for f in logger.filters):
            logger.addFilter(LogContext())
