"""Request parsing for the proxy: a framework's request described, its body read, its run parsed.

`ProxyRequest` is what every surface hands the core. `read_body` enforces the
upload limit while reading; `parse_run_request` turns a `/run` request (query
string, JSON, multipart or urlencoded form) into validated parameters, inputs
and a stream format, or raises `HTTPError` with the answer to give.
`read_run_request` does both, streaming a multipart body: its parts are parsed
as they arrive, and a file that is not an image (a video, say) goes straight
to a file in the request's `UploadDir`, never whole in memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Union, cast
from urllib.parse import unquote_to_bytes

import anyio.to_thread

from ikproxy.deployments import StreamingUpload
from ikproxy.errors import HTTPError
from ikproxy.io import SNIFF_BYTES, BaseIO, FileIO, sniff_content_type
from ikproxy.policy.config import Policy
from ikproxy.protocol import NDJSON_MEDIA_TYPE, SSE_MEDIA_TYPE
from ikproxy.proxy.images import verify_image
from ikproxy.proxy.stream import StreamFormat
from ikproxy.proxy.uploads import (
    InputURL,
    UploadDir,
    accepts,
    check_input_url,
    file_suffix,
    not_accepted,
)

logger = logging.getLogger("ikproxy")

__all__ = [
    "ProxyRequest",
    "RunSpec",
    "negotiate_format",
    "parse_run_request",
    "read_body",
    "read_body_sync",
    "read_run_request",
    "read_run_request_sync",
]

#: An input as parsed: image bytes (verified last), a file written to disk, or a URL.
_Pending = Union[bytes, FileIO, InputURL]

#: The name of the form field (or query parameter) that gives an input as a URL.
INPUT_URL_FIELD = "image_url"


@dataclass
class ProxyRequest:
    """A framework's request, described for the proxy.

    `path` is relative to where the proxy is mounted (`/run`, `/health`, ...);
    `headers` is any mapping (or iterable of pairs), kept with lowercase names;
    `query_string` may be bytes (decoded as Latin-1, as HTTP does); `native` is
    the framework's own request object, handed to the `authorize` and
    `rate_limit_key` hooks.
    """

    method: str
    path: str
    query_string: str | bytes = ""
    headers: Any = field(default_factory=dict)
    client: str | None = None
    native: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.query_string, bytes):
            self.query_string = self.query_string.decode("latin-1")
        pairs = self.headers.items() if hasattr(self.headers, "items") else self.headers
        self.headers = {str(key).lower(): str(value) for key, value in pairs}
        if not self.path.startswith("/"):
            self.path = "/" + self.path

    def header(self, name: str) -> str | None:
        value: str | None = self.headers.get(name.lower())
        return value


@dataclass
class RunSpec:
    """What a `/run` request asks for, validated."""

    parameters: dict[str, Any]
    inputs: list[BaseIO]
    format: StreamFormat
    request_id: str


def _declared_length(request: ProxyRequest, limit: int) -> int | None:
    """The body's declared `Content-Length`, refused (400/413) when invalid or too large."""
    declared = request.header("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise HTTPError(400, "bad_request", "invalid Content-Length header")
    if int(declared) > limit:
        raise _too_large(limit)
    return int(declared)


async def read_body(
    request: ProxyRequest,
    body: AsyncIterable[bytes] | None,
    limit: int,
    *,
    request_id: str | None = None,
) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` bytes.

    A body the server could not deliver whole (the client left mid-upload, or sent
    malformed chunked framing, or fewer bytes than its `Content-Length`) is the
    client's doing: one line at INFO on the `ikproxy` logger, and a 400 (or the
    cancellation that the server delivers, passed on).
    """
    if body is None or request.method.upper() == "GET":
        return b""
    declared = _declared_length(request, limit)
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
    except HTTPError:
        raise
    except asyncio.CancelledError:  # the server cancels the request when its client leaves
        _log_unreceived("CancelledError", request_id)
        raise
    except Exception as exc:  # whatever the server raises for a body it could not read
        raise _unreceived(type(exc).__name__, request_id) from None
    return _whole(parts, size, declared, request_id)


def read_body_sync(
    request: ProxyRequest,
    body: Iterable[bytes] | None,
    limit: int,
    *,
    request_id: str | None = None,
) -> bytes:
    """`read_body` for sync (WSGI) bodies."""
    if body is None or request.method.upper() == "GET":
        return b""
    declared = _declared_length(request, limit)
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
    except HTTPError:
        raise
    except Exception as exc:
        raise _unreceived(type(exc).__name__, request_id) from None
    return _whole(parts, size, declared, request_id)


def _whole(parts: list[bytes], size: int, declared: int | None, request_id: str | None) -> bytes:
    """The body, unless it ended before its declared length (never half-used)."""
    _check_complete(size, declared, request_id)
    return b"".join(parts)


def _check_complete(size: int, declared: int | None, request_id: str | None) -> None:
    """Refuse a body that ended before its declared `Content-Length`."""
    if declared is not None and size < declared:
        raise _unreceived(f"ended after {size} of {declared} bytes", request_id)


def _log_unreceived(error: str, request_id: str | None) -> None:
    logger.info(
        "request body not received: the client left or sent a malformed body "
        "[request_id=%s error=%s]",
        request_id,
        error,
    )


def _unreceived(error: str, request_id: str | None) -> HTTPError:
    _log_unreceived(error, request_id)
    return HTTPError(400, "bad_request", "the request body could not be read")


def parse_run_request(
    request: ProxyRequest,
    raw: bytes,
    policy: Policy,
    request_id: str,
    uploads: UploadDir | None = None,
) -> RunSpec:
    """The validated parameters, inputs and stream format of a `/run` request.

    Without `uploads`, only image files are accepted in a multipart body.
    """
    format, query = _query(request)
    if _is_multipart(request):
        reader = _MultipartReader(request.header("content-type") or "", policy, uploads)
        try:
            reader.feed(raw)
            fields, files = reader.finish()
            reader.flush()
        finally:
            reader.close()
        return _spec(_single_values(fields, "form"), True, files, policy, format, request_id)
    pending: list[_Pending] = []
    if request.method.upper() == "GET":
        params, from_text = query, True
    else:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type == "application/json":
            params, pending = _parse_json(raw, policy)
            from_text = False
        elif content_type == "application/x-www-form-urlencoded":
            params = _single_values(_parse_pairs(raw, "form body"), "form")
            from_text = True
        else:
            raise HTTPError(
                415,
                "unsupported_media_type",
                "POST /run takes application/json, multipart/form-data "
                "or application/x-www-form-urlencoded",
            )
    return _spec(params, from_text, pending, policy, format, request_id)


async def read_run_request(
    request: ProxyRequest,
    body: AsyncIterable[bytes] | None,
    policy: Policy,
    request_id: str,
    uploads: UploadDir,
) -> RunSpec:
    """Read and parse a `/run` request; a multipart body is parsed while it is read.

    Files that are not images are written to `uploads` (in a worker thread);
    the body limit is enforced at the first byte over it (413).
    """
    if body is None or not _is_multipart(request):
        raw = await read_body(request, body, policy.max_upload_bytes, request_id=request_id)
        if not raw:
            return parse_run_request(request, raw, policy, request_id, uploads)
        # Images are decoded while parsing: keep that off the event loop.
        return await anyio.to_thread.run_sync(
            parse_run_request, request, raw, policy, request_id, uploads
        )
    format, _ = _query(request)
    limit = policy.max_upload_bytes
    declared = _declared_length(request, limit)
    reader = _MultipartReader(request.header("content-type") or "", policy, uploads)
    streams = _Streams(reader, policy, uploads)
    writing: asyncio.Task[None] | None = None
    try:
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            reader.feed(chunk)
            if reader.buffered >= _FLUSH_BYTES:
                # Written by a worker thread (and sent to the deployment's storage)
                # while the next bytes come in; one batch in flight at most.
                await _wait(writing)
                jobs = reader.take_jobs()
                writing = asyncio.get_running_loop().create_task(_write(jobs))
                await streams.send(jobs)
        _check_complete(size, declared, request_id)
        fields, pending = reader.finish()
        await _wait(writing)
        jobs = reader.take_jobs()
        writing = asyncio.get_running_loop().create_task(_write(jobs))
        await streams.send(jobs)
        await _wait(writing)
    except HTTPError:
        raise
    except asyncio.CancelledError:  # the server cancels the request when its client leaves
        _log_unreceived("CancelledError", request_id)
        raise
    except Exception as exc:  # the server could not deliver the body
        raise _unreceived(type(exc).__name__, request_id) from None
    finally:
        try:
            with anyio.CancelScope(shield=True):
                await _settle(writing)
        finally:
            # Aborts every upload not finished; not in the shield's scope, which is
            # inside their task groups' own.
            await streams.aclose()
            reader.close()
    params = _single_values(fields, "form")
    if not any(isinstance(item, bytes) for item in pending):
        return _spec(params, True, pending, policy, format, request_id)
    # Images are verified (decoded) here: off the event loop.
    return await anyio.to_thread.run_sync(_spec, params, True, pending, policy, format, request_id)


class _Streams:
    """The deployment's uploads of a request's files, fed the bytes written to disk.

    An upload starts at its file's first bytes, once the request was admitted,
    the file's type accepted and the parameters received so far are valid
    (else the file is left to the run, from disk); it is finished at the
    file's end, and aborted by `aclose()` if the body did not get there.
    """

    def __init__(self, reader: _MultipartReader, policy: Policy, uploads: UploadDir) -> None:
        self._reader = reader
        self._policy = policy
        self._uploads = uploads
        self._stack = contextlib.AsyncExitStack()
        self._open: dict[IO[bytes], StreamingUpload] = {}
        self._done: set[IO[bytes]] = set()

    async def send(self, jobs: list[_Job]) -> None:
        for file, data in jobs:
            if file in self._done:
                continue
            upload = self._open.get(file) or await self._start(file)
            if upload is None:
                continue
            if data is not None:
                await upload.write(data)
                continue
            target = self._reader.targets[file]
            stored = await upload.finish(target)
            inputs = self._reader.inputs
            inputs[:] = [stored if item is target else item for item in inputs]
            del self._open[file]
            self._done.add(file)

    async def _start(self, file: IO[bytes]) -> StreamingUpload | None:
        self._done.add(file)
        if not self._parameters_valid():
            return None
        opening = self._uploads.streaming_upload(self._reader.targets[file].content_type)
        if opening is None:
            return None
        self._open[file] = upload = await self._stack.enter_async_context(opening)
        self._done.discard(file)
        return upload

    def _parameters_valid(self) -> bool:
        try:
            params = _single_values(self._reader.fields, "form")
            params.pop(INPUT_URL_FIELD, None)
            self._policy.validate(params, from_text=True)
        except HTTPError:
            return False
        return True

    async def aclose(self) -> None:
        await self._stack.aclose()


async def _write(jobs: list[_Job]) -> None:
    await anyio.to_thread.run_sync(_MultipartReader.run_jobs, jobs)


async def _wait(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        await task


async def _settle(task: asyncio.Task[None] | None) -> None:
    """Let a write in flight end (its thread cannot be stopped) before files are closed."""
    if task is not None:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the error, if any, was raised already or is moot


def read_run_request_sync(
    request: ProxyRequest,
    body: Iterable[bytes] | None,
    policy: Policy,
    request_id: str,
    uploads: UploadDir,
) -> RunSpec:
    """`read_run_request` for sync (WSGI) bodies."""
    if body is None or not _is_multipart(request):
        raw = read_body_sync(request, body, policy.max_upload_bytes, request_id=request_id)
        return parse_run_request(request, raw, policy, request_id, uploads)
    format, _ = _query(request)
    limit = policy.max_upload_bytes
    declared = _declared_length(request, limit)
    reader = _MultipartReader(request.header("content-type") or "", policy, uploads)
    try:
        size = 0
        for chunk in body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            reader.feed(chunk)
            if reader.buffered >= _FLUSH_BYTES:
                reader.flush()
        _check_complete(size, declared, request_id)
        fields, pending = reader.finish()
        reader.flush()
    except HTTPError:
        raise
    except Exception as exc:  # the server could not deliver the body
        raise _unreceived(type(exc).__name__, request_id) from None
    finally:
        reader.close()
    return _spec(_single_values(fields, "form"), True, pending, policy, format, request_id)


def _is_multipart(request: ProxyRequest) -> bool:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    return request.method.upper() != "GET" and content_type == "multipart/form-data"


def _query(request: ProxyRequest) -> tuple[StreamFormat, dict[str, str]]:
    """The stream format and the query parameters (none allowed on a POST)."""
    query = _single_values(_parse_pairs(request.query_string, "query string"), "query")
    format = negotiate_format(query.pop("format", None), request.header("accept"))
    if query and request.method.upper() != "GET":
        raise HTTPError(
            400,
            "invalid_parameter",
            "a POST takes its parameters in the body, not the query",
        )
    return format, query


def _spec(
    params: dict[str, Any],
    from_text: bool,
    pending: list[_Pending],
    policy: Policy,
    format: StreamFormat,
    request_id: str,
) -> RunSpec:
    """The run spec: parameters validated, then images verified (the costly part) last."""
    url = params.pop(INPUT_URL_FIELD, None) if from_text else None
    if url is not None:
        pending.append(check_input_url(url, policy))
    if len(pending) > policy.max_inputs:
        raise _too_many_inputs(policy)
    values = policy.validate(params, from_text=from_text)
    inputs: list[BaseIO] = [
        verify_image(item, policy.max_image_pixels) if isinstance(item, bytes) else item
        for item in pending
    ]
    return RunSpec(values, inputs, format, request_id)


def _too_many_inputs(policy: Policy) -> HTTPError:
    return HTTPError(
        400,
        "invalid_input",
        f"too many images: at most {policy.max_inputs} per request",
    )


class _Members(dict[str, Any]):
    """A JSON object's members, with the first name given twice (if any)."""

    duplicate: str | None = None


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    members = _Members(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        members.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return members


def _parse_json(raw: bytes, policy: Policy) -> tuple[dict[str, Any], list[_Pending]]:
    """The members of a JSON object body, and the images (or image URLs) it carries."""
    try:
        obj = json.loads(raw, object_pairs_hook=_members)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPError(400, "bad_request", "request body is not valid JSON") from None
    except RecursionError:
        raise HTTPError(400, "bad_request", "request body is nested too deeply") from None
    except ValueError:  # an integer beyond sys.get_int_max_str_digits()
        raise HTTPError(
            400, "bad_request", "request body holds an integer too long to read"
        ) from None
    if not isinstance(obj, dict):
        raise HTTPError(400, "bad_request", "request body must be a JSON object")
    if isinstance(obj, _Members) and obj.duplicate is not None:
        raise _given_twice(obj.duplicate)
    images = obj.pop("image", None)
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise HTTPError(400, "invalid_input", "'image' must be a data URL or base64 string")
    if len(images) > policy.max_inputs:
        raise _too_many_inputs(policy)
    pending: list[_Pending] = [
        check_input_url(i, policy) if _is_url(i) else _decode_image_text(i) for i in images
    ]
    return dict(obj), pending


def _is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


# -- helpers ---------------------------------------------------------------------


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "payload_too_large", f"request body exceeds {limit} bytes")


def _given_twice(name: str) -> HTTPError:
    return HTTPError(400, "invalid_parameter", f"parameter '{name}' given more than once")


def _single_values(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise _given_twice(key)
        values[key] = value
    return values


def _parse_pairs(text: str | bytes, what: str) -> list[tuple[str, str]]:
    """`name=value&...` pairs, percent-decoded as strict UTF-8 (never with replacement)."""
    raw = text if isinstance(text, bytes) else _as_received(text)
    pairs = []
    try:
        for field in raw.split(b"&"):
            if field:
                name, _, value = field.partition(b"=")
                pairs.append((_unquote(name), _unquote(value)))
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_request", f"{what} is not valid UTF-8") from None
    return pairs


def _as_received(text: str) -> bytes:
    """A query string's bytes: servers hand it over decoded as Latin-1."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # already decoded as UTF-8 by the framework
        return text.encode("utf-8")


def _unquote(text: bytes) -> str:
    return unquote_to_bytes(text.replace(b"+", b" ")).decode("utf-8")


def negotiate_format(explicit: str | None, accept: str | None) -> StreamFormat:
    """SSE or NDJSON: from `?format=` when given, else from the `Accept` header."""
    if explicit is not None:
        if explicit not in ("sse", "ndjson"):
            raise HTTPError(400, "invalid_parameter", "format must be 'sse' or 'ndjson'")
        return cast(StreamFormat, explicit)
    if accept and NDJSON_MEDIA_TYPE in accept and SSE_MEDIA_TYPE not in accept:
        return "ndjson"
    return "sse"


def _decode_image_text(text: str) -> bytes:
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise HTTPError(400, "invalid_input", "'image' data URL must be base64-encoded")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise HTTPError(400, "invalid_input", "'image' is not valid base64") from None


#: RFC 2046, section 5.1.1: a boundary is 1 to 70 characters.
_MAX_BOUNDARY = 70


#: File bytes are written to disk (in a worker thread) and to the deployment's storage
#: upload, when it streams uploads, in pieces of about this size.
_FLUSH_BYTES = 256 * 1024

#: A write of bytes to an upload's file, or (with None) its closing.
_Job = tuple[IO[bytes], Union[bytes, None]]


class _MultipartReader:
    """python-multipart's streaming parser, fed chunk by chunk.

    Text fields are kept; a file part is typed on its first bytes (magic
    numbers) against `policy.accept` as soon as they are in, so a refused
    type stops the upload there. An image is kept in memory (it is verified
    and sent inline); any other accepted file is written to `uploads`.
    """

    def __init__(self, content_type: str, policy: Policy, uploads: UploadDir | None) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise HTTPError(400, "bad_request", "multipart body without a boundary")
        if len(boundary) > _MAX_BOUNDARY:
            raise HTTPError(400, "bad_request", "multipart boundary is too long")
        self.policy = policy
        self.uploads = uploads
        self.fields: list[tuple[str, str]] = []
        self.inputs: list[_Pending] = []
        self.buffered = 0
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._data: list[bytes] = []
        self._is_file = False
        self._head = b""
        self._type: str | None = None  # the file part's sniffed type, once known
        self._file: IO[bytes] | None = None
        self._jobs: list[_Job] = []
        self._opened: list[IO[bytes]] = []
        self._path: FileIO | None = None
        #: The file each opened upload file is written for.
        self.targets: dict[IO[bytes], FileIO] = {}
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks)
        except Exception:
            raise HTTPError(400, "bad_request", "malformed multipart body") from None

    # -- feeding ------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except HTTPError:
            raise
        except Exception:
            raise HTTPError(400, "bad_request", "malformed multipart body") from None

    def take_jobs(self) -> list[_Job]:
        """The file writes (and closes) parsed so far, in order, for `run_jobs`."""
        self._queue_data()
        jobs, self._jobs = self._jobs, []
        return jobs

    @staticmethod
    def run_jobs(jobs: list[_Job]) -> None:
        """Carry out file writes and closes (blocking: a worker thread's job)."""
        for file, data in jobs:
            if data is None:
                file.close()
                continue
            try:
                file.write(data)
            except OSError:  # a full disk: the server's trouble, not the client's
                logger.exception("an upload could not be written to its temporary file")
                raise HTTPError(500, "internal", "the upload could not be stored") from None

    def flush(self) -> None:
        """Write the file bytes parsed so far (blocking)."""
        self.run_jobs(self.take_jobs())

    def _queue_data(self) -> None:
        if self._file is not None and self._data:
            self._jobs.append((self._file, b"".join(self._data)))
            self._data = []
        self.buffered = 0

    def finish(self) -> tuple[list[tuple[str, str]], list[_Pending]]:
        """The text fields and the inputs, once the whole body was fed."""
        from python_multipart.multipart import MultipartState

        try:
            self._parser.finalize()
        except HTTPError:
            raise
        except Exception:
            raise HTTPError(400, "bad_request", "malformed multipart body") from None
        if self._parser.state != MultipartState.END:  # the closing boundary never came
            raise HTTPError(400, "bad_request", "multipart body is incomplete")
        return self.fields, self.inputs

    def close(self) -> None:
        """Close every file it opened (the caller removes the folder)."""
        for file in self._opened:
            file.close()
        self._jobs = []
        self._file = None

    # -- parser callbacks -------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._field = self._value = self._head = b""
        self._data = []
        self._type = None
        self._is_file = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._is_file = b"filename" in params
        if self._is_file and len(self.inputs) >= self.policy.max_inputs:
            raise _too_many_inputs(self.policy)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._is_file and self._type is None:
            self._head += piece
            if len(self._head) >= SNIFF_BYTES:
                self._decide()
            return
        self._data.append(piece)
        if self._file is not None:
            self.buffered += len(piece)

    def _on_part_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        if self._is_file:
            if self._type is None:
                self._decide()
            if self._file is not None:
                self._queue_data()
                self._jobs.append((self._file, None))  # closed once written
                self._file = None
                assert self._path is not None
                self.inputs.append(self._path)
                self._path = None
            else:
                self.inputs.append(b"".join(self._data))
            self._data = []
            return
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        try:
            self.fields.append((name, b"".join(self._data).decode("utf-8")))
        except UnicodeDecodeError:
            raise HTTPError(400, "bad_request", f"form field '{name}' is not UTF-8") from None

    def _decide(self) -> None:
        """Type the file part from its first bytes: refuse it, keep it in memory, or spool it."""
        content_type = sniff_content_type(self._head) or "application/octet-stream"
        if not accepts(self.policy.accept, content_type):
            raise not_accepted(content_type, self.policy.accept)
        self._type = content_type
        head, self._head = self._head, b""
        self._data = [head]
        if content_type.startswith("image/"):
            return
        if self.uploads is None:
            raise not_accepted(content_type, self.policy.accept)
        path = self.uploads.new_file(file_suffix(content_type))
        try:
            self._file = path.open("xb")
            self._opened.append(self._file)
        except OSError:
            logger.exception("an upload could not be written to its temporary file")
            raise HTTPError(500, "internal", "the upload could not be stored") from None
        self._path = FileIO(path, content_type=content_type)
        self.targets[self._file] = self._path
        self.buffered = len(head)
