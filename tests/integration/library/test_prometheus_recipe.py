"""The Prometheus recipe, run as written: examples/prometheus/app.py under uvicorn.

After real traffic (runs, refusals, a resume, a client leaving mid-upload) its
`/metrics` page holds every metric the Grafana dashboard in docs/ queries, the
billing hook has written each caller's seconds to SQLite, and the log lines
are JSON objects carrying the request id.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ikproxy.browser import process_streaming_response_sync
from tests.support.servers import ROOT, free_port, running_server

KEY = "recipe-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DASHBOARD = ROOT / "docs" / "guides" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[str]]]:
    db = tmp_path_factory.mktemp("recipe") / "billing.sqlite3"
    port = free_port()
    env = {"IKPROXY_EXAMPLE_KEY": KEY, "IKPROXY_BILLING_DB": str(db), "IKOMIA_ENDPOINT": None}
    script = ROOT / "examples" / "prometheus" / "app.py"
    args = [sys.executable, str(script), "--port", str(port)]
    with running_server(args, ready="Uvicorn running on", env=env) as proc:
        yield f"http://127.0.0.1:{port}", db, proc.all_output  # type: ignore[attr-defined]


def _traffic(url: str, port: int) -> str:
    """Runs, refusals, a resume, and a client that leaves mid-upload: its request id."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for user in ("alice", "alice", "bob"):
            with http.stream(
                "GET",
                "/api/run",
                params={"prompt": "a lighthouse"},
                headers={**AUTH, "X-User": user},
            ) as response:
                assert response.status_code == 200
                process_streaming_response_sync(response)
        assert http.get("/api/run", params={"prompt": "x"}).status_code == 401
        assert http.get("/api/run", headers=AUTH).status_code == 400
        # A client that drops its stream, then resumes it from its last event id.
        with http.stream("GET", "/api/run", params={"prompt": "a ship"}, headers=AUTH) as response:
            head = b""
            for chunk in response.iter_bytes():
                head += chunk
                if b"\nid: " in head and head.endswith(b"\n\n"):
                    break
        last_id = re.findall(rb"\nid: (\S+)", head)[-1].decode()
        with http.stream("GET", "/api/run", headers={**AUTH, "Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            process_streaming_response_sync(response)
        assert http.get("/api/run", headers={**AUTH, "Last-Event-ID": "gone:3"}).status_code == 410
    # A client that leaves mid-upload: ikproxy logs it, with its request id.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /api/run HTTP/1.1\r\nHost: x\r\nX-Request-ID: leaver-123\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt"'
        )
    return "leaver-123"


def _metric_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] not in "#"}


def test_the_recipe_exports_every_dashboard_metric_bills_and_logs_json(
    recipe: tuple[str, Path, list[str]],
) -> None:
    url, db, output = recipe
    leaver = _traffic(url, int(url.rsplit(":", 1)[1]))
    with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as http:
        page = http.get("/metrics")
    assert page.status_code == 200
    names = _metric_names(page.text)
    # Three runs, one dropped (disconnected) and resumed: its resumed stream ends with a result.
    assert re.search(r'ikproxy_runs_total\{[^}]*outcome="result"[^}]*\} 4\.0', page.text)
    assert re.search(r'ikproxy_runs_total\{[^}]*outcome="disconnected"[^}]*\} 1\.0', page.text)
    assert re.search(r'ikproxy_requests_refused_total\{[^}]*code="unauthenticated"', page.text)
    assert re.search(r'ikproxy_resumes_total\{[^}]*outcome="resumed"[^}]*\} 1\.0', page.text)
    assert re.search(r'ikproxy_resumes_total\{[^}]*outcome="expired"[^}]*\} 1\.0', page.text)
    assert re.search(r'ikproxy_run_duration_seconds_bucket\{le="0\.05"', page.text)

    # Every query of the dashboard names only metrics the app exports.
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries.append(dashboard["templating"]["list"][1]["query"])
    queried = {m for q in queries for m in re.findall(r"\bikproxy_[a-z_]+", q)}
    assert len(queried) >= 7
    assert queried <= names, queried - names

    # The billing hook: the seconds of each caller's runs (the resumed stream counted once).
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(db) as connection:
            found = connection.execute("SELECT caller, runs, seconds FROM usage").fetchall()
        rows = {caller: (runs, seconds) for caller, runs, seconds in found}
        if rows.get("anonymous", (0,))[0] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows["alice"][0] == 2
    assert rows["bob"][0] == 1
    assert rows["anonymous"][0] == 1  # the dropped run, not its resumed stream
    assert all(seconds > 0 for _, seconds in rows.values())

    # JSON log lines, with the request id as a field.
    deadline = time.monotonic() + 10
    while not any(leaver in line for line in output) and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in output if leaver in line]
    record = json.loads(line)
    assert record["request_id"] == leaver
    assert record["logger"] == "ikproxy"
