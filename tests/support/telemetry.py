"""A `Telemetry` on the SDK's in-memory span exporter and metric reader, for one test.

The providers are passed explicitly (never set as OpenTelemetry's global ones),
so every test reads only what its own proxy recorded.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ikproxy.telemetry import Telemetry

Attributes = frozenset[tuple[str, Any]]


class Recorder:
    """Spans and metric points recorded by `self.telemetry`."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer_provider = tracer_provider
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(
            tracer_provider=tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self, name: str = "ikproxy.run") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> dict[Attributes, Any]:
        """`{attributes: value}` of a metric: a sum's value, a histogram's count."""
        found: dict[Attributes, Any] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric_ in scope.metrics:
                    if metric_.name != metric:
                        continue
                    for point in metric_.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        found[key] = getattr(point, "value", getattr(point, "count", None))
        return found

    def total(self, metric: str, **attributes: Any) -> Any:
        """The sum of a metric's points whose attributes include `attributes`."""
        wanted = set(attributes.items())
        return sum(v for k, v in self.points(metric).items() if wanted <= set(k))

    def histogram(self, metric: str) -> list[Any]:
        """The data points of a histogram (with their bucket boundaries)."""
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric_ in scope.metrics:
                    if metric_.name == metric:
                        points += list(metric_.data.data_points)
        return points


@functools.cache
def global_recorder() -> Recorder:
    """A `Recorder` set as OpenTelemetry's global providers, once per test session.

    For what reports to the global providers (the SCALE client's spans, the stores'
    metrics); OpenTelemetry refuses to replace a global provider, so it is made once
    and tests compare its figures before and after.
    """
    from opentelemetry import metrics, trace

    from ikproxy.telemetry import default_telemetry

    _reset_globals()
    recorder = Recorder()
    trace.set_tracer_provider(recorder.tracer_provider)
    metrics.set_meter_provider(recorder.meter_provider)
    default_telemetry.cache_clear()  # its instruments came from the providers before
    return recorder


def _reset_globals() -> None:
    """Forget the global providers an earlier test set (the docs' recipes set them, as an
    application does), as OpenTelemetry's own test utilities do: it sets them once only."""
    from opentelemetry import trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
