"""Parsing a `/run` request: its parameters, inputs and stream format, validated.

`parse_run_request` turns a `/run` request (query string, JSON, multipart or
urlencoded form) into validated parameters, inputs and a stream format, or
raises `HTTPError` with the answer to give. `read_run_request` also reads the
body, streaming a multipart one: its parts are parsed as they arrive, and a
file that is not an image (a video, say) goes straight to a file in the
request's `UploadDir`, never whole in memory. `ProxyRequest`, `RunSpec` and
the body readers live in `ikproxy.proxy.request`, and are re-exported here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterable, Iterable
from typing import IO, Any, cast
from urllib.parse import unquote_to_bytes

import anyio.to_thread

from ikproxy.deployments import StreamingUpload
from ikproxy.errors import HTTPError
from ikproxy.io import BaseIO
from ikproxy.policy.config import Policy
from ikproxy.protocol import NDJSON_MEDIA_TYPE, SSE_MEDIA_TYPE
from ikproxy.proxy.images import verify_image
from ikproxy.proxy.multipart import FLUSH_BYTES, Job, MultipartReader
from ikproxy.proxy.request import (
    BodyLimit,
    Pending,
    ProxyRequest,
    RunSpec,
    read_body,
    read_body_sync,
    too_many_fields,
    too_many_inputs,
)
from ikproxy.proxy.stream import StreamFormat
from ikproxy.proxy.uploads import UploadDir, check_input_url

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

#: The name of the form field (or query parameter) that gives an input as a URL.
INPUT_URL_FIELD = "image_url"


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
    format, query = _query(request, policy)
    if _is_multipart(request):
        reader = MultipartReader(request.header("content-type") or "", policy, uploads)
        try:
            reader.feed(raw)
            fields, files = reader.finish()
            reader.flush()
        finally:
            reader.close()
        return _spec(_single_values(fields, "form"), True, files, policy, format, request_id)
    pending: list[Pending] = []
    if request.method.upper() == "GET":
        params, from_text = query, True
    else:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type == "application/json":
            params, pending = _parse_json(raw, policy)
            from_text = False
        elif content_type == "application/x-www-form-urlencoded":
            params = _single_values(_parse_pairs(raw, "form body", policy), "form")
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
    format, _ = _query(request, policy)
    size = BodyLimit(request, policy.max_upload_bytes, request_id)
    reader = MultipartReader(request.header("content-type") or "", policy, uploads)
    streams = _Streams(reader, policy, uploads)
    writing: asyncio.Task[None] | None = None
    try:
        with size.receiving():
            async for chunk in body:
                reader.feed(size.count(chunk))
                if reader.buffered >= FLUSH_BYTES:
                    # Written by a worker thread (and sent to the deployment's storage)
                    # while the next bytes come in; one batch in flight at most.
                    await _wait(writing)
                    jobs = reader.take_jobs()
                    writing = asyncio.get_running_loop().create_task(_write(jobs))
                    await streams.send(jobs)
            size.check_complete()
            fields, pending = reader.finish()
            await _wait(writing)
            jobs = reader.take_jobs()
            writing = asyncio.get_running_loop().create_task(_write(jobs))
            await streams.send(jobs)
            await _wait(writing)
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

    def __init__(self, reader: MultipartReader, policy: Policy, uploads: UploadDir) -> None:
        self._reader = reader
        self._policy = policy
        self._uploads = uploads
        self._stack = contextlib.AsyncExitStack()
        self._open: dict[IO[bytes], StreamingUpload] = {}
        self._done: set[IO[bytes]] = set()

    async def send(self, jobs: list[Job]) -> None:
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


async def _write(jobs: list[Job]) -> None:
    await anyio.to_thread.run_sync(MultipartReader.run_jobs, jobs)


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
    format, _ = _query(request, policy)
    size = BodyLimit(request, policy.max_upload_bytes, request_id)
    reader = MultipartReader(request.header("content-type") or "", policy, uploads)
    try:
        with size.receiving():
            for chunk in body:
                reader.feed(size.count(chunk))
                if reader.buffered >= FLUSH_BYTES:
                    reader.flush()
            size.check_complete()
            fields, pending = reader.finish()
            reader.flush()
    finally:
        reader.close()
    return _spec(_single_values(fields, "form"), True, pending, policy, format, request_id)


def _is_multipart(request: ProxyRequest) -> bool:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    return request.method.upper() != "GET" and content_type == "multipart/form-data"


def _query(request: ProxyRequest, policy: Policy) -> tuple[StreamFormat, dict[str, str]]:
    """The stream format and the query parameters (none allowed on a POST)."""
    pairs = _parse_pairs(request.query_string, "query string", policy)
    query = _single_values(pairs, "query")
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
    pending: list[Pending],
    policy: Policy,
    format: StreamFormat,
    request_id: str,
) -> RunSpec:
    """The run spec: parameters validated, then images verified (the costly part) last."""
    url = params.pop(INPUT_URL_FIELD, None) if from_text else None
    if url is not None:
        pending.append(check_input_url(url, policy))
    if len(pending) > policy.max_inputs:
        raise too_many_inputs(policy)
    values = policy.validate(params, from_text=from_text)
    inputs: list[BaseIO] = [
        verify_image(item, policy.max_image_pixels) if isinstance(item, bytes) else item
        for item in pending
    ]
    return RunSpec(values, inputs, format, request_id)


class _Members(dict[str, Any]):
    """A JSON object's members, with the first name given twice (if any)."""

    duplicate: str | None = None


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    members = _Members(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        members.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return members


def _parse_json(raw: bytes, policy: Policy) -> tuple[dict[str, Any], list[Pending]]:
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
        raise too_many_inputs(policy)
    pending: list[Pending] = [
        check_input_url(i, policy) if _is_url(i) else _decode_image_text(i) for i in images
    ]
    return dict(obj), pending


def _is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


# -- helpers ---------------------------------------------------------------------


def _given_twice(name: str) -> HTTPError:
    return HTTPError(400, "invalid_parameter", f"parameter '{name}' given more than once")


def _single_values(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise _given_twice(key)
        values[key] = value
    return values


def _parse_pairs(text: str | bytes, what: str, policy: Policy) -> list[tuple[str, str]]:
    """`name=value&...` pairs, percent-decoded as strict UTF-8 (never with replacement);
    413 beyond `policy.max_form_fields` (empty fields count: they cost a split too)."""
    raw = text if isinstance(text, bytes) else _as_received(text)
    fields = raw.split(b"&", policy.max_form_fields)
    if len(fields) > policy.max_form_fields:
        raise too_many_fields(policy)
    pairs = []
    try:
        for field in fields:
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
