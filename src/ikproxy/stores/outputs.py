"""Outputs by reference that every instance serves: the registry in Redis, the bytes shared.

An output too large to inline in a stream (`{"ref": {"url": "outputs/<token>/<i>"}}`)
is kept here by whoever produced it (a Celery worker, say), so that a download
reaches any instance, not the one process that kept it in memory. The registry
and the small outputs (up to `redis_limit` bytes) live in the store's Redis, for
the output window; larger ones are written under an fsspec URL (`location`: a
shared folder `file:///srv/outputs`, `s3://bucket/outputs`, ...; the `fsspec`
extra, and that file system's own package), and the registry keeps their URL.

Keys, under the store's prefix:

* `<prefix>:out:<token>`: a hash, `expires` (epoch ms) and one JSON entry per
  output index; it lives twice the window, so that an expired token is told from
  an unknown one (410, not 404);
* `<prefix>:out:<token>:<i>`: the bytes of a small output, for the window.

Files under `location` outlive their window: give that folder or bucket a
lifecycle rule (delete after a day, say); they are never served after it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ikproxy.stores.connections import LoopClients

__all__ = ["CHUNK_SIZE", "OutputGone", "SharedBody", "SharedOutput", "SharedOutputs"]

#: The size of the chunks an output is read in.
CHUNK_SIZE = 256 * 1024


class OutputGone(LookupError):
    """The outputs of this token existed, and their window is over."""


@dataclass(frozen=True)
class SharedOutput:
    """One output to keep: its bytes (or a file holding them) and its media type."""

    content_type: str
    data: bytes | None = None
    path: Path | None = None

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size


@dataclass
class SharedBody:
    """A shared output as served: its media type, size and any byte range of it."""

    outputs: SharedOutputs
    key: str | None  # its Redis key, or None when it is at `url`
    url: str | None
    content_type: str
    size: int

    async def open(self, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes from `start` to `end` (exclusive), in chunks."""
        if self.key is not None:
            async for chunk in self.outputs.read_redis(self.key, start, end):
                yield chunk
        else:
            assert self.url is not None
            async for chunk in _read_url(self.url, start, end):
                yield chunk

    def discard(self) -> None:
        pass  # its keys expire in Redis; its file by the location's lifecycle rule


class SharedOutputs:
    """The outputs by reference of every instance and worker sharing one Redis."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ikproxy",
        timeout: float = 1.0,
        location: str | None = None,
        redis_limit: int = 1024 * 1024,
    ) -> None:
        if redis_limit < 0:
            raise ValueError("redis_limit must be a number of bytes >= 0")
        self.prefix = prefix
        self.location = location.rstrip("/") if location else None
        self.redis_limit = redis_limit
        self._clients = LoopClients(url, timeout)

    def _key(self, token: str) -> str:
        return f"{self.prefix}:out:{token}"

    async def put(self, outputs: Sequence[SharedOutput | None], *, window: float) -> str:
        """Keep `outputs` (None: not kept) for `window` seconds; return their token.

        Those over `redis_limit` bytes go to `location` (all go to Redis without one).
        """
        token = secrets.token_urlsafe(32)
        ms = max(1, int(window * 1000))
        entries: dict[str | bytes, str | bytes] = {"expires": str(int(time.time() * 1000) + ms)}
        blobs: dict[str, bytes] = {}
        for index, output in enumerate(outputs):
            if output is None:
                continue
            entry: dict[str, Any] = {"content_type": output.content_type, "size": output.size}
            if self.location is not None and output.size > self.redis_limit:
                entry["url"] = await self._write_url(token, index, output)
            else:
                data = output.data
                if data is None:
                    assert output.path is not None
                    data = await anyio.Path(output.path).read_bytes()
                blobs[f"{self._key(token)}:{index}"] = data
            entries[str(index)] = json.dumps(entry)
        async with (
            self._clients.guard("outputs"),
            self._clients.commands.pipeline(transaction=False) as pipe,
        ):
            for key, data in blobs.items():
                pipe.set(key, data, px=ms)
            pipe.hset(self._key(token), mapping=entries)  # type: ignore[arg-type]
            pipe.pexpire(self._key(token), 2 * ms)
            await pipe.execute()
        return token

    async def get(self, token: str, index: int) -> SharedBody:
        """Output `index` of `token`: `KeyError` if unknown, `OutputGone` if expired."""
        async with self._clients.guard("outputs"):
            expires, entry = await self._clients.commands.hmget(
                self._key(token), ["expires", str(index)]
            )
        if expires is None:
            raise KeyError(token)
        if int(expires) <= time.time() * 1000:
            raise OutputGone(token)
        if entry is None:
            raise KeyError(index)
        found = json.loads(entry)
        url = found.get("url")
        key = None if url else f"{self._key(token)}:{index}"
        return SharedBody(self, key, url, str(found["content_type"]), int(found["size"]))

    async def read_redis(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (exclusive) of a small output, a chunk per round trip."""
        for offset in range(start, end, CHUNK_SIZE):
            last = min(end, offset + CHUNK_SIZE) - 1
            async with self._clients.guard("outputs"):
                chunk: Any = await self._clients.commands.getrange(key, offset, last)
            if len(chunk) != last - offset + 1:
                raise OSError("a shared output expired while being read")
            yield bytes(chunk)

    async def _write_url(self, token: str, index: int, output: SharedOutput) -> str:
        """Write a large output under `location`; its URL."""
        url = f"{self.location}/{token}/{index}"

        def write() -> None:
            import fsspec

            fs, path = fsspec.core.url_to_fs(url)
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if output.path is not None:
                fs.put_file(str(output.path), path)
            else:
                with fs.open(path, "wb") as file:
                    file.write(output.data)

        await anyio.to_thread.run_sync(write)
        return url

    async def aclose(self) -> None:
        await self._clients.aclose()


async def _read_url(url: str, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes `start` to `end` (exclusive) of the file at an fsspec URL, read in a thread."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    file = await anyio.to_thread.run_sync(lambda: fs.open(path, "rb"))
    try:
        await anyio.to_thread.run_sync(file.seek, start)
        left = end - start
        while left > 0:
            chunk = await anyio.to_thread.run_sync(file.read, min(CHUNK_SIZE, left))
            if not chunk:
                raise OSError("a shared output file shrank while being read")
            left -= len(chunk)
            yield chunk
    finally:
        await anyio.to_thread.run_sync(file.close)
