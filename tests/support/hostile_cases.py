"""The hostile-input table: malformed and hostile requests, each with the answer it must get.

Each case is sent as raw bytes (`send`), so nothing on the way tidies it up. Targets
are relative to where the proxy is mounted; every request carries `Connection: close`
and the caller's extra headers (a key, a rate-limit key of its own).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .http import multipart
from .images import HOSTILE_IMAGES, png


@dataclass(frozen=True)
class Hostile:
    """One hostile request and the answers allowed for it.

    `statuses` are the proxy's own (with a JSON error body, `code` when given);
    `server_first` marks a request a server or framework may refuse before the proxy
    sees it (each server's answers are listed below, by server).
    """

    name: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    statuses: frozenset[int] = frozenset({400})
    code: str | None = None
    server_first: bool = False
    chunked: bool = False
    endless: bool = False
    length: int | None = None  # a Content-Length to declare instead of the body's
    may_reset: bool = False  # the server may reset the connection before its answer arrives


@dataclass
class Answer:
    status: int
    head: bytes
    body: bytes
    raw: bytes = field(repr=False, default=b"")

    def json_error(self) -> dict[str, str] | None:
        try:
            error = json.loads(self.body)["error"]
        except (ValueError, KeyError, TypeError):
            return None
        return error if isinstance(error, dict) else None


def _json(body: str | bytes, **extra: str) -> dict[str, object]:
    data = body.encode() if isinstance(body, str) else body
    return {"headers": (("Content-Type", "application/json"), *extra.items()), "body": data}


def _multipart(parts: list[tuple[str, bytes, bool]], boundary: str = "xyz", close: bool = True):  # type: ignore[no-untyped-def]
    return {
        "headers": (("Content-Type", f"multipart/form-data; boundary={boundary}"),),
        "body": multipart(parts, boundary, close),
    }


def _image_cases() -> list[Hostile]:
    cases = []
    for name, (data, status) in sorted(HOSTILE_IMAGES.items()):
        code = "payload_too_large" if status == 413 else "unsupported_media_type"
        upload = _multipart([("prompt", b"a cat", False), ("image", data, True)])
        cases.append(
            Hostile(
                f"upload {name}", "POST", "/run", **upload, statuses=frozenset({status}), code=code
            )
        )  # type: ignore[arg-type]
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        body = json.dumps({"prompt": "a cat", "image": url})
        cases.append(
            Hostile(
                f"json image {name}",
                "POST",
                "/run",
                **_json(body),
                statuses=frozenset({status}),
                code=code,
            )
        )  # type: ignore[arg-type]
    return cases


_FORM = (("Content-Type", "application/x-www-form-urlencoded"),)

CASES: list[Hostile] = [
    # JSON
    Hostile(
        "json nested 20000 deep",
        "POST",
        "/run",
        **_json('{"prompt": ' + "[" * 20000 + "]" * 20000 + "}"),
        code="bad_request",
    ),  # type: ignore[arg-type]
    Hostile(
        "json integer of 5000 digits",
        "POST",
        "/run",
        **_json('{"prompt": ' + "9" * 5000 + "}"),
        code="bad_request",
    ),  # type: ignore[arg-type]
    Hostile(
        "json duplicated key",
        "POST",
        "/run",
        **_json('{"prompt": "a", "prompt": "b"}'),
        code="invalid_parameter",
    ),  # type: ignore[arg-type]
    Hostile("json not an object", "POST", "/run", **_json("[1, 2]"), code="bad_request"),  # type: ignore[arg-type]
    Hostile(
        "json invalid UTF-8", "POST", "/run", **_json(b'{"prompt": "\xff"}'), code="bad_request"
    ),  # type: ignore[arg-type]
    Hostile("json empty body", "POST", "/run", **_json(b""), code="bad_request"),  # type: ignore[arg-type]
    Hostile("json NaN", "POST", "/run", **_json('{"prompt": NaN}'), code="invalid_parameter"),  # type: ignore[arg-type]
    Hostile(
        "json image not base64",
        "POST",
        "/run",
        **_json('{"prompt": "a", "image": "!!"}'),
        code="invalid_input",
    ),  # type: ignore[arg-type]
    Hostile(
        "json image a number",
        "POST",
        "/run",
        **_json('{"prompt": "a", "image": 7}'),
        code="invalid_input",
    ),  # type: ignore[arg-type]
    Hostile(
        "json too many images",
        "POST",
        "/run",
        **_json(json.dumps({"prompt": "a", "image": [base64.b64encode(png()).decode()] * 3})),
        code="invalid_input",
    ),  # type: ignore[arg-type]
    # multipart
    Hostile(
        "multipart boundary of 300 characters",
        "POST",
        "/run",
        **_multipart([("prompt", b"a", False)], boundary="b" * 300),
        code="bad_request",
    ),  # type: ignore[arg-type]
    Hostile(
        "multipart without closing boundary",
        "POST",
        "/run",
        **_multipart([("prompt", b"a", False), ("image", png(), True)], close=False),
        code="bad_request",
    ),  # type: ignore[arg-type]
    Hostile(
        "multipart without boundary",
        "POST",
        "/run",
        headers=(("Content-Type", "multipart/form-data"),),
        body=b"--x\r\n",
        code="bad_request",
    ),
    Hostile(
        "multipart empty body",
        "POST",
        "/run",
        headers=(("Content-Type", "multipart/form-data; boundary=xyz"),),
        code="bad_request",
    ),
    Hostile(
        "multipart garbage",
        "POST",
        "/run",
        headers=(("Content-Type", "multipart/form-data; boundary=xyz"),),
        body=b"\x00\xff" * 100,
        code="bad_request",
    ),
    Hostile(
        "multipart field not UTF-8",
        "POST",
        "/run",
        **_multipart([("prompt", b"\xff\xfe", False)]),
        code="bad_request",
    ),  # type: ignore[arg-type]
    Hostile(
        "multipart duplicated field",
        "POST",
        "/run",
        **_multipart([("prompt", b"a", False), ("prompt", b"b", False)]),
        code="invalid_parameter",
    ),  # type: ignore[arg-type]
    *_image_cases(),
    # query strings and forms
    Hostile("query invalid UTF-8", "GET", "/run?prompt=%ff%fe", code="bad_request"),
    Hostile(
        "query invalid percent-encoding in a name",
        "GET",
        "/run?pr%zzompt=a",
        code="invalid_parameter",
    ),
    Hostile(
        "query duplicated parameter", "GET", "/run?prompt=a&prompt=b", code="invalid_parameter"
    ),
    Hostile("query unknown format", "GET", "/run?prompt=a&format=xml", code="invalid_parameter"),
    Hostile("query prompt too long", "GET", "/run?prompt=" + "a" * 600, code="invalid_parameter"),
    Hostile(
        "query string of 60 KB",
        "GET",
        "/run?prompt=a&x=" + "a" * 60_000,
        code="invalid_parameter",
        server_first=True,
    ),
    Hostile(
        "form invalid UTF-8", "POST", "/run", headers=_FORM, body=b"prompt=%ff", code="bad_request"
    ),
    Hostile(
        "form raw invalid UTF-8",
        "POST",
        "/run",
        headers=_FORM,
        body=b"prompt=\xff",
        code="bad_request",
    ),
    Hostile(
        "form duplicated parameter",
        "POST",
        "/run",
        headers=_FORM,
        body=b"prompt=a&prompt=b",
        code="invalid_parameter",
    ),
    Hostile(
        "post with a query",
        "POST",
        "/run?prompt=a",
        headers=_FORM,
        body=b"prompt=a",
        code="invalid_parameter",
    ),
    # content types and methods
    Hostile(
        "post text/plain",
        "POST",
        "/run",
        headers=(("Content-Type", "text/plain"),),
        body=b"prompt=a",
        statuses=frozenset({415}),
        code="unsupported_media_type",
    ),
    Hostile(
        "post without content type",
        "POST",
        "/run",
        body=b"prompt=a",
        statuses=frozenset({415}),
        code="unsupported_media_type",
    ),
    Hostile(
        "post with a NUL content type",
        "POST",
        "/run",
        headers=(("Content-Type", "application/\x01json"),),
        body=b"{}",
        statuses=frozenset({415}),
        code="unsupported_media_type",
        server_first=True,
    ),
    Hostile(
        "put",
        "PUT",
        "/run",
        statuses=frozenset({405}),
        code="method_not_allowed",
        server_first=True,
    ),
    Hostile(
        "delete",
        "DELETE",
        "/run",
        statuses=frozenset({405}),
        code="method_not_allowed",
        server_first=True,
    ),
    Hostile("unknown method", "FROB", "/run", statuses=frozenset({405}), server_first=True),
    # paths
    Hostile(
        "path traversal",
        "GET",
        "/run/../../etc/passwd",
        statuses=frozenset({404}),
        code="not_found",
        server_first=True,
    ),
    Hostile(
        "encoded path traversal",
        "GET",
        "/%2e%2e/%2e%2e/etc/passwd",
        statuses=frozenset({404}),
        code="not_found",
        server_first=True,
    ),
    Hostile(
        "unknown path",
        "GET",
        "/run.php",
        statuses=frozenset({404}),
        code="not_found",
        server_first=True,
    ),
    # headers
    Hostile(
        "header of 100 KB",
        "GET",
        "/run",
        headers=(("X-Big", "a" * 100_000),),
        code="invalid_parameter",
        server_first=True,
    ),
    Hostile(
        "invalid Content-Length",
        "POST",
        "/run",
        headers=(*_FORM, ("Content-Length", "abc")),
        body=b"prompt=a",
        statuses=frozenset(),
        server_first=True,
        length=-1,
    ),
    # bodies
    Hostile(
        "declared body over the limit",
        "POST",
        "/run",
        headers=_FORM,
        body=b"prompt=a",
        length=10_000_000,
        statuses=frozenset({413}),
        code="payload_too_large",
        server_first=True,
    ),
    Hostile(
        "chunked body over the limit",
        "POST",
        "/run",
        headers=_FORM,
        body=b"prompt=" + b"a" * 200_000,
        chunked=True,
        statuses=frozenset({413}),
        code="payload_too_large",
        server_first=True,
    ),
    Hostile(
        "chunked body that never ends",
        "POST",
        "/run",
        headers=_FORM,
        body=b"prompt=",
        chunked=True,
        endless=True,
        may_reset=True,
        statuses=frozenset({413}),
        code="payload_too_large",
        server_first=True,
    ),
    Hostile(
        "malformed chunked framing",
        "POST",
        "/run",
        headers=(*_FORM, ("Transfer-Encoding", "chunked")),
        body=b"zz\r\nprompt=a\r\n0\r\n\r\n",
        length=-1,
        statuses=frozenset({400}),
        server_first=True,
    ),
]


def request_bytes(case: Hostile, prefix: str, extra: dict[str, str]) -> bytes:
    """The request head (and whole body, unless endless) as raw bytes."""
    lines = [
        f"{case.method} {prefix}{case.target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines += [f"{k}: {v}" for k, v in case.headers]
    body = case.body
    if case.chunked:
        lines.append("Transfer-Encoding: chunked")
        if not case.endless:
            body = (
                b"".join(
                    b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192])
                    for i in range(0, len(body), 8192)
                )
                + b"0\r\n\r\n"
            )
        else:
            body = b"%x\r\n%s\r\n" % (len(body), body)
    elif case.length is None:
        lines.append(f"Content-Length: {len(body)}")
    elif case.length >= 0:
        lines.append(f"Content-Length: {case.length}")
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
    return head + body


async def send(
    host: str, port: int, case: Hostile, prefix: str, extra: dict[str, str], timeout: float = 10
) -> Answer:
    """Send `case` on a new connection and read the answer (at most `_PARALLEL` at once)."""
    async with _slots():
        return await _send(host, port, case, prefix, extra, timeout)


_PARALLEL = 8
_SLOTS: dict[int, asyncio.Semaphore] = {}


def _slots() -> asyncio.Semaphore:
    loop = id(asyncio.get_running_loop())
    return _SLOTS.setdefault(loop, asyncio.Semaphore(_PARALLEL))


async def _send(
    host: str, port: int, case: Hostile, prefix: str, extra: dict[str, str], timeout: float
) -> Answer:
    reader, writer = await asyncio.wait_for(connect(host, port), timeout)

    async def write() -> None:
        with contextlib.suppress(OSError):
            writer.write(request_bytes(case, prefix, extra))
            await writer.drain()
            if case.endless:  # at most 4 MB of "a", until the server answers
                chunk = b"%x\r\n%s\r\n" % (16384, b"a" * 16384)
                for _ in range(256):
                    writer.write(chunk)
                    await writer.drain()

    writing = asyncio.ensure_future(write())
    try:
        raw = await asyncio.wait_for(_read_all(reader), timeout)
    finally:
        writing.cancel()
        with contextlib.suppress(BaseException):
            await writing
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return _answer(raw)


async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, retrying while the server is still binding (some log "ready" before)."""
    for _ in range(100):
        try:
            return await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    return await asyncio.open_connection(host, port)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """The answer's bytes: up to the end of its body, or until the server closes."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while b"\r\n\r\n" not in data:
            chunk = await reader.read(65536)
            if not chunk:
                return data
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        length = _content_length(head)
        while not _complete(data, head, length):
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _complete(data: bytes, head: bytes, length: int | None) -> bool:
    body = data.split(b"\r\n\r\n", 1)[1]
    if length is not None:
        return len(body) >= length
    if b"transfer-encoding: chunked" in head:
        return body.endswith(b"0\r\n\r\n")
    return False


def _answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0  # closed without an answer
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return Answer(status, head, body, raw)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def check(
    case: Hostile, answer: Answer, server_answers: Mapping[str, frozenset[int]]
) -> str | None:
    """Why `answer` is wrong for `case`, or None when it is right.

    The answer must be the proxy's (one of `case.statuses`, with its JSON error),
    or one that `server_answers` lists for this case: the server's or framework's
    own, given before the proxy sees the request.
    """
    if b"Traceback" in answer.raw or b'File "' in answer.raw:
        return "a traceback in the answer"
    if case.may_reset and answer.status == 0:
        return None
    if answer.status in server_answers.get(case.name, frozenset()):
        return None
    if answer.status not in case.statuses:
        return f"status {answer.status}, expected {sorted(case.statuses)}"
    return _check_code(case, answer)


def _answers(**by_case: set[int]) -> dict[str, frozenset[int]]:
    return {name.replace("_", " "): frozenset(statuses) for name, statuses in by_case.items()}


_NUL = "post with a NUL content type"
_METHOD = "unknown method"
_LENGTH = "invalid Content-Length"
_CHUNKED = "malformed chunked framing"
_HEADER = "header of 100 KB"
_QUERY = "query string of 60 KB"

#: What each server answers itself, before the proxy sees the request, by case.
#: uvicorn (httptools) refuses a NUL in a header, an unknown method, an invalid
#: Content-Length and bad chunked framing with its own 400 (text).
UVICORN = {
    _NUL: frozenset({400}),
    _METHOD: frozenset({400}),
    _LENGTH: frozenset({400}),
    _CHUNKED: frozenset({400}),
}
#: hypercorn: 400 for bad framing, 431 for a huge header; Quart's own 405 page.
HYPERCORN = {
    _METHOD: frozenset({405}),
    _HEADER: frozenset({431}),
    _LENGTH: frozenset({400}),
    _CHUNKED: frozenset({400}),
}
#: Sanic: its own 413 for a huge request line or header, 405 for an unknown method.
SANIC = {
    _QUERY: frozenset({413}),
    _METHOD: frozenset({405}),
    _HEADER: frozenset({413}),
    _LENGTH: frozenset({400}),
}
#: werkzeug's dev server: 431 for a huge header; Flask's own 405 page.
WERKZEUG = {_METHOD: frozenset({405}), _HEADER: frozenset({431}), _LENGTH: frozenset({400})}
#: gunicorn: 414 for a huge request line, 431 for a huge header, 400 for a NUL or a bad
#: Content-Length.
GUNICORN = {
    _QUERY: frozenset({414}),
    _NUL: frozenset({400}),
    _HEADER: frozenset({431}),
    _LENGTH: frozenset({400}),
}
#: Django under WSGI and a2wsgi read no chunked body (no Content-Length, no body): the
#: proxy then refuses the request for its missing parameter (400), not for its size.
IGNORES_CHUNKED = {
    "chunked body over the limit": frozenset({400}),
    "chunked body that never ends": frozenset({400}),
}


def _check_code(case: Hostile, answer: Answer) -> str | None:
    error = answer.json_error()
    if error is None:
        return f"status {answer.status} without a JSON error body: {answer.body[:80]!r}"
    if case.code is not None and error.get("code") != case.code:
        return f"code {error.get('code')!r}, expected {case.code!r}"
    if not error.get("message"):
        return "a JSON error without a message"
    return None
