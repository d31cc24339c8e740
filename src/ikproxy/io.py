"""Typed run inputs and outputs, and their JSON wire form.

On the wire (SCALE's and ours) every input or output is a one-key JSON object
whose key names its kind: `{"image": "<base64>"}`, `{"storage_object": {...}}`,
or any other key with JSON data (`{"object_detection": {...}}`).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "BaseIO",
    "FileIO",
    "ImageIO",
    "InputLike",
    "Outputs",
    "RefIO",
    "StorageObjectIO",
    "TaskIO",
    "as_inputs",
    "io_from_json",
    "sniff_content_type",
]

# Magic numbers of the image formats a browser can show, checked in order.
_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG", "image/png"),
    (b"\xff\xd8\xff", 0, "JPEG", "image/jpeg"),
    (b"GIF87a", 0, "GIF", "image/gif"),
    (b"GIF89a", 0, "GIF", "image/gif"),
    (b"BM", 0, "BMP", "image/bmp"),
    (b"II*\x00", 0, "TIFF", "image/tiff"),
    (b"MM\x00*", 0, "TIFF", "image/tiff"),
    (b"\x00\x00\x01\x00", 0, "ICO", "image/x-icon"),
)


def _sniff(head: bytes) -> tuple[str, str] | None:
    """Return (format, MIME type) read from an image's first bytes, or None."""
    for magic, offset, fmt, mime in _SIGNATURES:
        if head.startswith(magic, offset):
            return fmt, mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in {b"avif", b"avis"}:
        return "AVIF", "image/avif"
    return None


# ISO base media brands (the `ftyp` box) that are not plain MP4 video.
_FTYP_BRANDS = {
    b"qt  ": "video/quicktime",
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"M4A ": "audio/mp4",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3gp6": "video/3gpp",
    b"3g2a": "video/3gpp2",
}

#: How many leading bytes `sniff_content_type` needs.
SNIFF_BYTES = 64


def sniff_content_type(head: bytes) -> str | None:
    """The MIME type read from a file's first bytes (images, videos, zip, PDF), or None.

    Pass at least `SNIFF_BYTES` bytes when the file has them. Magic numbers
    only: the declared type of a file (its name, a Content-Type header) is
    never trusted for what is sent on.
    """
    image = _sniff(head)
    if image is not None:
        return image[1]
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "video/webm" if b"webm" in head[:SNIFF_BYTES] else "video/x-matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "application/zip"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


class BaseIO:
    """One run input or output. Subclasses define `kind`, the wire key."""

    kind: str

    def to_json(self) -> dict[str, Any]:
        """The one-key JSON object that stands for this value on the wire."""
        raise NotImplementedError


class ImageIO(BaseIO):
    """An encoded image (PNG, JPEG, ...), carried as base64 on the wire.

    Bytes and base64 are converted lazily and at most once, so a large result
    that is only forwarded is never decoded.
    """

    kind: ClassVar[str] = "image"  # type: ignore[misc]
    __slots__ = ("_b64", "_data")

    def __init__(self, data: bytes | None = None, *, b64: str | None = None) -> None:
        if (data is None) == (b64 is None):
            raise TypeError("ImageIO needs exactly one of data= or b64=")
        self._data = data
        self._b64 = b64

    # -- constructors ---------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageIO:
        """An image from its encoded file bytes."""
        return cls(bytes(data))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ImageIO:
        """An image read from a file."""
        return cls(Path(path).read_bytes())

    @classmethod
    def from_pil(
        cls, image: Image.Image, format: str | None = None, **save_options: Any
    ) -> ImageIO:
        """An image encoded from a PIL image (PNG unless the image knows its format)."""
        fmt = format or image.format or "PNG"
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **save_options)
        return cls(buffer.getvalue())

    @classmethod
    def from_base64(cls, b64: str) -> ImageIO:
        """An image from its base64 text, as found on the wire (decoded lazily)."""
        if not isinstance(b64, str):
            raise ValueError(f"image output must be a base64 string, not {type(b64).__name__}")
        return cls(b64=b64)

    # -- views ----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The encoded image file bytes."""
        if self._data is None:
            assert self._b64 is not None
            try:
                self._data = base64.b64decode(self._b64, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"image output is not valid base64: {exc}") from None
        return self._data

    def to_base64(self) -> str:
        """The image bytes as base64 text."""
        if self._b64 is None:
            assert self._data is not None
            self._b64 = base64.b64encode(self._data).decode("ascii")
        return self._b64

    def to_pil(self) -> Image.Image:
        """The image decoded by Pillow."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.to_bytes()))
        image.load()
        return image

    @property
    def format(self) -> str | None:
        """The image format sniffed from its bytes (`"PNG"`, `"JPEG"`, ...), or None."""
        sniffed = self._sniff()
        return sniffed[0] if sniffed else None

    @property
    def mime_type(self) -> str:
        """The MIME type sniffed from the bytes; `application/octet-stream` if unknown."""
        sniffed = self._sniff()
        return sniffed[1] if sniffed else "application/octet-stream"

    @property
    def data_url(self) -> str:
        """A `data:image/...;base64,...` URL, ready for `<img src>`."""
        sniffed = self._sniff()
        if sniffed is None:
            raise ValueError("image output is not in a format a browser can show")
        return f"data:{sniffed[1]};base64,{self.to_base64()}"

    def _sniff(self) -> tuple[str, str] | None:
        if self._data is not None:
            head = self._data[:16]
        else:
            assert self._b64 is not None
            try:
                head = base64.b64decode(self._b64[:24])
            except binascii.Error:
                return None
        sniffed = _sniff(head)
        if sniffed is None and self._data is not None:
            sniffed = _sniff_with_pillow(self._data)
        return sniffed

    def to_json(self) -> dict[str, Any]:
        return {"image": self.to_base64()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageIO):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        size = len(self._data) if self._data is not None else len(self._b64 or "") * 3 // 4
        return f"<ImageIO {self.format or 'unknown'} ~{size} bytes>"


def _sniff_with_pillow(data: bytes) -> tuple[str, str] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None
    mime = Image.MIME.get(fmt) if fmt else None
    return (fmt, mime) if fmt and mime else None


class StorageObjectIO(BaseIO):
    """A file held in SCALE storage: `{"storage_object": {"url": ..., "data_type": ...}}`."""

    kind: ClassVar[str] = "storage_object"  # type: ignore[misc]
    __slots__ = ("data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"storage_object must be a JSON object, not {type(data).__name__}")
        self.data = dict(data)

    @property
    def url(self) -> str | None:
        url = self.data.get("url")
        return url if isinstance(url, str) else None

    @property
    def data_type(self) -> str | None:
        data_type = self.data.get("data_type")
        return data_type if isinstance(data_type, str) else None

    def to_json(self) -> dict[str, Any]:
        return {"storage_object": self.data}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StorageObjectIO):
            return NotImplemented
        return self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StorageObjectIO({self.data!r})"


class TaskIO(BaseIO):
    """Any other output: a kind (the wire key, e.g. `object_detection`) and its JSON data."""

    __slots__ = ("data", "kind")

    def __init__(self, kind: str, data: Any) -> None:
        if not isinstance(kind, str) or not kind:
            raise ValueError("a task output's kind must be a non-empty string")
        self.kind = kind
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return {self.kind: self.data}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskIO):
            return NotImplemented
        return (self.kind, self.data) == (other.kind, other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TaskIO({self.kind!r}, {self.data!r})"


class FileIO(BaseIO):
    """A local file or folder to send through SCALE storage (a video, a document, a folder).

    `path` is read when the run starts, streamed from disk (never whole in
    memory); a folder is zipped to a temporary file first. `content_type`
    overrides the type found from the name or the bytes (see `content_type`;
    a folder is sent as `application/zip`); `data_type` (`"image"`,
    `"video"`, `"file_path"` or `"folder_path"`) overrides the type inferred
    from the workflow's input; `filename` is the name shown for it (the
    path's own name by default). On the wire it becomes a
    `{"storage_object": ...}` once uploaded; a local deployment gets the
    object itself and reads `path`.
    """

    kind: ClassVar[str] = "storage_object"  # type: ignore[misc]
    __slots__ = ("_content_type", "data_type", "filename", "path")

    DATA_TYPES: ClassVar[frozenset[str]] = frozenset({"image", "video", "file_path", "folder_path"})

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        data_type: str | None = None,
        filename: str | None = None,
    ) -> None:
        if data_type is not None and data_type not in self.DATA_TYPES:
            raise ValueError(
                f"data_type must be one of {', '.join(sorted(self.DATA_TYPES))}, not {data_type!r}"
            )
        self.path = Path(path)
        self._content_type = content_type
        self.data_type = data_type
        self.filename = filename or self.path.name

    @property
    def is_dir(self) -> bool:
        """Whether the path is a folder (zipped before it is uploaded)."""
        return self.path.is_dir()

    @property
    def content_type(self) -> str:
        """The given content type; else `inode/directory` for a folder; else, as the
        official client, the type its name's extension implies; else sniffed from
        its first bytes; else `application/octet-stream`."""
        if self._content_type:
            return self._content_type
        if self.is_dir:
            return "inode/directory"
        guessed = _guess_type(self.filename)
        if guessed is not None and guessed != "application/octet-stream":
            return guessed
        with self.path.open("rb") as file:
            head = file.read(SNIFF_BYTES)
        return sniff_content_type(head) or "application/octet-stream"

    def to_json(self) -> dict[str, Any]:
        raise TypeError(
            "a FileIO has no wire form of its own: the SCALE client uploads it to storage "
            "and sends the storage object"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileIO):
            return NotImplemented
        return (self.path, self._content_type, self.data_type, self.filename) == (
            other.path,
            other._content_type,
            other.data_type,
            other.filename,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FileIO({str(self.path)!r}, data_type={self.data_type!r})"


def _guess_type(name: str) -> str | None:
    import mimetypes

    guessed, _ = mimetypes.guess_type(name)
    return guessed


def io_from_json(obj: Any) -> BaseIO:
    """The typed value for a one-key wire object; `ValueError` if it is not one."""
    if not isinstance(obj, Mapping) or len(obj) != 1:
        raise ValueError("an input or output must be a JSON object with exactly one key (its kind)")
    ((kind, data),) = obj.items()
    if kind == "image":
        return ImageIO.from_base64(data)
    if kind == "storage_object":
        return StorageObjectIO(data)
    if kind == "ref":
        return RefIO.from_json(data)
    return TaskIO(kind, data)


@runtime_checkable
class Outputs(Protocol):
    """Anything that holds a run's outputs, such as `ikproxy.Results`: chained as inputs."""

    def get_outputs(self) -> list[BaseIO]: ...


InputLike = Union[str, "os.PathLike[str]", bytes, "Image.Image", BaseIO, Outputs, Mapping[str, Any]]
"""What a run accepts as an input: a path (an image, another file, a folder), a
URL (SCALE client), image bytes, a PIL image, a typed IO (`FileIO` for files),
a previous run's `Results` (to chain runs), or a raw one-key wire object."""


def as_inputs(*inputs: InputLike) -> list[BaseIO]:
    """Normalise run inputs to typed IO values, in order.

    A path to an image becomes an `ImageIO`; a path to any other file (by its
    bytes: a video, a document) or to a folder becomes a `FileIO`.
    """
    out: list[BaseIO] = []
    for value in inputs:
        if isinstance(value, BaseIO):
            out.append(value)
        elif isinstance(value, Outputs):
            out.extend(value.get_outputs())
        elif isinstance(value, (bytes, bytearray, memoryview)):
            out.append(ImageIO.from_bytes(bytes(value)))
        elif isinstance(value, (str, os.PathLike)):
            out.append(_path_input(value))
        elif isinstance(value, Mapping):
            out.append(io_from_json(value))
        elif _is_pil_image(value):
            out.append(ImageIO.from_pil(value))
        else:
            raise TypeError(
                f"unsupported input of type {type(value).__name__}: expected a path, bytes, "
                "a PIL image, an ImageIO, a Results or a one-key dict"
            )
    return out


def _path_input(value: str | os.PathLike[str]) -> BaseIO:
    """An image file read inline; any other file, or a folder, as a `FileIO`."""
    if isinstance(value, str) and "://" in value:
        raise ValueError(
            "a URL input is fetched by the SCALE client (ikproxy.Client), not read as a path"
        )
    path = Path(value)
    if path.is_dir():
        return FileIO(path)
    data = path.read_bytes() if _is_image_file(path) else None
    return ImageIO(data) if data is not None else FileIO(path)


def _is_image_file(path: Path) -> bool:
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    return _sniff(head) is not None


def _is_pil_image(value: object) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


class RefIO(BaseIO):
    """An output by reference: `{"ref": {"url", "kind", "content_type", "size"}}`.

    A large output (a video, a big image, a stored file) that the proxy serves
    at `url` instead of inlining it in the stream. On the wire `url` is relative
    to the URL of the run request (`outputs/<token>/<index>`); the consumers of
    `ikproxy.browser` resolve it and fetch the bytes lazily, on first `read()`.
    `of` is the kind of output it stands for (`image`, `storage_object`, `file`).
    """

    kind: ClassVar[str] = "ref"  # type: ignore[misc]
    __slots__ = ("_data", "_fetch", "content_type", "of", "size", "url")

    def __init__(
        self,
        url: str,
        *,
        of: str = "file",
        content_type: str = "application/octet-stream",
        size: int | None = None,
    ) -> None:
        self.url = url
        self.of = of
        self.content_type = content_type
        self.size = size
        self._data: bytes | None = None
        self._fetch: Any = None

    @classmethod
    def from_json(cls, data: Any) -> RefIO:
        """A reference from its wire data; `ValueError` saying what is wrong otherwise."""
        if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
            raise ValueError("a ref output must be a JSON object with a string 'url'")
        size = data.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError("ref.size must be a non-negative integer or null")
        of = data.get("kind", "file")
        content_type = data.get("content_type", "application/octet-stream")
        if not isinstance(of, str) or not isinstance(content_type, str):
            raise ValueError("ref.kind and ref.content_type must be strings")
        return cls(data["url"], of=of, content_type=content_type, size=size)

    def bind(self, url: str, fetch: Any) -> None:
        """Set the absolute URL and the fetcher (`ikproxy.browser` does, when it reads a stream).

        `fetch` has `get(url) -> bytes` and/or an async `aget(url) -> bytes`.
        """
        self.url = url
        self._fetch = fetch

    def read(self) -> bytes:
        """The output's bytes, downloaded on first use (sync)."""
        if self._data is None:
            if self._fetch is None:
                raise RuntimeError("this ref output was not read from a stream: fetch its url")
            self._data = self._fetch.get(self.url)
        return self._data

    async def aread(self) -> bytes:
        """The output's bytes, downloaded on first use."""
        if self._data is None:
            if self._fetch is None:
                raise RuntimeError("this ref output was not read from a stream: fetch its url")
            self._data = await self._fetch.aget(self.url)
        return self._data

    def to_image(self) -> ImageIO:
        """The output as an `ImageIO` (downloads it, sync)."""
        return ImageIO.from_bytes(self.read())

    async def ato_image(self) -> ImageIO:
        """The output as an `ImageIO` (downloads it)."""
        return ImageIO.from_bytes(await self.aread())

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": {
                "url": self.url,
                "kind": self.of,
                "content_type": self.content_type,
                "size": self.size,
            }
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RefIO):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<RefIO {self.of} {self.content_type} {self.size} bytes>"
