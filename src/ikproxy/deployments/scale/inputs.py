"""Turning run inputs into what SCALE takes: inline images, or files sent through storage.

The official client's rule: videos, files and folders (zipped) always go
through storage, and any input when the caller asks `save_temporary`; images
go inline as base64. URLs are fetched first (http and https with `fetch_url`,
other protocols with fsspec when it is installed), into a temporary directory
that lives as long as the preparation: nothing large is ever held in memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ikproxy.deployments.scale.protocol import STORED_DATA_TYPES, Workflow, infer_data_type
from ikproxy.deployments.scale.storage import Storage, UploadStream
from ikproxy.errors import (
    FetchError,
    FetchHTTPError,
    FetchNotFound,
    FetchTooLarge,
    FetchUnsupportedScheme,
    InvalidInput,
)
from ikproxy.fetch import fetch_url, redact_url
from ikproxy.io import BaseIO, FileIO, ImageIO, InputLike, StorageObjectIO, as_inputs
from ikproxy.model import Results

__all__ = ["InputOptions", "StoredFile", "StreamedUpload", "prepare_inputs", "zip_folder"]

logger = logging.getLogger("ikproxy.deployments.scale")

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class InputOptions:
    """How URL inputs are fetched: size limit, total timeout, private addresses allowed."""

    max_bytes: int
    timeout: float
    allow_private: bool


class StoredFile(FileIO):
    """A file already in a client's storage (stored while it arrived): sent by its uid.

    Its `path` holds the same bytes, for a run that needs them locally.
    """

    __slots__ = ("storage_url", "uid")

    def __init__(self, file: FileIO, *, uid: str, storage_url: str) -> None:
        super().__init__(
            file.path,
            content_type=file.content_type,
            data_type=file.data_type,
            filename=file.filename,
        )
        self.uid = uid
        self.storage_url = storage_url


class StreamedUpload:
    """A browser's file stored while it arrives; if that fails, it is left to the run.

    Errors are not raised: the file written alongside is then uploaded the
    usual way when the run starts (which renews a JWT refused on the way).
    """

    def __init__(self, stream: UploadStream, storage_url: str) -> None:
        self._stream = stream
        self._storage_url = storage_url
        self._failed = False

    async def write(self, data: bytes) -> None:
        if self._failed:
            return
        try:
            await self._stream.write(data)
        except Exception as exc:
            self._fail(exc)

    async def finish(self, file: FileIO) -> FileIO:
        if not self._failed:
            try:
                obj = await self._stream.finish()
            except Exception as exc:
                self._fail(exc)
            else:
                return StoredFile(file, uid=obj.uid, storage_url=self._storage_url)
        return file

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        logger.debug("storing an upload while it arrived failed (%s): sent from disk", exc)


async def prepare_inputs(
    inputs: Sequence[InputLike],
    *,
    workflow: Workflow,
    storage: Storage,
    options: InputOptions,
    save_temporary: bool = False,
) -> list[BaseIO]:
    """The wire-ready inputs of a run, in order; uploads done, temporary files removed."""
    prepared: list[BaseIO] = []
    with tempfile.TemporaryDirectory(prefix="ikproxy-inputs-") as scratch:
        for value in inputs:
            if isinstance(value, Results):
                prepared.extend(value.get_outputs())
                continue
            position = len(prepared)
            types = workflow.input_types
            workflow_type = types[position] if position < len(types) else None
            prepared.append(
                await _prepare(value, workflow_type, storage, options, save_temporary, scratch)
            )
    return prepared


async def _prepare(
    value: InputLike,
    workflow_type: str | None,
    storage: Storage,
    options: InputOptions,
    save_temporary: bool,
    scratch: str,
) -> BaseIO:
    if isinstance(value, str) and "://" in value:
        return await _prepare_url(value, workflow_type, storage, options, save_temporary, scratch)
    if isinstance(value, (str, os.PathLike)):
        value = FileIO(value)
    if isinstance(value, FileIO):
        return await _prepare_file(value, workflow_type, storage, save_temporary, scratch)
    (typed,) = as_inputs(value)
    if isinstance(typed, ImageIO) and save_temporary:
        data = typed.to_bytes()
        data_type, content_type = infer_data_type(
            is_directory=False, content_type=typed.mime_type, workflow_type=workflow_type
        )
        obj = await storage.put(data, content_type=content_type)
        return _stored(storage, obj.uid, data_type)
    return typed


async def _prepare_url(
    url: str,
    workflow_type: str | None,
    storage: Storage,
    options: InputOptions,
    save_temporary: bool,
    scratch: str,
) -> BaseIO:
    scheme = url.split("://", 1)[0].lower()
    if scheme in {"http", "https"}:
        fetched = await fetch_url(
            url,
            max_bytes=options.max_bytes,
            timeout=options.timeout,
            allow_private=options.allow_private,
            dest=scratch,
        )
        assert fetched.path is not None
        content_type = fetched.content_type or fetched.declared_content_type
        file = FileIO(fetched.path, content_type=content_type, filename=fetched.filename)
    else:
        file = await _fsspec_copy(url, scratch, options.max_bytes)
    try:
        return await _prepare_file(file, workflow_type, storage, save_temporary, scratch)
    except InvalidInput as exc:
        raise InvalidInput(f"{redact_url(url)}: {exc}") from None


async def _prepare_file(
    file: FileIO,
    workflow_type: str | None,
    storage: Storage,
    save_temporary: bool,
    scratch: str,
) -> BaseIO:
    is_directory, content_type = await anyio.to_thread.run_sync(_describe, file)
    data_type, upload_type = infer_data_type(
        is_directory=is_directory,
        content_type=content_type,
        data_type=file.data_type,
        workflow_type=workflow_type,
    )
    if save_temporary or data_type in STORED_DATA_TYPES:
        if isinstance(file, StoredFile) and file.storage_url == storage.url:
            return _stored(storage, file.uid, data_type)
        path = file.path
        if is_directory:
            path = await anyio.to_thread.run_sync(zip_folder, file.path, scratch)
        obj = await storage.put(path, content_type=upload_type or "application/octet-stream")
        return _stored(storage, obj.uid, data_type)
    if data_type == "image":
        return ImageIO(await anyio.to_thread.run_sync(file.path.read_bytes))
    raise InvalidInput(f"cannot send a file as data_type {data_type!r}")


def _describe(file: FileIO) -> tuple[bool, str]:
    """Whether the input is a folder, and its content type; `InvalidInput` if missing."""
    if not file.path.exists():
        raise InvalidInput(f"input file not found: {file.path}")
    if file.path.is_dir():
        return True, ""
    return False, file.content_type


def _stored(storage: Storage, uid: str, data_type: str) -> StorageObjectIO:
    return StorageObjectIO({"url": storage.object_url(uid), "data_type": data_type})


def zip_folder(folder: Path, scratch: str) -> Path:
    """Zip a folder's files (paths relative to it) into a new file in `scratch`, streamed."""
    fd, name = tempfile.mkstemp(prefix="folder-", suffix=".zip", dir=scratch)
    os.close(fd)
    with zipfile.ZipFile(name, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for filename in sorted(files):
                path = Path(root, filename)
                archive.write(path, path.relative_to(folder).as_posix())
    return Path(name)


async def _fsspec_copy(url: str, scratch: str, max_bytes: int) -> FileIO:
    """Copy an fsspec URL (`s3://`, `gs://`, `memory://`...) to `scratch`; a folder is zipped."""
    try:
        import fsspec  # noqa: F401
    except ModuleNotFoundError:
        scheme = url.split("://", 1)[0]
        raise FetchUnsupportedScheme(
            f"{scheme}:// inputs need fsspec (pip install 'ikproxy[fsspec]'); "
            "without it only http and https URLs are fetched",
            url=redact_url(url),
        ) from None
    shown = redact_url(url)
    try:
        return await anyio.to_thread.run_sync(_fsspec_copy_sync, url, scratch, max_bytes)
    except (InvalidInput, FetchError):
        raise
    except FileNotFoundError:
        raise FetchNotFound(f"{shown} was not found", url=shown) from None
    except ImportError as exc:  # the protocol's own package (s3fs, gcsfs...) is missing
        raise FetchUnsupportedScheme(f"{shown}: {exc}", url=shown) from None
    except ValueError as exc:  # its text may hold the URL, credentials included: not shown
        if "protocol" not in str(exc).lower():
            raise FetchHTTPError(f"cannot read {shown}: ValueError", url=shown) from None
        scheme = url.split("://", 1)[0]
        raise FetchUnsupportedScheme(
            f"{scheme}:// is not a protocol fsspec knows", url=shown
        ) from None
    except OSError as exc:
        raise FetchHTTPError(f"cannot read {shown}: {type(exc).__name__}", url=shown) from None


def _fsspec_copy_sync(url: str, scratch: str, max_bytes: int) -> FileIO:
    import fsspec

    fs: Any
    fs, path = fsspec.core.url_to_fs(url)
    name = str(path).rstrip("/").rsplit("/", 1)[-1] or "input"
    if not fs.exists(path):
        raise FileNotFoundError(path)
    if fs.isdir(path):
        fd, zip_name = tempfile.mkstemp(prefix="folder-", suffix=".zip", dir=scratch)
        os.close(fd)
        total = 0
        with zipfile.ZipFile(zip_name, "w", zipfile.ZIP_DEFLATED) as archive:
            for root, _, files in fs.walk(path):
                for filename in sorted(files):
                    file_path = fs.sep.join([root, filename])
                    total += int(fs.size(file_path) or 0)
                    _check_size(total, max_bytes, url)
                    arcname = os.path.relpath(file_path, start=path)
                    with fs.open(file_path, "rb") as src, archive.open(arcname, "w") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
        return FileIO(zip_name, data_type="folder_path", filename=name)
    fd, local = tempfile.mkstemp(prefix="fetched-", dir=scratch)
    size = 0
    with fs.open(path, "rb") as src, os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            _check_size(size, max_bytes, url)
            out.write(chunk)
    # As the official client: the type from the name's extension, else from the bytes.
    return FileIO(local, filename=name)


def _check_size(size: int, max_bytes: int, url: str) -> None:
    if size > max_bytes:
        shown = redact_url(url)
        raise FetchTooLarge(f"{shown} is larger than the limit of {max_bytes} bytes", url=shown)
