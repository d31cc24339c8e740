"""A fake SCALE storage (scalefs), served by `FakeScale` on the same app and port.

Objects live in a temporary directory; uploads are parsed as a stream and written
to disk as they arrive, so a large video never sits in the fake's memory. It
answers as the storage API does: storage objects as JSON, pages of look-ups,
`{"detail": ...}` with 404 and 409, presigned URLs that need no auth and expire,
authenticated `download_url`s that honour byte ranges.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

__all__ = ["FakeStorage", "StoredObject"]

TOTAL_BYTES = 10 * 1024**3
"""The capacity the fake reports in its infos."""

_MAX_FIELD = 64 * 1024

Refuser = Callable[[Request], "Response | None"]


@dataclass(frozen=True)
class StoredObject:
    """One object held by the fake storage."""

    uid: str
    path: str | None
    content_type: str
    sha256: str
    size: int
    created_at: str
    file: Path

    def to_json(self, base: str) -> dict[str, Any]:
        """The storage object as the API describes it, its `download_url` under `base`."""
        obj: dict[str, Any] = {
            "uid": self.uid,
            "download_url": f"{base}/v1/downloads/{self.uid}",
            "content_type": self.content_type,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": self.created_at,
        }
        if self.path is not None:
            obj["path"] = self.path
        return obj


class FakeStorage:
    """The objects of a fake storage and its routes. Thread-safe: the app may run in
    another thread than the test that reads it."""

    def __init__(self, refuse: Refuser, *, page_size: int = 10) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"storage_page_size must be an integer >= 1, not {page_size!r}")
        self.page_size = page_size
        self._refuse = refuse
        self._dir = tempfile.TemporaryDirectory(prefix="ikproxy-fake-storage-")
        self._lock = threading.Lock()
        self._objects: dict[str, StoredObject] = {}
        self._presigned: dict[str, tuple[str, dt.datetime]] = {}

    # -- what a test reads or seeds ---------------------------------------------

    def objects(self) -> list[StoredObject]:
        """Every stored object, oldest first."""
        with self._lock:
            return list(self._objects.values())

    def get(self, uid: str) -> StoredObject:
        """The object with this uid; `KeyError` if there is none."""
        with self._lock:
            return self._objects[uid]

    def read(self, uid: str) -> bytes:
        """The content of the object with this uid."""
        return self.get(uid).file.read_bytes()

    def add(
        self,
        content: bytes,
        path: str | None = None,
        *,
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        """Store `content` directly (no request), replacing what `path` held."""
        target = self._new_file()
        target.write_bytes(content)
        return self._commit(target, path, content_type, hashlib.sha256(content), len(content))

    def object_url(self, base: str, uid: str) -> str:
        """The URL that names an object as a run input."""
        return f"{base}/v1/objects/?uid={quote(uid, safe='')}"

    def uid_from_url(self, url: str, base: str | None = None) -> str | None:
        """The uid a run input's storage URL names, if it is this storage's and it exists."""
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(url)
        if parts.path != "/v1/objects/":
            return None
        if base is not None and f"{parts.scheme}://{parts.netloc}" != base:
            return None
        uids = parse_qs(parts.query).get("uid")
        with self._lock:
            return uids[0] if uids and uids[0] in self._objects else None

    # -- routes -------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(
                "/v1/objects/{path:path}",
                self._on_objects,
                methods=["GET", "POST", "PUT", "DELETE"],
            ),
            Route("/v1/presigned-urls/download/{uid}", self._on_presign, methods=["PUT"]),
            Route("/v1/presigned/{token}", self._on_presigned_get, methods=["GET"]),
            Route("/v1/downloads/{uid}", self._on_download, methods=["GET"]),
            Route("/v1/infos", self._on_infos, methods=["GET"]),
        ]

    async def _on_objects(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        path = request.path_params["path"] or None
        if request.method == "GET":
            return self._look_up(request, path)
        if request.method == "DELETE":
            return self._delete(request, path)
        return await self._upload(request, path)

    def _look_up(self, request: Request, path: str | None) -> Response:
        query = request.query_params
        try:
            page = int(query.get("page", "1"))
        except ValueError:
            return _detail(400, "page must be an integer")
        with self._lock:
            objects = list(self._objects.values())
        if "uid" in query:
            found = [o for o in objects if o.uid == query["uid"]]
        elif "sha256" in query:
            found = [o for o in objects if o.sha256 == query["sha256"]]
        elif path is None:
            found = objects
        elif query.get("exact") == "true":
            found = [o for o in objects if o.path == path]
        else:
            found = [o for o in objects if o.path is not None and o.path.startswith(path)]
        start = (page - 1) * self.page_size
        if page < 1 or (start >= len(found) and page != 1):
            return _detail(404, "Invalid page.")
        base = _base(request)
        more = start + self.page_size < len(found)
        next_url = None
        if more:
            params = dict(query) | {"page": str(page + 1)}
            next_url = f"{base}{request.url.path}?{urlencode(params)}"
        results = [o.to_json(base) for o in found[start : start + self.page_size]]
        return JSONResponse({"results": results, "next": next_url})

    def _delete(self, request: Request, path: str | None) -> Response:
        if path is None:
            return _detail(405, "a path is required to delete objects")
        exact = request.query_params.get("exact") == "true"
        with self._lock:
            doomed = [
                o
                for o in self._objects.values()
                if o.path is not None and (o.path == path if exact else o.path.startswith(path))
            ]
            for obj in doomed:
                del self._objects[obj.uid]
        if not doomed:
            return _detail(404, f"No object found at '{path}'.")
        for obj in doomed:
            obj.file.unlink(missing_ok=True)
        return Response(status_code=204)

    async def _upload(self, request: Request, path: str | None) -> Response:
        overwrite = request.method == "PUT" and path is not None
        if not overwrite and path is not None and self._at(path) is not None:
            return _detail(409, f"An object already exists at '{path}'.")
        try:
            fields, upload = await self._parse_form(request)
        except _BadForm as exc:
            return _detail(400, str(exc))
        try:
            copy_from = fields.get("copy_from")
            if copy_from:
                with self._lock:
                    source = self._objects.get(copy_from)
                if source is None:
                    return _detail(404, f"No object with uid '{copy_from}'.")
                target = self._new_file()
                shutil.copyfile(source.file, target)
                obj = self._commit_known(target, path, source)
            elif upload is None:
                return _detail(400, "the 'file' part is required")
            else:
                assert upload.path is not None
                obj = self._commit(upload.path, path, upload.content_type, upload.sha, upload.size)
                upload.path = None
        finally:
            if upload is not None and upload.path is not None:
                upload.path.unlink(missing_ok=True)
        return JSONResponse(obj.to_json(_base(request)), 201)

    async def _on_presign(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        uid = request.path_params["uid"]
        form = await request.form()
        raw = form.get("expire_at")
        try:
            expire_at = dt.datetime.fromisoformat(str(raw))
        except ValueError:
            return _detail(400, "expire_at must be an ISO 8601 date and time")
        if expire_at.tzinfo is None:
            return _detail(400, "expire_at must carry a UTC offset")
        with self._lock:
            if uid not in self._objects:
                return _detail(404, f"No object with uid '{uid}'.")
            token = secrets.token_urlsafe(24)
            self._presigned[token] = (uid, expire_at)
        url = f"{_base(request)}/v1/presigned/{token}"
        return JSONResponse({"presigned_download_url": url})

    async def _on_presigned_get(self, request: Request) -> Response:
        with self._lock:
            entry = self._presigned.get(request.path_params["token"])
            obj = self._objects.get(entry[0]) if entry else None
        if entry is None or obj is None:
            return _detail(404, "Not found.")
        if dt.datetime.now(dt.timezone.utc) >= entry[1]:
            return _detail(403, "This presigned URL has expired.")
        return FileResponse(obj.file, media_type=obj.content_type)

    async def _on_download(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        with self._lock:
            obj = self._objects.get(request.path_params["uid"])
        if obj is None:
            return _detail(404, "Not found.")
        return FileResponse(obj.file, media_type=obj.content_type)

    async def _on_infos(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        objects = self.objects()
        anonymous = [o for o in objects if o.path is None]
        return JSONResponse(
            {
                "count": len(objects),
                "used_bytes": sum(o.size for o in objects),
                "total_bytes": TOTAL_BYTES,
                "anonymous_objects": {
                    "count": len(anonymous),
                    "used_bytes": sum(o.size for o in anonymous),
                },
            }
        )

    # -- helpers ------------------------------------------------------------------

    def _at(self, path: str) -> StoredObject | None:
        with self._lock:
            return next((o for o in self._objects.values() if o.path == path), None)

    def _new_file(self) -> Path:
        return Path(self._dir.name) / uuid.uuid4().hex

    def _commit(
        self, file: Path, path: str | None, content_type: str, sha: Any, size: int
    ) -> StoredObject:
        obj = StoredObject(
            uid=str(uuid.uuid4()),
            path=path,
            content_type=content_type,
            sha256=sha.hexdigest(),
            size=size,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
            file=file,
        )
        return self._store(obj)

    def _commit_known(self, file: Path, path: str | None, source: StoredObject) -> StoredObject:
        created = dt.datetime.now(dt.timezone.utc).isoformat()
        obj = replace(source, uid=str(uuid.uuid4()), path=path, file=file, created_at=created)
        return self._store(obj)

    def _store(self, obj: StoredObject) -> StoredObject:
        """Keep `obj`; one that replaces a path's object (an overwrite) keeps its uid."""
        with self._lock:
            replaced = [o for o in self._objects.values() if obj.path and o.path == obj.path]
            for old in replaced:
                del self._objects[old.uid]
            if replaced:
                obj = replace(obj, uid=replaced[0].uid)
            self._objects[obj.uid] = obj
        for old in replaced:
            old.file.unlink(missing_ok=True)
        return obj

    async def _parse_form(self, request: Request) -> tuple[dict[str, str], _Upload | None]:
        """Stream a multipart body: the `file` part to disk, other fields as text."""
        from python_multipart.multipart import MultipartParser, parse_options_header

        _, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if not boundary:
            raise _BadForm("the body must be multipart/form-data")
        fields: dict[str, str] = {}
        state: dict[str, Any] = {}
        upload: _Upload | None = None

        def on_part_begin() -> None:
            state.update(headers={}, field=b"", value=b"", data=bytearray(), sink=None)

        def on_header_field(data: bytes, start: int, end: int) -> None:
            state["field"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            state["value"] += data[start:end]

        def on_header_end() -> None:
            state["headers"][state["field"].lower()] = state["value"]
            state.update(field=b"", value=b"")

        def on_headers_finished() -> None:
            nonlocal upload
            _, params = parse_options_header(state["headers"].get(b"content-disposition", b""))
            state["name"] = params.get(b"name", b"").decode("utf-8", "replace")
            if state["name"] == "file":
                content_type = state["headers"].get(b"content-type", b"").decode("latin-1")
                file = self._new_file()
                upload = _Upload(file, content_type or "application/octet-stream")
                state["sink"] = upload

        def on_part_data(data: bytes, start: int, end: int) -> None:
            sink: _Upload | None = state["sink"]
            if sink is not None:
                sink.write(data[start:end])
            else:
                state["data"] += data[start:end]
                if len(state["data"]) > _MAX_FIELD:
                    raise _BadForm(f"form field {state['name']!r} is too large")

        def on_part_end() -> None:
            sink: _Upload | None = state["sink"]
            if sink is not None:
                sink.close()
            else:
                fields[state["name"]] = bytes(state["data"]).decode("utf-8", "replace")

        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except _BadForm:
            raise
        except Exception:
            raise _BadForm("malformed multipart body") from None
        finally:
            if upload is not None:
                upload.close()
        if upload is not None and upload.size == 0 and fields.get("copy_from"):
            upload.discard()
            upload = None
        return fields, upload


class _BadForm(ValueError):
    pass


class _Upload:
    """A `file` part being written to disk, hashed as it goes."""

    def __init__(self, path: Path, content_type: str) -> None:
        self.path: Path | None = path
        self.content_type = content_type
        self.sha = hashlib.sha256()
        self.size = 0
        self._file: IO[bytes] | None = path.open("wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _detail(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status)
