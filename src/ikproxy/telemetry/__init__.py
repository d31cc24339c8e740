"""What ikproxy tells its operators: OpenTelemetry traces and metrics, joined-up logs, run ends.

ikproxy reports through the OpenTelemetry API only (the optional extra `otel`):
the application configures the SDK and its exporters, as it always does, and
with no SDK every call is a no-op that costs next to nothing. Without
`opentelemetry-api` installed, all of it is skipped. `instruments` names the
metrics and makes them, `spans` holds the span helpers of the deployments and
stores, `logs` puts the request id, run id and trace ids on every ikproxy log
record, and `runs` observes each run from its request to its terminal event,
recording it and handing a `RunSummary` to `Policy(on_run_end=...)`.
"""

from __future__ import annotations

from ikproxy.telemetry.instruments import (
    DURATION_BUCKETS,
    METRICS,
    Telemetry,
    default_telemetry,
)
from ikproxy.telemetry.logs import LogContext, log_context
from ikproxy.telemetry.runs import RunObserver
from ikproxy.telemetry.spans import span
from ikproxy.telemetry.summary import RunEndHook, RunSummary

__all__ = [
    "DURATION_BUCKETS",
    "METRICS",
    "LogContext",
    "RunEndHook",
    "RunObserver",
    "RunSummary",
    "Telemetry",
    "default_telemetry",
    "log_context",
    "span",
]
