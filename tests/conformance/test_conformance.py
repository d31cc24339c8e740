"""One conformance suite for every surface, each under its real server on loopback.

Each case starts a conformance app (`tests/conformance/apps/`) under its
server as a subprocess, pointed at a fake SCALE server served by this test
process, and proves the same behaviour: streaming without buffering, SSE and
NDJSON, the policy statuses and bodies, terminal error events, no secret in
any response, and a client disconnect that stops the run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ikproxy.browser import process_readable_stream_sync, process_streaming_response
from ikproxy.errors import StreamError
from ikproxy.testing import FakeScale

from ..support.servers import free_port, running_server
from .apps import _config

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {_config.API_KEY}"}
UVICORN_READY = r"Uvicorn running on"  # printed once the socket listens, after the app started


@dataclass(frozen=True)
class Case:
    """One surface under one server."""

    name: str
    argv: tuple[str, ...]
    ready: str
    needs: tuple[str, ...]
    wsgi: bool = False
    env: dict[str, str] = field(default_factory=dict)
    python: str | None = None

    def command(self, port: int) -> list[str]:
        python = self.python or sys.executable
        return [python, *(a.format(port=port) for a in self.argv)]


def _uvicorn(module: str) -> tuple[str, ...]:
    return ("-m", "uvicorn", module, "--host", "127.0.0.1", "--port", "{port}", "--no-access-log")


def _gunicorn(module: str) -> tuple[str, ...]:
    return (
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        "8",
        "-w",
        "1",
        "-b",
        "127.0.0.1:{port}",
        "--graceful-timeout",
        "2",
        module,
    )


_APPS = "tests.conformance.apps"
_DJANGO_ENV = {"DJANGO_SETTINGS_MODULE": f"{_APPS}.django_project.settings"}

CASES = [
    Case("asgi-app/uvicorn", _uvicorn(f"{_APPS}.asgi_app:app"), UVICORN_READY, ("asgi_app",)),
    Case(
        "starlette/uvicorn",
        _uvicorn(f"{_APPS}.starlette_app:app"),
        UVICORN_READY,
        ("starlette_app",),
    ),
    Case("fastapi/uvicorn", _uvicorn(f"{_APPS}.fastapi_app:app"), UVICORN_READY, ("fastapi_app",)),
    Case(
        "litestar/uvicorn", _uvicorn(f"{_APPS}.litestar_app:app"), UVICORN_READY, ("litestar_app",)
    ),
    Case(
        "quart/hypercorn",
        ("-m", "hypercorn", f"{_APPS}.quart_app:app", "-b", "127.0.0.1:{port}"),
        r"Running on",
        ("quart_app",),
    ),
    Case(
        "sanic",
        (
            "-m",
            "sanic",
            f"{_APPS}.sanic_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--single-process",
            "--no-motd",
        ),
        r"Starting worker|Sanic .* running|Goin' Fast|[Ss]erver .*started|Starting",
        ("sanic_app",),
    ),
    Case(
        "flask/werkzeug",
        ("-m", "flask", "--app", f"{_APPS}.flask_app", "run", "--port", "{port}", "--with-threads"),
        r"Running on",
        ("flask_app",),
        wsgi=True,
    ),
    Case(
        "flask/gunicorn-gthread",
        _gunicorn(f"{_APPS}.flask_app:app"),
        r"Booting worker",
        ("flask_app",),
        wsgi=True,
    ),
    Case(
        "wsgi-mount/gunicorn-gthread",
        _gunicorn(f"{_APPS}.flask_app:wsgi_mount_app"),
        r"Booting worker",
        ("flask_app",),
        wsgi=True,
    ),
    Case(
        "django-wsgi/gunicorn-gthread",
        _gunicorn(f"{_APPS}.django_project.wsgi:application"),
        r"Booting worker",
        ("django_project",),
        wsgi=True,
        env=_DJANGO_ENV,
    ),
    Case(
        "django-asgi/uvicorn",
        _uvicorn(f"{_APPS}.django_project.asgi:application"),
        UVICORN_READY,
        ("django_project",),
        env=_DJANGO_ENV,
    ),
]


def _django6_python() -> str | None:
    spec = importlib.util.find_spec("tests.conformance._django6")
    if spec is None:
        return None
    from . import _django6

    return _django6.python()  # type: ignore[no-any-return]


def _cases() -> list[Any]:
    params = [pytest.param(case, id=case.name) for case in CASES]
    python = _django6_python()
    if python is not None:
        for base in ("django-wsgi/gunicorn-gthread", "django-asgi/uvicorn"):
            case = next(c for c in CASES if c.name == base)
            variant = Case(
                base.replace("django", "django6-py3.12"),
                case.argv,
                case.ready,
                case.needs,
                case.wsgi,
                case.env,
                python,
            )
            params.append(pytest.param(variant, id=variant.name))
    return params


@dataclass
class Live:
    case: Case
    url: str
    fake: FakeScale
    fake_url: str
    seen: list[bytes]
    output: list[str] = field(default_factory=list)  # the server's, as it comes
    run_ends: Path | None = None  # where the apps' on_run_end hook writes its summaries

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20)

    def record(self, response: httpx.Response, body: bytes) -> None:
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.seen.append(f"{response.status_code} {response.reason_phrase}\n{head}\n".encode())
        self.seen.append(body)


@pytest.fixture(scope="module", params=_cases())
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    case: Case = request.param
    missing = [
        n
        for n in case.needs
        if not (ROOT / "tests/conformance/apps" / n).exists()
        and not (ROOT / "tests/conformance/apps" / f"{n}.py").exists()
    ]
    if missing:
        pytest.fail(f"conformance app missing: {missing}")
    fake = FakeScale(token=_config.FAKE_TOKEN, next_poll_in=100, polls_before_done=3)
    with fake.serve() as fake_url:
        port = free_port()
        ends = tmp_path_factory.mktemp("ends") / "run-ends.jsonl"
        env = {"CONFORMANCE_FAKE_URL": fake_url, "PYTHONPATH": str(ROOT), **case.env}
        env["CONFORMANCE_RUN_ENDS"] = str(ends)
        with running_server(case.command(port), ready=case.ready, env=env) as proc:
            live = Live(case, f"http://127.0.0.1:{port}", fake, fake_url, [], proc.all_output)
            live.run_ends = ends
            yield live
            _assert_no_secret(live)


def _assert_no_secret(live: Live) -> None:
    everything = b"\n".join(live.seen)
    jwts = {
        r.headers.get("authorization", "").removeprefix("Bearer ")
        for r in live.fake.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }
    secrets = {_config.FAKE_TOKEN, live.fake_url, live.fake_url.split("//")[1], *jwts}
    for secret in sorted(s for s in secrets if s):
        assert secret.encode() not in everything, f"secret leaked: {secret[:12]}..."
    assert b"Traceback" not in everything


async def _get(live: Live, path: str, **kwargs: Any) -> httpx.Response:
    async with live.client() as http:
        response = await http.get(path, **kwargs)
    live.record(response, response.content)
    return response


def _fresh() -> dict[str, str]:
    """Headers for a request with its own rate-limit key."""
    return {**AUTH, "X-Client": uuid.uuid4().hex}


async def _run(live: Live, fmt: str) -> tuple[list[str], Any]:
    states: list[str] = []
    async with (
        live.client() as http,
        http.stream(
            "GET", "/api/run", params={"prompt": "a cat", "format": fmt}, headers=_fresh()
        ) as response,
    ):
        assert response.status_code == 200
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    live.record(response, body)
    expected = "application/x-ndjson" if fmt == "ndjson" else "text/event-stream"
    assert response.headers["content-type"].startswith(expected)
    results = process_readable_stream_sync([body], lambda p: states.append(p.state))
    return states, results


async def test_health(live: Live) -> None:
    response = await _get(live, "/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
async def test_a_run_streams_and_decodes(live: Live, fmt: str) -> None:
    states, results = await _run(live, fmt)
    assert states[0] == "PENDING"
    assert states[-1] == "SUCCESS"
    assert len(results) == 1
    assert results.get_output(0).kind == "image"


async def test_the_first_event_arrives_while_the_run_goes_on(live: Live) -> None:
    live.fake.polls_before_done = 10
    try:
        async with (
            live.client() as http,
            http.stream("GET", "/api/run", params={"prompt": "x"}, headers=_fresh()) as response,
        ):
            assert response.status_code == 200
            media = response.headers["content-type"]
            assert media.startswith("text/event-stream")
            buffer = b""
            chunks = response.aiter_bytes()
            async for chunk in chunks:
                buffer += chunk
                if b"event: progress" in buffer:
                    break
            polls_at_first_event = live.fake.count("poll")
            body = buffer + b"".join([c async for c in chunks])
            live.record(response, body)
    finally:
        live.fake.polls_before_done = 3
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert polls_at_first_event < 10, "the stream was buffered until the run ended"
    assert b"event: result" in body


async def test_400_missing_parameter(live: Live) -> None:
    response = await _get(live, "/api/run", headers=_fresh())
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (
        "invalid_parameter",
        "missing required parameter 'prompt'",
    )


async def test_400_unknown_parameter(live: Live) -> None:
    response = await _get(live, "/api/run", params={"prompt": "x", "seed": "3"}, headers=_fresh())
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "unknown parameter 'seed' (allowed: prompt)"


async def test_401_without_the_key(live: Live) -> None:
    response = await _get(live, "/api/run", params={"prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "unauthenticated",
        "message": "Bearer key required.",
        "request_id": response.headers["x-request-id"],
    }


async def test_413_oversized_body(live: Live) -> None:
    async with live.client() as http:
        response = await http.post(
            "/api/run",
            content=json.dumps({"prompt": "x" * 100_000}),
            headers={**_fresh(), "Content-Type": "application/json"},
        )
    live.record(response, response.content)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_refusals_cost_nothing_and_the_run_past_the_burst_is_429(live: Live) -> None:
    headers = {**AUTH, "X-Client": uuid.uuid4().hex}
    refused = [(await _get(live, "/api/run", headers=headers)).status_code for _ in range(4)]
    assert refused == [400] * 4  # refused for their parameters: no token taken
    for _ in range(3):  # the burst: three runs
        async with (
            live.client() as http,
            http.stream("GET", "/api/run", params={"prompt": "x"}, headers=headers) as response,
        ):
            assert response.status_code == 200
    limited = await _get(live, "/api/run", params={"prompt": "x"}, headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


#: A page of another site, in a browser that holds a session cookie for the proxy's.
CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
COOKIE = {"Cookie": "sessionid=victim-session"}


async def test_a_run_from_another_site_is_refused_even_with_a_cookie(live: Live) -> None:
    runs = live.fake.count("run")
    headers = {**_fresh(), **COOKIE, **CROSS_SITE}
    async with live.client() as http:
        answers = [
            # A top-level navigation (a link, a form GET): no Origin header.
            await http.get(
                "/api/run",
                params={"prompt": "x"},
                headers={**_fresh(), **COOKIE, "Sec-Fetch-Site": "cross-site"},
            ),
            await http.get("/api/run", params={"prompt": "x"}, headers=headers),
            await http.post("/api/run", data={"prompt": "x"}, headers=headers),
            await http.post("/api/run", json={"prompt": "x"}, headers=headers),
            await http.get("/api/run", headers={**headers, "Last-Event-ID": "some-run:3"}),
        ]
    for response in answers:
        live.record(response, response.content)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "cross_site"
        assert "access-control-allow-origin" not in response.headers
    assert live.fake.count("run") == runs, "a run was started for another site"


async def test_the_same_origin_and_an_allowed_origin_run(live: Live) -> None:
    allowed = {"Sec-Fetch-Site": "cross-site", "Origin": _config.ALLOWED_ORIGIN}
    async with live.client() as http:
        preflight = await http.options(
            "/api/run",
            headers={
                "Origin": _config.ALLOWED_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        live.record(preflight, preflight.content)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == _config.ALLOWED_ORIGIN
        assert preflight.headers["access-control-allow-methods"] == "GET, POST"
        assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
        same_origin = {**_fresh(), **COOKIE, "Sec-Fetch-Site": "same-origin"}
        async with http.stream(
            "GET", "/api/run", params={"prompt": "x"}, headers=same_origin
        ) as response:
            assert response.status_code == 200
            assert "access-control-allow-origin" not in response.headers
        async with http.stream(
            "POST", "/api/run", json={"prompt": "x"}, headers={**_fresh(), **COOKIE, **allowed}
        ) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == _config.ALLOWED_ORIGIN
            assert response.headers["access-control-allow-credentials"] == "true"
            assert "X-Request-ID" in response.headers["access-control-expose-headers"]


async def test_post_json(live: Live) -> None:
    async with (
        live.client() as http,
        http.stream(
            "POST",
            "/api/run",
            json={"prompt": "a dog"},
            headers={**_fresh(), "Accept": "application/x-ndjson"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("application/x-ndjson")
        results = await process_streaming_response(response)
    assert len(results) == 1


async def test_an_upstream_failure_ends_with_an_error_event(live: Live) -> None:
    live.fake.fail("poll", status=520, body={"message": f"failed at {live.fake_url}"})
    async with (
        live.client() as http,
        http.stream("GET", "/api/run", params={"prompt": "x"}, headers=_fresh()) as response,
    ):
        assert response.status_code == 200
        body = b"".join([c async for c in response.aiter_bytes()])
    live.record(response, body)
    assert b"event: error" in body
    with pytest.raises(StreamError) as caught:
        process_readable_stream_sync([body])
    assert caught.value.code == "workflow_failed"
    assert caught.value.request_id == response.headers["x-request-id"]


async def test_a_refused_submission_is_a_real_http_error(live: Live) -> None:
    live.fake.expire_jwts()  # the run is refused with 401, and so is the new exchange
    live.fake.fail("jwt", status=401)
    response = await _get(live, "/api/run", params={"prompt": "x"}, headers=_fresh())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "unauthorized"


async def test_a_client_disconnect_stops_the_run(live: Live) -> None:
    live.fake.polls_before_done = 100_000
    try:
        async with (
            live.client() as http,
            http.stream("GET", "/api/run", params={"prompt": "x"}, headers=_fresh()) as response,
        ):
            # Keep a reference: an abandoned async iterator is finalized, and
            # that would close the connection before we mean to.
            chunks = response.aiter_bytes()
            async for chunk in chunks:
                if b"event: progress" in chunk:
                    break
            # The run is live: the upstream is still being polled.
            await live.fake.wait_for("poll", live.fake.count("poll") + 2, timeout=5)
        closed_at = time.monotonic()
        # ASGI servers stop the run within 1 s; WSGI servers notice on the next
        # failed write, so within two keepalive intervals (0.5 s each here).
        # A poll already on its way when the client left may land 0.1 s later.
        limit = (2 * 0.5 if live.case.wsgi else 1.0) + 0.1
        while True:
            try:
                seen = await live.fake.wait_for("poll", live.fake.count("poll") + 1, timeout=1.0)
            except TimeoutError:
                break  # one whole second without a poll: the run has stopped
            assert seen.time - closed_at < limit, (
                "the upstream was still polled after the disconnect"
            )
    finally:
        live.fake.polls_before_done = 3


async def test_the_browser_module_is_served(live: Live) -> None:
    response = await _get(live, "/api/ikproxy.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]


async def test_unknown_path_is_a_json_404(live: Live) -> None:
    response = await _get(live, "/api/nope", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


#: Servers that read the whole body before the proxy sees the request (so it never
#: sees a client leave mid-upload): Django's ASGI handler. And those that ignore a
#: chunked body altogether (no Content-Length: an empty body), so that the request is
#: refused for its missing parameter: Django under WSGI, and a2wsgi.
READS_BODY_FIRST = {"django-asgi/uvicorn"}
IGNORES_CHUNKED = {"django-wsgi/gunicorn-gthread", "wsgi-mount/gunicorn-gthread"}


async def test_a_client_leaving_mid_upload_is_one_log_line(live: Live) -> None:
    import asyncio

    from ..support.hostile_cases import connect

    name = live.case.name.replace("django6-py3.12", "django")
    cuts = [b"Content-Length: 1000\r\n\r\nprompt="]
    if name not in IGNORES_CHUNKED:
        cuts.append(b"Transfer-Encoding: chunked\r\n\r\n10\r\np")
    port = int(live.url.rsplit(":", 1)[1])
    marker = "request body not received"
    start = len(live.output)
    for cut in cuts:
        before = sum(marker in line for line in live.output)
        head = (
            f"POST {_config.PREFIX}/run HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {_config.API_KEY}\r\nX-Client: {uuid.uuid4().hex}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
        ).encode()
        _, writer = await connect("127.0.0.1", port)
        writer.write(head + cut)
        await writer.drain()
        writer.close()
        if name in READS_BODY_FIRST:
            continue
        deadline = time.monotonic() + 10
        while sum(marker in line for line in live.output) == before:
            assert time.monotonic() < deadline, "never logged:\n" + "".join(live.output[-3:])
            await asyncio.sleep(0.05)
        mine = [line for line in live.output if marker in line][before:]
        assert len(mine) == 1
        assert mine[0].startswith("ikproxy INFO request body not received")
    text = "".join(live.output[start:])
    assert "Traceback" not in text
    assert "Exception in ASGI application" not in text


def _server_answers() -> dict[str, dict[str, frozenset[int]]]:
    """The answers each server gives of its own to cases of the hostile table."""
    from ..support.hostile_cases import (
        GUNICORN,
        HYPERCORN,
        IGNORES_CHUNKED,
        SANIC,
        UVICORN,
        WERKZEUG,
    )

    return {
        "asgi-app/uvicorn": UVICORN,
        "starlette/uvicorn": UVICORN,
        "fastapi/uvicorn": UVICORN,
        "litestar/uvicorn": UVICORN,
        "django-asgi/uvicorn": UVICORN,
        "quart/hypercorn": HYPERCORN,
        "sanic": SANIC,
        "flask/werkzeug": WERKZEUG,
        # Flask answers an unknown method with its own 405 page, before the blueprint.
        "flask/gunicorn-gthread": {**GUNICORN, "unknown method": frozenset({405})},
        "wsgi-mount/gunicorn-gthread": {**GUNICORN, **IGNORES_CHUNKED},
        "django-wsgi/gunicorn-gthread": {**GUNICORN, **IGNORES_CHUNKED},
    }


#: Cases a server never answers, by a limit of its own: Django's ASGI handler reads the
#: whole body before any view runs, so a body that never ends (or a declared length
#: that never arrives) holds the request until the client gives up. Checked to hang
#: for no longer than the client's timeout, so that a fix shows up here.
SERVER_HANGS: dict[str, frozenset[str]] = {
    "django-asgi/uvicorn": frozenset(
        {"chunked body that never ends", "declared body over the limit"}
    ),
}


async def test_hostile_input_gets_a_clean_4xx(live: Live) -> None:
    import asyncio

    from ..support.hostile_cases import CASES, check, send

    port = int(live.url.rsplit(":", 1)[1])
    name = live.case.name.replace("django6-py3.12", "django")
    hangs = SERVER_HANGS.get(name, frozenset())
    answers = await asyncio.gather(
        *(
            send("127.0.0.1", port, case, _config.PREFIX, _fresh(), 2 if case.name in hangs else 10)
            for case in CASES
        ),
        return_exceptions=True,
    )
    extra = _server_answers()[name]
    wrong = {}
    for case, answer in zip(CASES, answers, strict=True):
        if case.name in hangs:
            if not isinstance(answer, TimeoutError):
                wrong[case.name] = f"answered, no longer hangs: {answer!r}"
            continue
        if isinstance(answer, BaseException):
            wrong[case.name] = repr(answer)
            continue
        live.seen.append(answer.raw)
        problem = check(case, answer, extra)
        if problem:
            wrong[case.name] = problem
    assert wrong == {}


def _run_ends(live: Live, request_ids: set[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """The hook's summaries of these requests, once there is one of each (or the timeout)."""
    assert live.run_ends is not None
    deadline = time.monotonic() + timeout
    while True:
        text = live.run_ends.read_text() if live.run_ends.exists() else ""
        mine = [e for e in map(json.loads, text.splitlines()) if e["request_id"] in request_ids]
        if {e["request_id"] for e in mine} >= request_ids or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


async def test_the_run_end_hook_runs_once_per_run_in_every_ending(live: Live) -> None:
    ids = {name: uuid.uuid4().hex for name in ("result", "failed", "left", "refused")}

    def headers(name: str) -> dict[str, str]:
        return {**_fresh(), "X-Request-ID": ids[name]}

    async with live.client() as http:
        ok = await http.get("/api/run", params={"prompt": "x"}, headers=headers("result"))
        assert b"event: result" in ok.content
        live.fake.fail("poll", status=520, body={"message": "failed"})
        failed = await http.get("/api/run", params={"prompt": "x"}, headers=headers("failed"))
        assert b"event: error" in failed.content
        assert (await http.get("/api/run", headers=headers("refused"))).status_code == 400
        live.fake.polls_before_done = 100_000
        try:
            async with http.stream(
                "GET", "/api/run", params={"prompt": "x"}, headers=headers("left")
            ) as response:
                chunks = response.aiter_bytes()
                async for chunk in chunks:
                    if b"event: progress" in chunk:
                        break
            ends = _run_ends(live, {ids["result"], ids["failed"], ids["left"]})
        finally:
            live.fake.polls_before_done = 3
    outcomes = sorted((e["request_id"], e["outcome"]) for e in ends)
    assert outcomes == sorted(
        [
            (ids["result"], "result"),
            (ids["failed"], "workflow_failed"),
            (ids["left"], "disconnected"),
        ]
    )
    for end in ends:
        assert end["request"] != "NoneType"  # the framework's own request
        assert end["task"] is None
        assert end["caller_key"] is not None  # the rate limit's key: X-Client
        assert end["duration"] >= 0
        assert end["upstream_run_id"]
    by_id = {e["request_id"]: e for e in ends}
    assert by_id[ids["result"]]["bytes"] == len(ok.content)
    assert by_id[ids["result"]]["events"] == ok.content.count(b"\nid: ")
