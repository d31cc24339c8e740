"""The `ikproxy` command line: --version, demo, serve, run, and their exit statuses.

Servers are real subprocesses on loopback (`ikproxy demo` itself, and the browser
tests' app for the failure routes); `ikproxy run` is called in-process through
`main()` so that its output can be read exactly.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ikproxy import Progress, Results, __version__
from ikproxy.cli import _ProgressLine, main
from tests.support.browser import ROOT, app_command, png
from tests.support.servers import free_port, running_server

CONSUMER = ROOT / "examples" / "frontends" / "python" / "consumer.py"
NO_SCALE = {"IKOMIA_ENDPOINT": "", "IKOMIA_TOKEN": ""}


def ikproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m ikproxy ARGS`, run to completion."""
    return subprocess.run(
        [sys.executable, "-m", "ikproxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **NO_SCALE, **(env or {})},
    )


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    port = free_port()
    command = ["-m", "ikproxy", "demo", "--port", str(port)]
    with running_server(command, ready=r"running at http://", env=NO_SCALE) as server:
        assert f"ikproxy demo running at http://127.0.0.1:{port}/\n" in server.output  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def test_app() -> Iterator[str]:
    port = free_port()
    with running_server(app_command(port), ready=r"Uvicorn running on"):
        yield f"http://127.0.0.1:{port}"


# -- --version and usage -----------------------------------------------------------------


def test_version() -> None:
    done = ikproxy("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"ikproxy {__version__}\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["run"], "the following arguments are required: url"),
        (["run", "ftp://x/run"], "the URL must start with http:// or https://, not 'ftp://x/run'"),
        (["run", "http://x/run", "--param", "prompt"], "--param expects NAME=VALUE, not 'prompt'"),
        (["run", "http://x/run", "-p", "a=1", "-p", "a=2"], "--param a given more than once"),
        (["run", "http://x/run", "-H", "nocolon"], "--header expects 'NAME: VALUE', not 'nocolon'"),
        (["run", "http://x/run", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["serve"], "--endpoint URL is required (or set IKOMIA_ENDPOINT)"),
        (
            ["serve", "--endpoint", "http://127.0.0.1:9"],
            "no SCALE API token: pass token= or set the IKOMIA_TOKEN environment variable",
        ),
        (["demo", "--port", "70000"], "--port must be from 0 to 65535, not 70000"),
    ],
)
def test_usage_errors_exit_with_status_2(args: list[str], message: str) -> None:
    done = ikproxy(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stdout == ""


def test_a_missing_image_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "http://127.0.0.1:9/run", "--image", str(missing)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"ikproxy run: cannot read --image {str(missing)!r}: No such file or directory\n"
    )


# -- demo --------------------------------------------------------------------------------


def test_demo_serves_the_page_health_and_module(demo: str) -> None:
    page = httpx.get(f"{demo}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<title>ikproxy demo" in page.text
    config = json.loads(page.text.split('id="demo-config">')[1].split("</script>")[0])
    assert config["backend"] == "local"
    assert [(t["id"], t["endpoint"]) for t in config["tools"]] == [
        ("generate", "api/run"),
        ("edges", "api/edges/run"),
    ]

    health = httpx.get(f"{demo}/api/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "protocol": 1, "version": __version__}
    assert httpx.get(f"{demo}/api/edges/health").json()["status"] == "ok"

    module = httpx.get(f"{demo}/api/ikproxy.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert "export async function run(" in module.text
    for asset, kind in [("demo.js", "text/javascript"), ("demo.css", "text/css")]:
        response = httpx.get(f"{demo}/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)


def test_demo_on_a_taken_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ikproxy("demo", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr == (
        f"ikproxy: port {port} on 127.0.0.1 is already in use. Stop the program using it, "
        f"or choose another port: --port {port + 1}\n"
    )
    assert done.stdout == ""


def test_demo_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    command = ["-m", "ikproxy", "demo", "--port", str(port)]
    with running_server(command, ready=r"running at http://", env=NO_SCALE) as server:
        assert httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert server.returncode == 0


# -- run -----------------------------------------------------------------------------------


def test_run_writes_the_png_and_reports_each_event(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.png"
    status = main(["run", f"{demo}/api/run", "--param", "prompt=a cat", "--output", str(output)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    with Image.open(output) as picture:
        assert (picture.format, picture.size) == ("PNG", (512, 512))
    lines = captured.err.splitlines()
    assert lines[0] == "progress PENDING"
    assert lines[1] == "progress STARTED"
    assert lines[2].startswith("progress STARTED 5% ~")
    assert lines[-2] == "result SUCCESS 100% done"
    assert lines[-1] == f"wrote {output} (PNG, {output.stat().st_size} bytes)"
    assert captured.out == ""


def test_run_with_ndjson_and_an_image_upload(
    demo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(png(24, 16))
    output = tmp_path / "edges.png"
    argv = ["run", f"{demo}/api/edges/run", "--image", str(source), "--format", "ndjson"]
    status = main([*argv, "--param", "strength=2", "-o", str(output), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    with Image.open(output) as picture:
        assert picture.size == (24, 16)
    assert captured.err == f"wrote {output} (PNG, {output.stat().st_size} bytes)\n"


def test_run_without_output_names_the_image(demo: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", f"{demo}/api/run", "-p", "prompt=x", "-q"])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.err == "output 0: PNG image (pass --output PATH to save it)\n"


def test_run_refused_prints_code_message_and_request_id(
    demo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["run", f"{demo}/api/run", "--param", "prompt=" + "x" * 501])
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err[0] == (
        "error (HTTP 400): invalid_parameter: parameter 'prompt' is longer than 500 characters"
    )
    assert err[1].startswith("request id: ")
    assert len(err[1]) > len("request id: ") + 8

    status = main(["run", f"{demo}/api/run", "-p", "prompt=x", "-p", "nope=1"])
    assert status == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "error (HTTP 400): invalid_parameter: unknown parameter 'nope' (allowed: prompt, seed)"
    )


def test_run_error_event_and_cut_stream_exit_1(
    test_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["run", f"{test_app}/fail/run", "-p", "prompt=x"])
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err[-2] == ("error: workflow_failed: The workflow failed while processing this request.")
    assert err[-1].startswith("request id: ")

    status = main(["run", f"{test_app}/truncated.sse"])
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err == [
        "progress STARTED 50% ~0.8 s left",
        "error: incomplete_stream: the stream ended without a result or error event",
    ]


def test_run_on_a_dead_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/run"
    status = main(["run", url, "-p", "prompt=x"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"error: cannot reach {url}: ")


def test_run_prints_the_other_outputs_as_json(
    test_app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "first.png"
    status = main(["run", f"{test_app}/answer/run", "-o", str(output), "-q"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert output.read_bytes() == png(3, 2)
    assert captured.out == (
        '{"label": "cat"}\n{"image": "' + base64.b64encode(png(5, 4)).decode() + '"}\n'
    )


# -- the progress line -----------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_redrawn_line_on_a_terminal() -> None:
    terminal = _Terminal()
    line = _ProgressLine(terminal)
    line.update(Progress("PENDING"))
    line.update(Progress("STARTED", (1000, 1500), fraction=0.5))
    line.update(Progress("SUCCESS", (0, 0), fraction=1.0, results=Results()))
    line.finish()
    text = terminal.getvalue()
    frames = text.split("\r")[1:]
    assert frames[0].startswith("PENDING  " + "·" * 24 + "   --%")
    assert frames[1].startswith("STARTED  " + "█" * 12 + "░" * 12 + "   50%  ~1.5 s left")
    assert frames[2] == "SUCCESS  " + "█" * 24 + "  100%  done" + " " * 7 + "\n"
    assert text.count("\n") == 1


def test_progress_falls_back_to_ascii_where_blocks_cannot_be_encoded() -> None:
    terminal = io.TextIOWrapper(io.BytesIO(), encoding="ascii", write_through=True)
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    line = _ProgressLine(terminal)
    line.update(Progress("STARTED", (1000, 1500), fraction=0.25))
    line.finish()
    assert terminal.buffer.getvalue() == (  # type: ignore[attr-defined]
        b"\rSTARTED  " + b"#" * 6 + b"-" * 18 + b"   25%  ~1.5 s left\n"
    )


# -- the Python consumer example ----------------------------------------------------------------


def test_the_python_consumer_example(demo: str, tmp_path: Path) -> None:
    output = tmp_path / "lake.png"
    done = subprocess.run(
        [
            sys.executable,
            str(CONSUMER),
            "a quiet lake",
            "--url",
            f"{demo}/api/run",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {output} (PNG, {output.stat().st_size} bytes)\n"
    assert done.stderr.splitlines()[0] == "PENDING"
    assert done.stderr.splitlines()[-1] == "SUCCESS 100%"
    with Image.open(output) as picture:
        assert picture.size == (512, 512)

    refused = subprocess.run(
        [sys.executable, str(CONSUMER), "x" * 501, "--url", f"{demo}/api/run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "error: invalid_parameter: parameter 'prompt' is longer than 500 characters (request "
    )


def test_demo_with_metrics_serves_prometheus_after_a_run() -> None:
    port = free_port()
    command = ["-m", "ikproxy", "demo", "--port", str(port), "--metrics"]
    with running_server(command, ready=r"running at http://", env=NO_SCALE) as server:
        banner = f"ikproxy demo (metrics at /metrics/) running at http://127.0.0.1:{port}/\n"
        assert banner in server.output  # type: ignore[attr-defined]
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/api/run").status_code == 400
            run = http.get("/api/run", params={"prompt": "a lighthouse"})
            assert b"event: result" in run.content
            page = http.get("/metrics/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    assert re.search(
        r'ikproxy_requests_refused_total\{code="invalid_parameter"[^}]*\} 1\.0', page.text
    )
    assert "ikproxy_runs_total{" in page.text
    assert "ikproxy_run_duration_seconds_bucket{" in page.text


def test_demo_without_metrics_has_no_metrics_page(demo: str) -> None:
    assert httpx.get(f"{demo}/metrics/").status_code == 404
