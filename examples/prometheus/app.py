"""ikproxy with Prometheus metrics, JSON logs and per-caller billing: the proxy at /api.

    python examples/prometheus/app.py --port 8000

The OpenTelemetry SDK exports ikproxy's metrics through its Prometheus reader;
prometheus_client serves them at /metrics/. Every log line is one JSON object
with the request id, run id and trace ids; every run's seconds are added to its
caller's account in a SQLite file (IKPROXY_BILLING_DB, default billing.sqlite3).
Set IKPROXY_EXAMPLE_KEY to require `Authorization: Bearer <key>` on /api/run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import uvicorn
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route

from ikproxy import RunSummary
from ikproxy.adapters.starlette import mount
from ikproxy.demo import from_env
from ikproxy.policy import AccessDenied, Param

INDEX = Path(__file__).resolve().parent.parent / "shared" / "index.html"

# -- metrics: the SDK, as any OpenTelemetry application configures it ---------------
metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))


# -- logs: one JSON object per line, with ikproxy's ids as fields -------------------
class JSONFormatter(logging.Formatter):
    FIELDS = ("request_id", "run_id", "trace_id", "span_id")

    def format(self, record: logging.LogRecord) -> str:
        line = {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update({f: getattr(record, f) for f in self.FIELDS if getattr(record, f, None)})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


handler = logging.StreamHandler()
handler.setFormatter(JSONFormatter())
logging.getLogger("ikproxy").addHandler(handler)
logging.getLogger("ikproxy").setLevel(logging.INFO)


# -- billing: the seconds of every run, per caller, in SQLite -----------------------
class Billing:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS usage (caller TEXT PRIMARY KEY, runs INT, seconds REAL)"
        )
        self.lock = threading.Lock()

    def __call__(self, request: Request, summary: RunSummary) -> None:
        """`on_run_end`: runs in a worker thread, after the run's last event went out."""
        if summary.resumed:
            return  # count a run once, by its first stream
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO usage VALUES (?, 1, ?) ON CONFLICT(caller) DO UPDATE SET"
                " runs = runs + 1, seconds = seconds + excluded.seconds",
                (summary.caller_key or "anonymous", summary.duration),
            )


billing = Billing(os.environ.get("IKPROXY_BILLING_DB", "billing.sqlite3"))


def caller(request: Request) -> str:
    """Who pays (and whose rate limit applies): your own user id goes here."""
    return request.headers.get("X-User", "anonymous")


def authorize(request: Request) -> None:
    key = os.environ.get("IKPROXY_EXAMPLE_KEY")
    if key and request.headers.get("Authorization") != f"Bearer {key}":
        raise AccessDenied(401, "Bearer key required.")


async def index(request: Request) -> FileResponse:
    return FileResponse(INDEX)


app = Starlette(
    routes=[
        Route("/", index),
        Mount("/metrics", app=make_asgi_app()),
        mount(
            "/api",
            from_env(),
            authorize=authorize,
            rate_limit_key=caller,
            parameters={"prompt": Param(str, required=True, max_length=500)},
            resume_window=60,
            on_run_end=billing,
        ),
    ]
)


def usage() -> dict[str, Any]:
    """What each caller used so far: {caller: (runs, seconds)}."""
    with billing.lock:
        rows = billing.db.execute("SELECT caller, runs, seconds FROM usage").fetchall()
    return {name: (runs, seconds) for name, runs, seconds in rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)
