"""What SCALE storage describes and answers: stored objects, usage, downloads, errors.

The storage client (`ikproxy.deployments.scale.storage`) and its streamed
uploads (`ikproxy.deployments.scale.upload`) share these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import parse_qs, urlsplit

import httpx

from ikproxy.errors import (
    AuthenticationFailed,
    StorageError,
    StorageObjectExists,
    StorageObjectNotFound,
    UpstreamError,
)
from ikproxy.io import StorageObjectIO

__all__ = [
    "PEER",
    "Download",
    "ObjectRef",
    "StorageInfos",
    "StorageObject",
    "raise_for_status",
    "response_json",
    "uid_of",
]

#: How errors name the service.
PEER = "SCALE storage"


@dataclass(frozen=True)
class StorageObject:
    """A file held in SCALE storage, as the storage API describes it."""

    uid: str
    path: str | None = None
    download_url: str | None = None
    content_type: str | None = None
    sha256: str | None = None
    size: int | None = None
    created_at: dt.datetime | None = None
    #: The JSON object as received.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> StorageObject:
        """Parse a storage object; `UpstreamError` if it has no uid."""
        if not isinstance(obj, dict) or not isinstance(obj.get("uid"), str) or not obj["uid"]:
            raise UpstreamError(f"{PEER} sent an object description ikproxy cannot read")
        size = obj.get("size")
        return cls(
            uid=obj["uid"],
            path=_str_or_none(obj.get("path")),
            download_url=_str_or_none(obj.get("download_url")),
            content_type=_str_or_none(obj.get("content_type")),
            sha256=_str_or_none(obj.get("sha256")),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            created_at=_datetime_or_none(obj.get("created_at")),
            raw=dict(obj),
        )


ObjectRef = Union[StorageObject, StorageObjectIO, str]
"""What names a stored object: a `StorageObject`, a `StorageObjectIO` (a run
input or output), or a uid."""


@dataclass(frozen=True)
class StorageInfos:
    """How much of the storage is used: objects and bytes, in all and for anonymous objects."""

    count: int
    used_bytes: int
    total_bytes: int
    anonymous_count: int
    anonymous_used_bytes: int

    @classmethod
    def from_json(cls, obj: Any) -> StorageInfos:
        try:
            anonymous = obj.get("anonymous_objects") or {}
            return cls(
                count=int(obj["count"]),
                used_bytes=int(obj["used_bytes"]),
                total_bytes=int(obj["total_bytes"]),
                anonymous_count=int(anonymous.get("count", 0)),
                anonymous_used_bytes=int(anonymous.get("used_bytes", 0)),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            raise UpstreamError(f"{PEER} sent storage infos ikproxy cannot read") from None


@dataclass(frozen=True)
class Download:
    """An open download: its status (200, or 206 for a range), headers, and body stream."""

    status_code: int
    content_type: str | None
    #: The `Content-Length` of this answer (the range's length for a 206), if known.
    content_length: int | None
    #: The `Content-Range` header of a 206 answer, as sent.
    content_range: str | None
    _response: httpx.Response = field(repr=False)

    async def aiter_bytes(self, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """The body, chunk by chunk."""
        async for chunk in self._response.aiter_bytes(chunk_size):
            yield chunk


def uid_of(ref: StorageObjectIO) -> str | None:
    """The uid a `storage_object` names: in its metadata, or its url's `uid` query."""
    metadata = ref.data.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("uid"), str):
        return str(metadata["uid"])
    if ref.url is None:
        return None
    values = parse_qs(urlsplit(ref.url).query).get("uid")
    return values[0] if values else None


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Raise the error an unsuccessful answer to `what` stands for (404, 409, 401/403, ...)."""
    status = response.status_code
    if response.is_success:
        return
    detail = _detail(response)
    if status == 404:
        raise StorageObjectNotFound(detail or f"{what}: not found", status_code=404)
    if status == 409:
        raise StorageObjectExists(detail or f"{what}: the path already exists", status_code=409)
    if status in (401, 403):
        raise AuthenticationFailed(
            f"{what} was refused: {PEER} rejected the credentials (HTTP {status})",
            status_code=status,
        )
    suffix = f": {detail}" if detail else ""
    raise StorageError(f"{what} failed: {PEER} answered HTTP {status}{suffix}", status_code=status)


def _detail(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None


def response_json(response: httpx.Response, what: str) -> Any:
    """The answer's JSON body; `UpstreamError` if it is not JSON."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise UpstreamError(f"{what} failed: {PEER} sent an answer that is not JSON") from None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _datetime_or_none(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
