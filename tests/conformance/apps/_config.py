"""The one configuration every conformance app mounts, whatever its framework.

Each app in this folder serves the proxy at `/api` (so `/api/run`,
`/api/health`, `/api/ikproxy.js`) on a SCALE client pointed at the fake
SCALE server whose URL is in `CONFORMANCE_FAKE_URL`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any

from ikproxy import Client
from ikproxy.policy import AccessDenied, Param, TokenBucket
from ikproxy.telemetry import RunSummary

FAKE_TOKEN = "conformance-token-5ecret"
API_KEY = "conformance-key"
PREFIX = "/api"
#: The one front end of another site allowed to start runs (CORS).
ALLOWED_ORIGIN = "https://app.example.com"


def _log_ikproxy() -> None:
    """ikproxy's INFO lines on stderr, whatever the framework does with logging."""
    logger = logging.getLogger("ikproxy")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "ikproxy_conformance", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.ikproxy_conformance = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("ikproxy %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def deployment() -> Client:
    _log_ikproxy()
    url = os.environ["CONFORMANCE_FAKE_URL"]
    return Client(url, token=FAKE_TOKEN, api_url=url)


def authorize(request: Any) -> None:
    """Every framework's request has case-insensitive `.headers.get`."""
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        raise AccessDenied(401, "Bearer key required.")


def rate_limit_key(request: Any) -> str:
    return str(request.headers.get("x-client") or "anonymous")


_ends = threading.Lock()


def on_run_end(request: Any, summary: RunSummary) -> None:
    """Append the summary as a JSON line to the file in `CONFORMANCE_RUN_ENDS`, if set."""
    path = os.environ.get("CONFORMANCE_RUN_ENDS")
    if path:
        line = json.dumps({**summary.__dict__, "request": type(request).__name__})
        with _ends, open(path, "a") as file:
            file.write(line + "\n")


def policy() -> dict[str, Any]:
    """Keyword arguments for `Proxy` / every adapter factory."""
    return {
        "parameters": {"prompt": Param(str, required=True, max_length=500)},
        "authorize": authorize,
        "rate_limit": TokenBucket(rate=0.001, burst=3),
        "rate_limit_key": rate_limit_key,
        "max_upload_bytes": 64 * 1024,
        "keepalive": 0.5,
        "timeout": 60.0,
        "allowed_origins": [ALLOWED_ORIGIN],
        "on_run_end": on_run_end,
    }
