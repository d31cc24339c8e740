"""Outputs by reference: large run outputs served under the proxy's mount, not inlined.

A run's large outputs (an image over `inline_output_limit` bytes, a stored
output, a file a local task wrote) leave the stream as a reference,
`{"ref": {"url": "outputs/<token>/<index>", ...}}`, and the browser downloads
them from the proxy with ordinary GETs (ranges included, for video players).
The token is long and random; it is the only key: whoever holds it may read
the outputs of that run until `output_window` seconds after the run ended,
and nobody else can guess it.

The store is in the memory of one process, behind a small interface
(`put`, `get`, `close`). With a `RedisStore`, the proxy also serves the
outputs kept in the shared output store (`ikproxy.stores.outputs`, where Celery
workers put theirs): those download from any instance.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread

from ikproxy.decimals import parse_decimal
from ikproxy.deployments.scale.storage import Storage, StorageObject
from ikproxy.errors import HTTPError, IkproxyError
from ikproxy.io import BaseIO, FileIO, ImageIO, RefIO, StorageObjectIO
from ikproxy.model import Results

if TYPE_CHECKING:
    from ikproxy.stores.outputs import SharedOutputs

__all__ = [
    "CHUNK_SIZE",
    "FileBody",
    "InlineBody",
    "OutputBody",
    "OutputExpired",
    "OutputStore",
    "RangeNotSatisfiable",
    "by_reference",
    "output_address",
    "parse_range",
    "respond",
    "serve",
    "serve_any",
    "serve_shared",
]

logger = logging.getLogger("ikproxy")

#: The size of the chunks an output is streamed in.
CHUNK_SIZE = 256 * 1024


class OutputBody(Protocol):
    """Where an output's bytes come from: its media type, size, and any byte range of it."""

    @property
    def content_type(self) -> str: ...

    @property
    def size(self) -> int: ...

    def open(self, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes from `start` to `end` (exclusive), in chunks."""
        ...

    def discard(self) -> None:
        """Release what the body holds (a file it owns); called once it has expired."""
        ...


@dataclass
class InlineBody:
    """An output held in memory (an image too large to inline in the stream)."""

    data: bytes
    content_type: str

    @property
    def size(self) -> int:
        return len(self.data)

    async def open(self, start: int, end: int) -> AsyncIterator[bytes]:
        view = memoryview(self.data)
        for offset in range(start, end, CHUNK_SIZE):
            yield bytes(view[offset : min(end, offset + CHUNK_SIZE)])

    def discard(self) -> None:
        self.data = b""


@dataclass
class FileBody:
    """An output in a file on disk; with `owned`, the file is removed when it expires."""

    path: Path
    content_type: str
    size: int
    owned: bool = False

    async def open(self, start: int, end: int) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.path, "rb") as file:
            await file.seek(start)
            left = end - start
            while left > 0:
                chunk = await file.read(min(CHUNK_SIZE, left))
                if not chunk:
                    raise OSError(f"output file shrank while being read: {self.path}")
                left -= len(chunk)
                yield chunk

    def discard(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)


@dataclass
class StorageBody:
    """A stored SCALE output, streamed from storage with the server's JWT (never the browser's)."""

    storage: Storage
    obj: StorageObject
    content_type: str
    size: int

    async def open(self, start: int, end: int) -> AsyncIterator[bytes]:
        if start >= end:
            return
        async with self.storage.download(self.obj, start=start, end=end - 1) as download:
            # A storage that ignores the range answers 200 with everything: cut it here.
            skip = start if download.status_code == 200 else 0
            left = end - start
            async for chunk in download.aiter_bytes(CHUNK_SIZE):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if chunk:
                    chunk = chunk[:left]
                    left -= len(chunk)
                    yield chunk
                if left <= 0:
                    return

    def discard(self) -> None:
        pass  # the object is the storage's: temporary objects expire there


@dataclass
class Presigned:
    """A stored output handed out as the storage's own presigned URL (`presigned_outputs`)."""

    url: str
    content_type: str
    size: int


class OutputExpired(IkproxyError, LookupError):
    """The outputs of this token existed, and their window is over."""

    code = "output_expired"
    status = 410
    public_message = "This output has expired."


@dataclass
class _Entry:
    bodies: Sequence[OutputBody | None]
    expires: float


class OutputStore:
    """The outputs by reference of one proxy, by token, each kept for `window` seconds.

    Bounded: at most `max_runs` runs are kept (the oldest go first), and the
    tokens of expired runs are remembered (to answer 410 rather than 404) up to
    the same number. Thread-safe: WSGI surfaces read it from their own threads.
    """

    def __init__(
        self,
        window: float,
        *,
        max_runs: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedOutputs | None = None,
    ) -> None:
        if window <= 0:
            raise ValueError("output_window must be a positive number of seconds")
        self.window = window
        #: The outputs every instance serves (`ikproxy.stores.outputs`), looked up when
        #: a token is not one of this process's.
        self.shared = shared
        self.max_runs = max_runs
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._dir: Path | None = None
        self._lock = threading.RLock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def put(self, bodies: Sequence[OutputBody | None]) -> str:
        """Keep one run's output bodies (None: inlined) for `window` seconds; return a token."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._entries) >= self.max_runs:
                oldest, entry = self._entries.popitem(last=False)
                self._bury(oldest, entry)
            self._entries[token] = _Entry(list(bodies), self.clock() + self.window)
        return token

    def get(self, token: str, index: int) -> OutputBody:
        """Output `index` of `token`: `KeyError` if unknown, `OutputExpired` if gone."""
        with self._lock:
            self._expire()
            entry = self._entries.get(token)
            gone = entry is None and token in self._gone
        if entry is None:
            if gone:
                raise OutputExpired(token)
            raise KeyError(token)
        body = entry.bodies[index] if 0 <= index < len(entry.bodies) else None
        if body is None:
            raise KeyError(index)
        return body

    def file_path(self, suffix: str = "") -> Path:
        """A new file path in the store's own temporary folder (for files it will own)."""
        with self._lock:
            if self._dir is None or not self._dir.exists():
                self._dir = Path(tempfile.mkdtemp(prefix="ikproxy-outputs-"))
                # Removed by `close()`, or when the store is collected, or at exit.
                weakref.finalize(self, shutil.rmtree, self._dir, True)
            return self._dir / (secrets.token_hex(16) + suffix)

    def close(self) -> None:
        """Forget every output and remove the files the store owns."""
        with self._lock:
            while self._entries:
                token, entry = self._entries.popitem(last=False)
                self._bury(token, entry)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def _expire(self) -> None:
        now = self.clock()
        # Entries share one window, so insertion order is expiry order.
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[token]
            self._bury(token, entry)

    def _bury(self, token: str, entry: _Entry) -> None:
        for body in entry.bodies:
            try:
                if body is not None:
                    body.discard()
            except OSError:
                logger.warning("could not remove an expired output", exc_info=True)
        self._gone[token] = None
        while len(self._gone) > self.max_runs:
            self._gone.popitem(last=False)


async def own_copy(store: OutputStore, source: str | os.PathLike[str]) -> Path:
    """A copy of `source` that the store owns (a hard link when the file system allows)."""
    target = store.file_path(Path(source).suffix)

    def copy() -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)

    await anyio.to_thread.run_sync(copy)
    return target


class RangeNotSatisfiable(IkproxyError, ValueError):
    """A `Range` header that selects nothing of the output (answered with 416)."""

    code = "range_not_satisfiable"
    status = 416
    public_message = "The range is outside the output."


_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The `(start, end)` (end exclusive) that a `Range` header asks for, or None for all.

    One range only: a header with several (or another unit, or malformed) is
    ignored, and the whole output is sent, as RFC 9110 allows. A range that
    starts at or after the end raises `RangeNotSatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (parse_decimal(n) if n else None for n in match.groups())
    if (first is None and match[1]) or (last is None and match[2]):
        return None  # more digits than any output has bytes: ignored
    if first is None and last is None:
        return None
    if first is None:  # the last N bytes
        assert last is not None
        if last == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - last), size
    if last is not None and last < first:
        return None  # invalid: ignored
    if first >= size:
        raise RangeNotSatisfiable(header)
    return first, size if last is None else min(size, last + 1)


#: `opener(output, store)`: the body to serve for an output by reference (or its
#: presigned URL), or None to leave the output inline.
Opener = Callable[[BaseIO, OutputStore], "Awaitable[OutputBody | Presigned | None]"]


def storage_opener(storage: Storage, *, presigned: bool = False) -> Opener:
    """The opener of a SCALE deployment's stored outputs: streamed from `storage`, or
    handed out as presigned URLs valid for the store's window."""

    async def opener(output: BaseIO, store: OutputStore) -> OutputBody | Presigned | None:
        if not isinstance(output, StorageObjectIO) or isinstance(output, FileIO):
            return None
        obj = await storage.resolve(output)
        size = obj.size if obj.size is not None else await _stored_size(storage, obj)
        content_type = obj.content_type or "application/octet-stream"
        if presigned:
            url = await storage.presigned_download_url(obj, expire_in=int(store.window) + 1)
            return Presigned(url, content_type, size)
        return StorageBody(storage, obj, content_type, size)

    return opener


async def _stored_size(storage: Storage, obj: StorageObject) -> int:
    """An object's size from a one-byte range answer (`Content-Range: bytes 0-0/<size>`)."""
    async with storage.download(obj, start=0, end=0) as download:
        total = parse_decimal((download.content_range or "").rpartition("/")[2])
        if total is not None:
            return total
        if download.status_code == 200 and download.content_length is not None:
            return download.content_length
    raise ValueError("the storage did not say the size of a stored output")


async def by_reference(
    results: Results,
    store: OutputStore,
    *,
    inline_limit: int | None,
    base: str = "",
    opener: Opener | None = None,
) -> Results:
    """`results` with its large outputs kept in `store` and replaced by `RefIO`s.

    An image over `inline_limit` bytes is served from memory, a `FileIO` (a
    file a local task wrote) from the store's own copy; `opener` picks the
    body of any other output (a stored one). `base` is prepended
    to the relative URL (`../` for a run requested as `run/`).
    """
    bodies: list[OutputBody | Presigned | None] = []
    for output in results.outputs:
        body: OutputBody | Presigned | None = None
        if opener is not None:
            body = await opener(output, store)
        if body is None and isinstance(output, FileIO) and not output.is_dir:
            body = await _file_body(store, output)
        big = inline_limit is not None and _image_size(output) > inline_limit
        if body is None and isinstance(output, ImageIO) and big:
            body = InlineBody(output.to_bytes(), output.mime_type)
        bodies.append(body)
    if not any(body is not None for body in bodies):
        return results
    served = [None if isinstance(body, Presigned) else body for body in bodies]
    token = await _keep(store, served) if any(body is not None for body in served) else ""
    outputs: list[BaseIO] = []
    for index, (output, body) in enumerate(zip(results.outputs, bodies, strict=True)):
        if body is None:
            outputs.append(output)
            continue
        url = body.url if isinstance(body, Presigned) else f"{base}outputs/{token}/{index}"
        of = output.kind if output.kind in ("image", "storage_object") else "file"
        outputs.append(RefIO(url, of=of, content_type=body.content_type, size=body.size))
    return Results(tuple(outputs), uuid=results.uuid)


async def _keep(store: OutputStore, bodies: Sequence[OutputBody | None]) -> str:
    """Keep one run's bodies: in the shared output store if there is one (every instance
    serves them then), else in this process. Stored SCALE outputs stay here (another
    instance would need the storage's client to stream them), and so do outputs over the
    shared store's Redis limit when it has no location for them."""
    shared = store.shared
    if (
        shared is None
        or any(isinstance(body, StorageBody) for body in bodies)
        or (shared.location is None and any(b and b.size > shared.redis_limit for b in bodies))
    ):
        return store.put(bodies)
    from ikproxy.stores.outputs import SharedOutput  # redis-py: only with a shared store

    kept: list[SharedOutput | None] = []
    for body in bodies:
        if isinstance(body, InlineBody):
            kept.append(SharedOutput(body.content_type, body.data))
        elif isinstance(body, FileBody):
            kept.append(SharedOutput(body.content_type, path=body.path))
        else:
            kept.append(None)
    try:
        return await shared.put(kept, window=store.window)
    finally:
        for body in bodies:
            if isinstance(body, FileBody):
                body.discard()  # this process's copy: the shared store holds its bytes now


async def _file_body(store: OutputStore, output: FileIO) -> FileBody:
    """A file output, kept (linked or copied) for as long as the store keeps it."""
    path = await own_copy(store, output.path)
    return FileBody(path, output.content_type, path.stat().st_size, owned=True)


def _image_size(output: BaseIO) -> int:
    return len(output.to_bytes()) if isinstance(output, ImageIO) else 0


def serve(
    store: OutputStore, path: str, method: str, range_header: str | None
) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
    """The answer to `GET|HEAD /outputs/<token>/<index>`: status, headers and body.

    Raises `HTTPError`: 404 for an unknown token or index, 410 once the
    outputs have expired, 416 for a range outside the output.
    """
    token, index = output_address(path)
    try:
        body = store.get(token, index)
    except OutputExpired:
        raise HTTPError(410, "output_expired", "this output has expired") from None
    except KeyError:
        raise HTTPError(404, "not_found", "no such output") from None
    return respond(body, method, range_header)


Answer = tuple[int, dict[str, str], AsyncIterator[bytes]]


def serve_any(
    store: OutputStore, path: str, method: str, range_header: str | None
) -> Answer | Awaitable[Answer]:
    """`serve` from this process's outputs; else, awaitable, from `store.shared` if any."""
    try:
        return serve(store, path, method, range_header)
    except HTTPError as exc:
        if exc.status != 404 or store.shared is None:
            raise
        return serve_shared(store.shared, path, method, range_header)


async def serve_shared(
    shared: SharedOutputs, path: str, method: str, range_header: str | None
) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
    """`serve` for an output kept in the shared output store (`ikproxy.stores.outputs`)."""
    from ikproxy.stores.outputs import OutputGone  # redis-py: only with a shared store

    token, index = output_address(path)
    try:
        body = await shared.get(token, index)
    except OutputGone:
        raise HTTPError(410, "output_expired", "this output has expired") from None
    except KeyError:
        raise HTTPError(404, "not_found", "no such output") from None
    return respond(body, method, range_header)


def output_address(path: str) -> tuple[str, int]:
    """The token and index of `/outputs/<token>/<index>`; 404 when it cannot be one."""
    _, token, index_text = [*path.strip("/").split("/"), "", ""][:3]
    index = parse_decimal(index_text, max_digits=6)
    if index is None:
        raise HTTPError(404, "not_found", "no such output")
    return token, index


def respond(
    body: OutputBody, method: str, range_header: str | None
) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
    """Status, headers and bytes of one output, for a `GET` or `HEAD` with an optional `Range`."""
    size = body.size
    headers = {
        "Content-Type": body.content_type,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
        # Served from the app's own origin: never let an output run as a page.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    try:
        selected = parse_range(range_header, size)
    except RangeNotSatisfiable:
        raise HTTPError(
            416,
            "range_not_satisfiable",
            f"the range is outside the output ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    status = 200
    start, end = 0, size
    if selected is not None:
        status = 206
        start, end = selected
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    # Always a stream, even from memory: frameworks then leave Content-Length and
    # the encoding alone (Django's GZipMiddleware skips streams marked identity).
    if method == "HEAD":
        return status, headers, _empty()
    return status, headers, body.open(start, end)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator
