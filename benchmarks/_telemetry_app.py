"""The app `benchmarks/telemetry.py` serves: the whole proxy on a deployment of 20 events.

`IKPROXY_BENCH_MODE` says what the process runs with: `nosdk` (the OpenTelemetry API
alone, as after `pip install ikproxy[otel]`), `sdk` (the SDK configured: the Prometheus
reader, and spans recorded then dropped by their processor), or `before` (the code
before the instrumentation, put first on `PYTHONPATH` by the benchmark).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio

import ikproxy
from ikproxy import Progress, Results, TaskIO
from ikproxy.asgi import create_app

MODE = os.environ.get("IKPROXY_BENCH_MODE", "nosdk")
EVENTS = 20

if MODE == "sdk":
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    class Drop(SpanProcessor):
        """Spans are made and ended as with any exporter, then dropped."""

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(Drop())
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))

print(f"mode {MODE}: ikproxy from {os.path.dirname(ikproxy.__file__)}", file=sys.stderr)


class Steps:
    """A deployment whose runs send 19 progress events 10 ms apart, then the result."""

    async def run_stream(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        task: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Progress]:
        for i in range(EVENTS - 1):
            yield Progress(
                "STARTED", (EVENTS - i, EVENTS - i), run_id="r", uuid="u", fraction=i / EVENTS
            )
            await anyio.sleep(0.01)
        yield Progress("SUCCESS", uuid="u", results=Results((TaskIO("text", {"t": "done"}),)))

    async def run(self, *inputs: Any, **kwargs: Any) -> Results:
        raise NotImplementedError


app = create_app(Steps(), parameters={"prompt": str}, rate_limit=None)
