"""`ikproxy demo --metrics`: the demo's OpenTelemetry metrics as a Prometheus page.

The demo's proxies report to a meter provider of their own, read by the
SDK's Prometheus reader in a registry of its own, which `prometheus_client`
serves at `/metrics/`. Nothing global is set. Needs `ikproxy[prometheus]`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ikproxy.telemetry import Telemetry

__all__ = ["MISSING", "available", "prometheus"]

#: What to install when the packages are missing.
MISSING = (
    "--metrics needs the OpenTelemetry SDK and prometheus_client: pip install 'ikproxy[prometheus]'"
)


def available() -> bool:
    """Whether the packages `prometheus()` needs are installed."""
    names = ("opentelemetry.sdk", "opentelemetry.exporter.prometheus", "prometheus_client")
    try:
        return all(importlib.util.find_spec(name) is not None for name in names)
    except ImportError:  # a parent package missing
        return False


def prometheus() -> tuple[Telemetry, Any]:
    """(the `Telemetry` the demo's proxies report to, the ASGI app serving its metrics).

    Raises ImportError (with `MISSING` as its message) without the packages.
    """
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry, make_asgi_app
    except ImportError:
        raise ImportError(MISSING) from None
    own = CollectorRegistry()
    registry: CollectorRegistry | None = own
    try:
        reader = PrometheusMetricReader(registry=own)
    except TypeError:  # an exporter older than its `registry` option: the default registry
        reader, registry = PrometheusMetricReader(), None
    provider = MeterProvider(metric_readers=[reader])
    app = make_asgi_app(registry) if registry is not None else make_asgi_app()
    return Telemetry(meter_provider=provider), app
