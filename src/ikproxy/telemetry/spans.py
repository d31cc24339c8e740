"""Child spans for the work a run does: the deployment's calls, the store's.

`span(name)` starts a span of the `ikproxy` tracer as the current one, so
that an HTTP client instrumentation (httpx's) nests its spans under it and
carries the trace context upstream. `store_call(operation)` times a store
call into `ikproxy.store.duration` and counts its failures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ikproxy.telemetry.instruments import Telemetry, default_telemetry

__all__ = ["span", "store_call"]


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    telemetry: Telemetry | None = None,
) -> Iterator[Any]:
    """A child span `name` around the block (None when telemetry is off); errors set its status."""
    telemetry = telemetry or default_telemetry()
    if not telemetry.tracing():
        yield None
        return
    with telemetry.tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextlib.contextmanager
def store_call(operation: str, telemetry: Telemetry | None = None) -> Iterator[None]:
    """Time one store call (`operation`: a method name) and count it if it fails."""
    telemetry = telemetry or default_telemetry()
    if not telemetry.enabled:
        yield
        return
    attributes = {"operation": operation}
    start = time.perf_counter()
    try:
        yield
    except Exception:
        telemetry.store_errors.add(1, attributes)
        raise
    finally:
        telemetry.store_duration.record(time.perf_counter() - start, attributes)
