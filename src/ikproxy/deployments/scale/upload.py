"""Uploads to SCALE storage whose bytes are sent while they are still being produced.

The body goes out chunked through a pipe of one chunk, so memory stays bounded
whatever the file's size (`Storage.upload_stream`).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from ikproxy.deployments.scale.objects import (
    PEER,
    StorageObject,
    raise_for_status,
    response_json,
)
from ikproxy.errors import StorageError
from ikproxy.telemetry import default_telemetry
from ikproxy.telemetry.spans import span

if TYPE_CHECKING:
    from ikproxy.deployments.scale.http import ScaleHTTP

__all__ = ["UploadStream", "stream_upload"]


class UploadStream:
    """An upload whose bytes are written while it is sent (`Storage.upload_stream`).

    The bytes go through a pipe of one chunk: `write` waits while storage is
    behind, so memory stays bounded whatever the file's size.
    """

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](1)
        self._done = anyio.Event()
        self._result: StorageObject | None = None
        self._error: Exception | None = None
        self._ended = False
        #: Bytes written so far.
        self.sent = 0

    async def write(self, data: bytes) -> None:
        """Send `data`; raises the upload's error if it has failed already."""
        try:
            await self._send.send(data)
            self.sent += len(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._done.wait()
            raise self._failure() from None

    async def finish(self) -> StorageObject:
        """End the body and wait for storage's answer: the stored object."""
        self._ended = True
        self._send.close()
        await self._done.wait()
        if self._result is None:
            raise self._failure()
        return self._result

    def _failure(self) -> Exception:
        return self._error or StorageError("the upload ended before its body was sent")

    async def _body(self, head: bytes, tail: bytes) -> AsyncIterator[bytes]:
        yield head
        async with self._receive:
            async for chunk in self._receive:
                yield chunk
        if not self._ended:  # the pipe broke: never let a partial body look whole
            raise StorageError("the upload was aborted")
        yield tail

    async def _run(self, http: ScaleHTTP, method: str, url: str, content_type: str) -> None:
        boundary = secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode("latin-1")
        tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
        try:
            # Sent once (a one-shot body): a 401 is not retried here but raised.
            with span("ikproxy.scale.upload"):
                response = await http.authorised(
                    method,
                    url,
                    "the upload",
                    PEER,
                    retry=False,
                    content=self._body(head, tail),
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
            raise_for_status(response, "the upload")
            self._result = StorageObject.from_json(response_json(response, "the upload"))
            default_telemetry().uploads_bytes.add(self.sent)
        except Exception as exc:
            self._error = exc
        finally:
            self._receive.close()
            self._done.set()


@asynccontextmanager
async def stream_upload(
    http: ScaleHTTP, method: str, url: str, content_type: str
) -> AsyncIterator[UploadStream]:
    """Start an upload to `url` whose body is written to the `UploadStream` yielded.

    Leaving the block without `finish()` (an error, a cancellation) aborts the
    request mid-body: storage keeps nothing.
    """
    upload = UploadStream()
    error: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(upload._run, http, method, url, content_type)
        try:
            yield upload
        except Exception as exc:  # raised as it is, not in a task group's ExceptionGroup
            error = exc
        finally:
            if not upload._done.is_set() and not upload._ended:
                tasks.cancel_scope.cancel()
    if error is not None:
        raise error
