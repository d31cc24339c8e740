"""Files a browser sends for a run: the request's temporary folder, accepted types, input URLs.

A video or file upload (and a fetched input URL) is written to a folder made
for its request, and reaches the deployment as a `FileIO`; the folder is
removed when the run ends, whatever the ending (and, for what is left when
the process exits, at exit). What is accepted is decided on the bytes'
magic numbers, never on the type a browser declares. When the deployment
`SupportsStreamingUpload` (SCALE), a file is also stored while it arrives,
so that receiving and uploading overlap.
"""

from __future__ import annotations

import atexit
import mimetypes
import shutil
import tempfile
import threading
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

from ikproxy.deployments import StreamingUpload, SupportsStreamingUpload
from ikproxy.errors import (
    FetchError,
    FetchOriginNotAllowed,
    FetchRefusedAddress,
    FetchTooLarge,
    HTTPError,
)
from ikproxy.fetch import fetch_url, origin_of
from ikproxy.io import BaseIO, FileIO
from ikproxy.policy.config import Policy
from ikproxy.proxy.images import verify_image

__all__ = [
    "InputURL",
    "UploadDir",
    "accepts",
    "check_input_url",
    "file_suffix",
    "resolve_inputs",
]

_live: set[Path] = set()
_live_lock = threading.Lock()


class UploadDir:
    """The temporary folder of one request, made on first use and removed by `close()`.

    With a `deployment` that `SupportsStreamingUpload`, its files are also
    stored by the deployment while they arrive (`streaming_upload`).
    """

    def __init__(self, deployment: object = None) -> None:
        self.path: Path | None = None
        self._count = 0
        self._deployment = deployment if isinstance(deployment, SupportsStreamingUpload) else None

    def streaming_upload(
        self, content_type: str
    ) -> AbstractAsyncContextManager[StreamingUpload] | None:
        """The deployment's upload of a file of this type, opened while it arrives; None
        when the deployment keeps files on disk only."""
        if self._deployment is None:
            return None
        return self._deployment.streaming_upload(content_type)

    def new_file(self, suffix: str = "") -> Path:
        """A new, not yet existing file path in the folder."""
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix="ikproxy-upload-"))
            with _live_lock:
                _live.add(self.path)
        self._count += 1
        return self.path / f"input-{self._count}{suffix}"

    def close(self) -> None:
        """Remove the folder and everything in it (safe to call more than once)."""
        path, self.path = self.path, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
            with _live_lock:
                _live.discard(path)


@atexit.register
def _remove_left_over() -> None:
    """At exit, remove the folders of runs that were still going (a server shut down)."""
    with _live_lock:
        left = list(_live)
        _live.clear()
    for path in left:
        shutil.rmtree(path, ignore_errors=True)


def accepts(patterns: Sequence[str], content_type: str) -> bool:
    """Whether `content_type` matches one of `patterns` (`image/*`, `video/mp4`, `*/*`)."""
    family = content_type.split("/", 1)[0] + "/*"
    return any(pattern in ("*/*", family, content_type) for pattern in patterns)


def file_suffix(content_type: str) -> str:
    """A file name extension for a media type (`.mp4`), so tools that go by it work."""
    return {"video/mp4": ".mp4", "video/quicktime": ".mov"}.get(
        content_type, mimetypes.guess_extension(content_type) or ""
    )


def not_accepted(content_type: str, patterns: Sequence[str]) -> HTTPError:
    """The refusal of an upload (or fetched URL) of a type the policy does not accept."""
    if all(pattern.startswith("image/") for pattern in patterns):
        message = "the upload is not a supported image"
    else:
        message = f"uploads of type {content_type} are not accepted"
    return HTTPError(415, "unsupported_media_type", message)


class InputURL(BaseIO):
    """An input a browser gave as a URL: fetched by the proxy before the run starts."""

    kind: ClassVar[str] = "input_url"  # type: ignore[misc]
    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def to_json(self) -> dict[str, Any]:
        raise TypeError("an InputURL is fetched by the proxy; it has no wire form")

    def __repr__(self) -> str:
        return "InputURL(...)"  # the URL may hold a secret


def check_input_url(url: str, policy: Policy) -> InputURL:
    """`url` as an input, if the policy allows input URLs from its origin; 400 otherwise."""
    if not policy.allow_input_urls:
        raise HTTPError(400, "input_url_not_allowed", "input URLs are not accepted here")
    try:
        origin = origin_of(url)
    except Exception:
        raise HTTPError(400, "invalid_input", "the input URL is not a valid URL") from None
    if origin not in {origin_of(o) for o in policy.allow_input_urls}:
        raise HTTPError(
            400, "input_url_not_allowed", f"{origin} is not an allowed origin for input URLs"
        )
    return InputURL(url)


async def resolve_inputs(inputs: list[BaseIO], policy: Policy, uploads: UploadDir) -> None:
    """Fetch the `InputURL`s among `inputs` (in place): an image inline, anything else a file."""
    for index, item in enumerate(inputs):
        if isinstance(item, InputURL):
            inputs[index] = await _fetch_input(item.url, policy, uploads)


async def _fetch_input(url: str, policy: Policy, uploads: UploadDir) -> BaseIO:
    dest = uploads.new_file()
    try:
        fetched = await fetch_url(
            url,
            max_bytes=policy.max_upload_bytes,
            timeout=policy.input_url_timeout,
            allow_private=policy.allow_private_input_urls,
            allowed_origins=policy.allow_input_urls,
            dest=dest,
        )
    except FetchError as exc:
        raise _refusal(exc) from None
    content_type = fetched.content_type or "application/octet-stream"
    if not accepts(policy.accept, content_type):
        raise not_accepted(content_type, policy.accept)
    if content_type.startswith("image/"):
        return verify_image(dest.read_bytes(), policy.max_image_pixels)
    path = dest.rename(dest.with_suffix(file_suffix(content_type)))
    return FileIO(path, content_type=content_type)


def _refusal(exc: FetchError) -> HTTPError:
    """The answer to a failed input URL fetch; the message names the URL without its query."""
    if isinstance(exc, FetchTooLarge):
        return HTTPError(413, "payload_too_large", exc.message)
    if isinstance(exc, FetchOriginNotAllowed):
        return HTTPError(400, "input_url_not_allowed", exc.message)
    if isinstance(exc, FetchRefusedAddress):
        return HTTPError(400, "input_url_refused", exc.message)
    return HTTPError(400, "input_url_failed", exc.message)
