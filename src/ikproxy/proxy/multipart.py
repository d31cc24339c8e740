"""The streaming reader of a multipart body: files typed on their first bytes, spooled to disk.

A part is parsed as its bytes arrive, so a refused file type stops the upload
there, and a file that is not an image never sits whole in memory.
"""

from __future__ import annotations

import logging
from typing import IO, Any, Union

from ikproxy.errors import HTTPError
from ikproxy.io import SNIFF_BYTES, FileIO, sniff_content_type
from ikproxy.policy.config import Policy
from ikproxy.proxy.request import Pending, too_many_fields, too_many_inputs
from ikproxy.proxy.uploads import UploadDir, accepts, file_suffix, not_accepted

__all__ = ["FLUSH_BYTES", "MAX_BOUNDARY", "Job", "MultipartReader"]

logger = logging.getLogger("ikproxy")

#: RFC 2046, section 5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70


#: File bytes are written to disk (in a worker thread) and to the deployment's storage
#: upload, when it streams uploads, in pieces of about this size.
FLUSH_BYTES = 256 * 1024

#: A write of bytes to an upload's file, or (with None) its closing.
Job = tuple[IO[bytes], Union[bytes, None]]


class MultipartReader:
    """python-multipart's streaming parser, fed chunk by chunk.

    Text fields are kept; a file part is typed on its first bytes (magic
    numbers) against `policy.accept` as soon as they are in, so a refused
    type stops the upload there. An image is kept in memory (it is verified
    and sent inline); any other accepted file is written to `uploads`.
    """

    def __init__(self, content_type: str, policy: Policy, uploads: UploadDir | None) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise HTTPError(400, "bad_request", "multipart body without a boundary")
        if len(boundary) > MAX_BOUNDARY:
            raise HTTPError(400, "bad_request", "multipart boundary is too long")
        self.policy = policy
        self.uploads = uploads
        self.fields: list[tuple[str, str]] = []
        self.inputs: list[Pending] = []
        self.buffered = 0
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._data: list[bytes] = []
        self._is_file = False
        self._head = b""
        self._type: str | None = None  # the file part's sniffed type, once known
        self._file: IO[bytes] | None = None
        self._jobs: list[Job] = []
        self._opened: list[IO[bytes]] = []
        self._path: FileIO | None = None
        #: The file each opened upload file is written for.
        self.targets: dict[IO[bytes], FileIO] = {}
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks)
        except Exception:
            raise HTTPError(400, "bad_request", "malformed multipart body") from None

    # -- feeding ------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except HTTPError:
            raise
        except Exception:
            raise HTTPError(400, "bad_request", "malformed multipart body") from None

    def take_jobs(self) -> list[Job]:
        """The file writes (and closes) parsed so far, in order, for `run_jobs`."""
        self._queue_data()
        jobs, self._jobs = self._jobs, []
        return jobs

    @staticmethod
    def run_jobs(jobs: list[Job]) -> None:
        """Carry out file writes and closes (blocking: a worker thread's job)."""
        for file, data in jobs:
            if data is None:
                file.close()
                continue
            try:
                file.write(data)
            except OSError:  # a full disk: the server's trouble, not the client's
                logger.exception("an upload could not be written to its temporary file")
                raise HTTPError(500, "internal", "the upload could not be stored") from None

    def flush(self) -> None:
        """Write the file bytes parsed so far (blocking)."""
        self.run_jobs(self.take_jobs())

    def _queue_data(self) -> None:
        if self._file is not None and self._data:
            self._jobs.append((self._file, b"".join(self._data)))
            self._data = []
        self.buffered = 0

    def finish(self) -> tuple[list[tuple[str, str]], list[Pending]]:
        """The text fields and the inputs, once the whole body was fed."""
        from python_multipart.multipart import MultipartState

        try:
            self._parser.finalize()
        except HTTPError:
            raise
        except Exception:
            raise HTTPError(400, "bad_request", "malformed multipart body") from None
        if self._parser.state != MultipartState.END:  # the closing boundary never came
            raise HTTPError(400, "bad_request", "multipart body is incomplete")
        return self.fields, self.inputs

    def close(self) -> None:
        """Close every file it opened (the caller removes the folder)."""
        for file in self._opened:
            file.close()
        self._jobs = []
        self._file = None

    # -- parser callbacks -------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._field = self._value = self._head = b""
        self._data = []
        self._type = None
        self._is_file = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._is_file = b"filename" in params
        if self._is_file and len(self.inputs) >= self.policy.max_inputs:
            raise too_many_inputs(self.policy)
        if not self._is_file and len(self.fields) >= self.policy.max_form_fields:
            raise too_many_fields(self.policy)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._is_file and self._type is None:
            self._head += piece
            if len(self._head) >= SNIFF_BYTES:
                self._decide()
            return
        self._data.append(piece)
        if self._file is not None:
            self.buffered += len(piece)

    def _on_part_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        if self._is_file:
            if self._type is None:
                self._decide()
            if self._file is not None:
                self._queue_data()
                self._jobs.append((self._file, None))  # closed once written
                self._file = None
                assert self._path is not None
                self.inputs.append(self._path)
                self._path = None
            else:
                self.inputs.append(b"".join(self._data))
            self._data = []
            return
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        try:
            self.fields.append((name, b"".join(self._data).decode("utf-8")))
        except UnicodeDecodeError:
            raise HTTPError(400, "bad_request", f"form field '{name}' is not UTF-8") from None

    def _decide(self) -> None:
        """Type the file part from its first bytes: refuse it, keep it in memory, or spool it."""
        content_type = sniff_content_type(self._head) or "application/octet-stream"
        if not accepts(self.policy.accept, content_type):
            raise not_accepted(content_type, self.policy.accept)
        self._type = content_type
        head, self._head = self._head, b""
        self._data = [head]
        if content_type.startswith("image/"):
            return
        if self.uploads is None:
            raise not_accepted(content_type, self.policy.accept)
        path = self.uploads.new_file(file_suffix(content_type))
        try:
            self._file = path.open("xb")
            self._opened.append(self._file)
        except OSError:
            logger.exception("an upload could not be written to its temporary file")
            raise HTTPError(500, "internal", "the upload could not be stored") from None
        self._path = FileIO(path, content_type=content_type)
        self.targets[self._file] = self._path
        self.buffered = len(head)
