"""Ikomia SCALE storage: upload, look up, copy, delete and read files, as the official client.

    async with Client("https://xyz.scale.ikomia.ai") as client:
        obj = await client.storage.put(Path("clip.mp4"), "videos/clip.mp4")
        async for chunk in client.storage.read(obj, start=0, end=1023):
            ...

`Storage` shares its client's JWT (exchanged with storage rights) and HTTP
connections. Files are streamed from disk and to the caller, never held whole
in memory; `upload_stream` uploads bytes while they are still being produced.
`SyncStorage` is the blocking twin, reached as `SyncClient.storage`. What
storage answers is described in `ikproxy.deployments.scale.objects`, and the
streamed uploads live in `ikproxy.deployments.scale.upload`; both are
re-exported here.
"""

from __future__ import annotations

import datetime as dt
import io
import mimetypes
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union
from urllib.parse import quote

import httpx

from ikproxy.decimals import parse_decimal
from ikproxy.deployments.scale.objects import (
    PEER,
    Download,
    ObjectRef,
    StorageInfos,
    StorageObject,
    raise_for_status,
    response_json,
    uid_of,
)
from ikproxy.deployments.scale.upload import UploadStream, stream_upload
from ikproxy.errors import (
    StorageObjectNotFound,
    UpstreamError,
)
from ikproxy.io import FileIO, StorageObjectIO
from ikproxy.telemetry import default_telemetry
from ikproxy.telemetry.spans import span

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from ikproxy.deployments.scale.http import ScaleHTTP

__all__ = [
    "DEFAULT_SCALEFS_URL",
    "Content",
    "Download",
    "ObjectRef",
    "Storage",
    "StorageInfos",
    "StorageObject",
    "SyncStorage",
    "UploadStream",
    "uid_of",
]

DEFAULT_SCALEFS_URL = "https://scalefs.ikomia.ai"

Content = Union[bytes, str, "os.PathLike[str]", IO[bytes], FileIO]
"""What `put` uploads: bytes, text, a file path, an open binary file, or a `FileIO`."""


class Storage:
    """The SCALE storage API (`scalefs`), with the JWT and connections of a `Client`.

    Every method raises `StorageObjectNotFound` (404), `StorageObjectExists`
    (409), `AuthenticationFailed` (401/403), or `StorageError` for another
    error status; network failures raise `UpstreamConnectionError` or
    `UpstreamTimeout`.
    """

    def __init__(self, http: ScaleHTTP, scalefs_url: str) -> None:
        self._http = http
        self.url = scalefs_url.rstrip("/")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of a SCALE client>"

    def object_url(self, uid: str) -> str:
        """The URL that names an object as a run input: `{scalefs}/v1/objects/?uid={uid}`."""
        return f"{self.url}/v1/objects/?uid={quote(uid, safe='')}"

    # -- upload ---------------------------------------------------------------

    async def put(
        self,
        content: Content,
        path: str | None = None,
        *,
        content_type: str | None = None,
        overwrite: bool = False,
    ) -> StorageObject:
        """Upload `content` to `path`, or as a temporary object without one.

        A `Path` (or `FileIO`) or an open file is streamed from disk; `bytes`
        are sent as they are and a `str` as UTF-8 text, as the official client.
        The content type defaults to the one guessed from `path` (or the file's
        name), else text/plain for text, else application/octet-stream.
        `overwrite` replaces what `path` holds; without it an existing path
        raises `StorageObjectExists`.
        """
        if isinstance(content, FileIO):
            if content.is_dir:
                raise ValueError("put() uploads a file; a folder goes through a run, zipped")
            content_type = content_type or content.content_type
            content = content.path
        name = path or (os.fspath(content) if isinstance(content, os.PathLike) else None)
        content_type = content_type or _guess_content_type(name, content)
        method = "PUT" if path and overwrite else "POST"
        if isinstance(content, os.PathLike):
            with Path(content).open("rb") as file:  # noqa: ASYNC230 - opening is instant
                return await self._upload(method, path, file, content_type)
        body: IO[bytes] | bytes = content.encode() if isinstance(content, str) else content
        return await self._upload(method, path, body, content_type)

    async def _upload(
        self, method: str, path: str | None, body: IO[bytes] | bytes, content_type: str
    ) -> StorageObject:
        # httpx streams a file part from disk in 64 KiB chunks, with a Content-Length.
        with span("ikproxy.scale.upload"):
            response = await self._request(
                method, self._route(path), "the upload", files={"file": (None, body, content_type)}
            )
        default_telemetry().uploads_bytes.add(_sent(body))
        return StorageObject.from_json(response_json(response, "the upload"))

    @asynccontextmanager
    async def upload_stream(
        self,
        content_type: str = "application/octet-stream",
        path: str | None = None,
        *,
        overwrite: bool = False,
    ) -> AsyncIterator[UploadStream]:
        """Upload bytes as they are written, to `path` or as a temporary object.

            async with storage.upload_stream("video/mp4") as upload:
                async for chunk in source:
                    await upload.write(chunk)
                obj = await upload.finish()

        The request starts at once, its body sent chunked. Leaving the block
        without `finish()` (an error, a cancellation) aborts the request
        mid-body: storage keeps nothing. The body is sent once, so a JWT
        refused on the way (401) raises `AuthenticationFailed` rather than
        being retried: keep a copy of the bytes to send again with `put`.
        """
        method = "PUT" if path and overwrite else "POST"
        opening = stream_upload(self._http, method, self._route(path), content_type)
        async with opening as upload:
            yield upload

    async def copy(
        self, source: ObjectRef, path: str | None = None, *, overwrite: bool = False
    ) -> StorageObject:
        """Copy a stored object to `path` (or to a new temporary object)."""
        uid = (await self._resolve(source)).uid  # a missing source fails here, as upstream
        response = await self._request(
            "PUT" if path and overwrite else "POST",
            self._route(path),
            "the copy",
            data={"copy_from": uid},
            files={"file": (None, b"", None)},
        )
        return StorageObject.from_json(response_json(response, "the copy"))

    # -- look up ----------------------------------------------------------------

    async def get(self, path: str) -> StorageObject:
        """The object stored at exactly `path`."""
        async for obj in self._objects(path, {"exact": "true"}):
            return obj
        raise StorageObjectNotFound(f"no storage object at {path!r}", status_code=404)

    async def get_by_uid(self, uid: str) -> StorageObject:
        """The object with this uid."""
        async for obj in self._objects(None, {"uid": uid}):
            return obj
        raise StorageObjectNotFound(f"no storage object with uid {uid!r}", status_code=404)

    async def list(
        self, path: str | None = None, *, sha256: str | None = None
    ) -> AsyncGenerator[StorageObject, None]:
        """Every object under the `path` prefix (all without one), or with this `sha256`;
        pages are fetched as the iteration reaches them."""
        params = {"sha256": sha256} if sha256 is not None else {}
        async for obj in self._objects(path, params):
            yield obj

    async def _objects(
        self, path: str | None, params: dict[str, str]
    ) -> AsyncGenerator[StorageObject, None]:
        page = 1
        while True:
            response = await self._request(
                "GET", self._route(path), "the look-up", params={**params, "page": str(page)}
            )
            body = response_json(response, "the look-up")
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise UpstreamError(f"{PEER} sent a page of objects ikproxy cannot read")
            for item in results:
                yield StorageObject.from_json(item)
            if not body.get("next"):
                return
            page += 1

    # -- delete, presigned URLs, infos ------------------------------------------

    async def delete(self, path: str, *, exact: bool = False) -> None:
        """Delete the object at `path` (`exact`), or every object under that prefix
        (the default, as the official client)."""
        await self._request(
            "DELETE", self._route(path), "the deletion", params={"exact": _bool(exact)}
        )

    async def presigned_download_url(
        self, source: ObjectRef, *, expire_in: dt.timedelta | int = dt.timedelta(hours=1)
    ) -> str:
        """A URL that downloads the object without authentication until it expires."""
        uid = await self._uid(source)
        if isinstance(expire_in, int):
            expire_in = dt.timedelta(seconds=expire_in)
        expire_at = (dt.datetime.now().astimezone() + expire_in).isoformat()
        response = await self._request(
            "PUT",
            f"{self.url}/v1/presigned-urls/download/{quote(uid, safe='')}",
            "the presigned URL request",
            data={"expire_at": expire_at},
        )
        body = response_json(response, "the presigned URL request")
        url = body.get("presigned_download_url") if isinstance(body, dict) else None
        if not isinstance(url, str):
            raise UpstreamError(f"{PEER} sent a presigned URL answer ikproxy cannot read")
        return url

    async def infos(self) -> StorageInfos:
        """How many objects and bytes the storage holds, and its capacity."""
        response = await self._request("GET", f"{self.url}/v1/infos", "the infos request")
        return StorageInfos.from_json(response_json(response, "the infos request"))

    # -- read -------------------------------------------------------------------

    async def resolve(self, ref: ObjectRef) -> StorageObject:
        """The full description of a stored object (looked up unless already at hand)."""
        return await self._resolve(ref)

    @asynccontextmanager
    async def download(
        self, ref: ObjectRef, *, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[Download]:
        """Open the object's content (bytes `start` to `end` inclusive, for a range).

        The answer is a 206 for a range the server honoured, else a 200 with
        the whole body; its headers say which (`Download.content_range`).
        """
        obj = await self._resolve(ref)
        if obj.download_url is None:
            raise UpstreamError(f"{PEER} gave no download URL for object {obj.uid!r}")
        headers = {}
        if start is not None or end is not None:
            headers["Range"] = _range(start, end)
        response = await self._http.authorised(
            "GET", obj.download_url, "the download", PEER, stream=True, headers=headers
        )
        try:
            if not response.is_success:
                await response.aread()
                raise_for_status(response, "the download")
            length = response.headers.get("content-length")
            yield Download(
                status_code=response.status_code,
                content_type=response.headers.get("content-type"),
                content_length=parse_decimal(length) if length else None,
                content_range=response.headers.get("content-range"),
                _response=response,
            )
        finally:
            await response.aclose()

    async def read(
        self, ref: ObjectRef, *, start: int | None = None, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The object's content, streamed (bytes `start` to `end` inclusive, for a range)."""
        async with self.download(ref, start=start, end=end) as download:
            async for chunk in download.aiter_bytes():
                yield chunk

    async def read_bytes(self, ref: ObjectRef) -> bytes:
        """The object's whole content, in memory (for small objects)."""
        buffer = io.BytesIO()
        async for chunk in self.read(ref):
            buffer.write(chunk)
        return buffer.getvalue()

    # -- helpers ------------------------------------------------------------------

    def _route(self, path: str | None) -> str:
        route = f"{self.url}/v1/objects/"
        return route + quote(path.lstrip("/"), safe="/") if path else route

    async def _resolve(self, ref: ObjectRef) -> StorageObject:
        if isinstance(ref, StorageObject) and ref.download_url is not None:
            return ref
        if isinstance(ref, StorageObjectIO):
            metadata = ref.data.get("metadata")
            if isinstance(metadata, dict) and metadata.get("download_url"):
                return StorageObject.from_json(metadata)
        return await self.get_by_uid(await self._uid(ref))

    async def _uid(self, ref: ObjectRef) -> str:
        if isinstance(ref, str):
            return ref
        if isinstance(ref, StorageObject):
            return ref.uid
        if isinstance(ref, StorageObjectIO):
            uid = uid_of(ref)
            if uid is not None:
                return uid
            raise ValueError("this storage_object names no uid (neither in its url nor metadata)")
        raise TypeError(f"expected a StorageObject, a StorageObjectIO or a uid, not {ref!r}")

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        response = await self._http.authorised(method, url, what, PEER, **kwargs)
        raise_for_status(response, what)
        return response


class SyncStorage:
    """The blocking twin of `Storage`, through its `SyncClient`'s event loop thread."""

    def __init__(self, storage: Storage, portal: Any) -> None:
        self._storage = storage
        self._portal = portal  # a callable that returns the client's BlockingPortal

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of a SCALE client>"

    @property
    def url(self) -> str:
        return self._storage.url

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        portal: BlockingPortal = self._portal()

        async def call() -> Any:
            return await fn(*args, **kwargs)

        return portal.call(call)

    def object_url(self, uid: str) -> str:
        return self._storage.object_url(uid)

    def put(
        self,
        content: Content,
        path: str | None = None,
        *,
        content_type: str | None = None,
        overwrite: bool = False,
    ) -> StorageObject:
        result: StorageObject = self._call(
            self._storage.put, content, path, content_type=content_type, overwrite=overwrite
        )
        return result

    def copy(
        self, source: ObjectRef, path: str | None = None, *, overwrite: bool = False
    ) -> StorageObject:
        result: StorageObject = self._call(self._storage.copy, source, path, overwrite=overwrite)
        return result

    def get(self, path: str) -> StorageObject:
        result: StorageObject = self._call(self._storage.get, path)
        return result

    def get_by_uid(self, uid: str) -> StorageObject:
        result: StorageObject = self._call(self._storage.get_by_uid, uid)
        return result

    def list(
        self, path: str | None = None, *, sha256: str | None = None
    ) -> Iterator[StorageObject]:
        from ikproxy.concurrency import iterate

        stream = self._storage.list(path, sha256=sha256)
        return iterate(self._portal(), stream, stream.aclose)

    def delete(self, path: str, *, exact: bool = False) -> None:
        self._call(self._storage.delete, path, exact=exact)

    def presigned_download_url(
        self, source: ObjectRef, *, expire_in: dt.timedelta | int = dt.timedelta(hours=1)
    ) -> str:
        result: str = self._call(self._storage.presigned_download_url, source, expire_in=expire_in)
        return result

    def infos(self) -> StorageInfos:
        result: StorageInfos = self._call(self._storage.infos)
        return result

    def resolve(self, ref: ObjectRef) -> StorageObject:
        result: StorageObject = self._call(self._storage.resolve, ref)
        return result

    def read(
        self, ref: ObjectRef, *, start: int | None = None, end: int | None = None
    ) -> Iterator[bytes]:
        from ikproxy.concurrency import iterate

        stream = self._storage.read(ref, start=start, end=end)
        return iterate(self._portal(), stream, stream.aclose)

    def read_bytes(self, ref: ObjectRef) -> bytes:
        result: bytes = self._call(self._storage.read_bytes, ref)
        return result


def _sent(body: IO[bytes] | bytes) -> int:
    """How many bytes an upload's body held (a file read to its end: where it stands)."""
    if isinstance(body, bytes):
        return len(body)
    try:
        return body.tell()
    except (OSError, ValueError):
        return 0


def _guess_content_type(name: str | None, content: object) -> str:
    """As the official client: from the name's extension, else by the content's kind."""
    if name:
        guessed, _ = mimetypes.guess_type(name)
        if guessed:
            return guessed
    return "text/plain" if isinstance(content, str) else "application/octet-stream"


def _range(start: int | None, end: int | None) -> str:
    if start is not None and start < 0:
        if end is not None:
            raise ValueError("a suffix range (negative start) takes no end")
        return f"bytes={start}"
    if end is not None and (end < 0 or (start is not None and end < start)):
        raise ValueError(f"invalid byte range {start}-{end}")
    return f"bytes={start or 0}-{'' if end is None else end}"


def _bool(value: bool) -> str:
    return "true" if value else "false"
