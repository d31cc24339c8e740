"""The instruments' names and units, and OpenTelemetry staying optional and out of the way."""

from __future__ import annotations

import subprocess
import sys

from ikproxy.telemetry import METRICS, Telemetry
from tests.support.servers import ROOT


def test_the_metric_names_and_units_are_the_documented_ones() -> None:
    assert {m.name: (m.kind, m.unit) for m in METRICS.values()} == {
        "ikproxy.runs.active": ("updown", ""),
        "ikproxy.runs": ("counter", ""),
        "ikproxy.requests.refused": ("counter", ""),
        "ikproxy.run.duration": ("histogram", "s"),
        "ikproxy.run.time_to_first_event": ("histogram", "s"),
        "ikproxy.events.sent": ("counter", ""),
        "ikproxy.bytes.sent": ("counter", "By"),
        "ikproxy.resumes": ("counter", ""),
        "ikproxy.upstream.errors": ("counter", ""),
        "ikproxy.store.errors": ("counter", ""),
        "ikproxy.store.duration": ("histogram", "s"),
        "ikproxy.uploads.bytes": ("counter", "By"),
    }


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_codecs_or_the_proxy_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, ikproxy.codecs, ikproxy.proxy, ikproxy.telemetry\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    assert _fresh(code) == "[]"


def test_without_opentelemetry_everything_is_a_no_op() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if it were not installed\n"
        "from ikproxy.telemetry import Telemetry, span\n"
        "from ikproxy.telemetry.spans import store_call\n"
        "t = Telemetry()\n"
        "t.runs.add(1, {'outcome': 'result'}); t.duration.record(1.0)\n"
        "with span('x') as s, store_call('read'):\n"
        "    pass\n"
        "print(t.enabled, t.tracer, s)"
    )
    assert _fresh(code) == "False None None"


def test_a_switched_off_telemetry_records_nothing() -> None:
    telemetry = Telemetry(enabled=False)
    assert not telemetry.enabled
    assert telemetry.tracer is None
