"""The metrics ikproxy exports, by name, and the object that makes them: `Telemetry`.

Every instrument has the scope `ikproxy`. Durations are in seconds, with
bucket boundaries made for seconds (the SDK's default ones are made for
milliseconds). Attribute values come from closed sets only: outcomes, error
codes, task names the policy allows, deployment kinds; never a prompt, a
caller key, a run id or a URL.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ikproxy.__about__ import __version__

__all__ = ["DURATION_BUCKETS", "METRICS", "Metric", "Telemetry", "default_telemetry", "otel_api"]

#: Histogram bucket boundaries for durations, in seconds.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


@dataclass(frozen=True)
class Metric:
    """One instrument: its name, kind, unit and meaning."""

    name: str
    kind: str  # "counter", "updown" or "histogram"
    unit: str
    description: str


#: Every metric ikproxy exports, by the attribute of `Telemetry` that holds it.
METRICS: dict[str, Metric] = {
    "runs_active": Metric("ikproxy.runs.active", "updown", "", "Runs streaming now."),
    "runs": Metric("ikproxy.runs", "counter", "", "Runs that ended, by outcome."),
    "refused": Metric(
        "ikproxy.requests.refused", "counter", "", "Requests answered 4xx/5xx before a run."
    ),
    "duration": Metric(
        "ikproxy.run.duration", "histogram", "s", "From the run request to its end."
    ),
    "first_event": Metric(
        "ikproxy.run.time_to_first_event",
        "histogram",
        "s",
        "From the run request to its first event sent.",
    ),
    "events": Metric("ikproxy.events.sent", "counter", "", "Events sent to clients."),
    "bytes": Metric("ikproxy.bytes.sent", "counter", "By", "Bytes of streams sent to clients."),
    "resumes": Metric("ikproxy.resumes", "counter", "", "Resumes and takeovers, by outcome."),
    "upstream_errors": Metric(
        "ikproxy.upstream.errors", "counter", "", "Failures of the deployment, by code."
    ),
    "store_errors": Metric("ikproxy.store.errors", "counter", "", "Store calls that failed."),
    "store_duration": Metric("ikproxy.store.duration", "histogram", "s", "Store calls' duration."),
    "uploads_bytes": Metric(
        "ikproxy.uploads.bytes", "counter", "By", "Bytes uploaded to the deployment's storage."
    ),
}

#: The error codes that mean the deployment failed (counted by `ikproxy.upstream.errors`).
UPSTREAM_CODES = frozenset({"upstream_failed", "unauthorized", "workflow_failed", "timeout"})


@functools.cache
def otel_api() -> Any:
    """The OpenTelemetry API (`.trace`, `.metrics`, `.context`), or None without it."""
    try:
        return SimpleNamespace(
            context=importlib.import_module("opentelemetry.context"),
            trace=importlib.import_module("opentelemetry.trace"),
            metrics=importlib.import_module("opentelemetry.metrics"),
        )
    except ImportError:
        return None


class _Noop:
    """Stands for every instrument and the tracer when OpenTelemetry is off: does nothing."""

    def add(self, amount: float, attributes: Any = None) -> None:
        pass

    def record(self, amount: float, attributes: Any = None) -> None:
        pass


class Telemetry:
    """ikproxy's tracer and instruments, from the given providers or the global ones.

    With no provider given, the global ones are used, as the application sets
    them (before or after this is made: the API's proxies follow). With
    `enabled=False`, or without `opentelemetry-api`, nothing is recorded.
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        enabled: bool = True,
    ) -> None:
        api = otel_api() if enabled else None
        #: Whether anything is recorded (the API is installed and not switched off).
        self.enabled = api is not None
        self.tracer: Any = None
        self._global_tracing = False
        self.runs_active: Any = _Noop()
        self.runs: Any = _Noop()
        self.refused: Any = _Noop()
        self.duration: Any = _Noop()
        self.first_event: Any = _Noop()
        self.events: Any = _Noop()
        self.bytes: Any = _Noop()
        self.resumes: Any = _Noop()
        self.upstream_errors: Any = _Noop()
        self.store_errors: Any = _Noop()
        self.store_duration: Any = _Noop()
        self.uploads_bytes: Any = _Noop()
        if api is None:
            return
        self.tracer = api.trace.get_tracer("ikproxy", __version__, tracer_provider)
        self._global_tracing = tracer_provider is None
        meter = api.metrics.get_meter("ikproxy", __version__, meter_provider)
        for attribute, metric in METRICS.items():
            setattr(self, attribute, _make(meter, metric))

    def tracing(self) -> bool:
        """Whether spans go anywhere: a tracer provider given, or an SDK set as the global one
        (checked each time: the application may set it after ikproxy started)."""
        if self.tracer is None:
            return False
        if not self._global_tracing:
            return True
        api = otel_api()
        return not isinstance(api.trace.get_tracer_provider(), api.trace.ProxyTracerProvider)


def _make(meter: Any, metric: Metric) -> Any:
    if metric.kind == "counter":
        return meter.create_counter(metric.name, unit=metric.unit, description=metric.description)
    if metric.kind == "updown":
        return meter.create_up_down_counter(
            metric.name, unit=metric.unit, description=metric.description
        )
    try:
        return meter.create_histogram(
            metric.name,
            unit=metric.unit,
            description=metric.description,
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
    except TypeError:  # an API older than the advisory: the view's buckets apply
        return meter.create_histogram(metric.name, unit=metric.unit, description=metric.description)


@functools.cache
def default_telemetry() -> Telemetry:
    """The process's `Telemetry` on the global providers (for stores and deployments)."""
    return Telemetry()
