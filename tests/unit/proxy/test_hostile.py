"""The hostile-input table against the mountable ASGI app under uvicorn, as raw bytes.

Every answer is a 4xx with the proxy's JSON error (or uvicorn's own 4xx for what is
not HTTP), never a 5xx, never a hang, never a traceback; a client that leaves
mid-upload is one line in ikproxy's log, not an "Exception in ASGI application".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from ikproxy.asgi import create_app
from ikproxy.policy import Param
from tests.support.deployments import ScriptedDeployment
from tests.support.hostile_cases import CASES, UVICORN, Hostile, check, send
from tests.support.servers import serve_in_thread


class _Records(logging.Handler):
    """Keeps every log record, and signals when one matching `wanted` arrives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()
        self.wanted = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.wanted and self.wanted in record.getMessage():
            self.seen.set()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, ScriptedDeployment, _Records]]:
    deployment = ScriptedDeployment()
    app = create_app(
        deployment,
        parameters={"prompt": Param(str, required=True, max_length=500)},
        rate_limit=None,
        max_upload_bytes=64 * 1024,
    )
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("ikproxy", "uvicorn.error", "uvicorn")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(records)
        logger.setLevel(logging.INFO)
    try:
        with serve_in_thread(app, log_level="info") as served:
            yield served.port, deployment, records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(records)
            logger.setLevel(level)


def _send_all(port: int, cases: list[Hostile]) -> list[object]:
    async def main() -> list[object]:
        return await asyncio.gather(
            *(send("127.0.0.1", port, c, "", {"X-Client": str(i)}) for i, c in enumerate(cases)),
            return_exceptions=True,
        )

    return asyncio.run(main())


def test_every_hostile_request_gets_a_clean_4xx(
    server: tuple[int, ScriptedDeployment, _Records],
) -> None:
    port, deployment, records = server
    answers = _send_all(port, CASES)
    wrong = {}
    for case, answer in zip(CASES, answers, strict=True):
        if isinstance(answer, BaseException):
            wrong[case.name] = repr(answer)
        else:
            problem = check(case, answer, UVICORN)  # type: ignore[arg-type]
            if problem:
                wrong[case.name] = problem
    assert wrong == {}
    assert deployment.calls == []  # no hostile request started a run
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == []


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(b"Content-Length: 1000\r\n\r\nprompt=", id="left mid-upload"),
        pytest.param(b"Transfer-Encoding: chunked\r\n\r\n10\r\nprompt=", id="left mid-chunk"),
    ],
)
def test_a_client_that_leaves_mid_upload_is_one_info_line(
    server: tuple[int, ScriptedDeployment, _Records], cut: bytes
) -> None:
    port, _, records = server
    request_id = uuid.uuid4().hex
    records.seen.clear()
    records.wanted = f"request_id={request_id}"
    before = len(records.records)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /run HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + request_id.encode() + b"\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n" + cut
        )
    assert records.seen.wait(10), "the disconnect was not logged"
    new = records.records[before:]
    mine = [r for r in new if records.wanted in r.getMessage()]
    assert "request body not received" in mine[0].getMessage()
    assert len(mine) == 1
    assert mine[0].levelno == logging.INFO
    assert mine[0].name == "ikproxy"
    assert mine[0].exc_info is None
    assert [r.getMessage() for r in new if r.levelno >= logging.ERROR] == []


def test_the_wsgi_mount_refuses_a_body_shorter_than_its_length() -> None:
    """a2wsgi alone reads an empty chunk forever when the body ends early: a spinning thread."""
    import io
    import json
    import sys

    from ikproxy.wsgi import create_wsgi_app

    deployment = ScriptedDeployment()
    app = create_wsgi_app(deployment, parameters={"prompt": str}, rate_limit=None)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/run",
        "QUERY_STRING": "",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b"prompt=a"),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": "1000",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
    }
    answer: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc: object = None) -> None:
        answer["status"] = status

    def call() -> None:
        chunks = app(environ, start_response)
        try:
            answer["body"] = b"".join(chunks)
        finally:
            chunks.close()

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the request never ended"
    assert answer["status"] == "400 Bad Request"
    error = json.loads(answer["body"])["error"]  # type: ignore[arg-type]
    assert error["code"] == "bad_request"
    assert error["message"] == "the request body could not be read"
    assert deployment.calls == []


@pytest.mark.parametrize("length", ["²", "9" * 5000, "-1", "1_0", " 8"])
def test_the_wsgi_mount_refuses_a_content_length_that_is_not_ascii_digits(length: str) -> None:
    import io
    import json
    import sys

    from ikproxy.wsgi import create_wsgi_app

    deployment = ScriptedDeployment()
    app = create_wsgi_app(deployment, parameters={"prompt": str}, rate_limit=None)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/run",
        "QUERY_STRING": "",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b"prompt=a"),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": length,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
    }
    answer: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc: object = None) -> None:
        answer["status"] = status

    body = b"".join(app(environ, start_response))
    assert answer["status"] == "400 Bad Request"
    assert json.loads(body)["error"]["message"] == "invalid Content-Length header"
    assert deployment.calls == []
