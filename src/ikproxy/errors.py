"""The exceptions ikproxy raises, in one hierarchy.

Every message here is safe to show: none carries a token, a JWT, an endpoint
URL or a traceback. Full detail goes to the server log, never to the browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ikproxy.protocol import ERROR_MESSAGES

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "FetchError",
    "FetchHTTPError",
    "FetchNotFound",
    "FetchOriginNotAllowed",
    "FetchRefusedAddress",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchTooManyRedirects",
    "FetchUnsupportedScheme",
    "HTTPError",
    "IkproxyError",
    "IncompleteStream",
    "InvalidInput",
    "InvalidParameter",
    "RunNotFound",
    "RunTimeout",
    "StorageError",
    "StorageObjectExists",
    "StorageObjectNotFound",
    "StreamError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "WorkflowFailed",
    "error_code",
]


class IkproxyError(Exception):
    """Base class of every ikproxy error."""

    #: The wire error code the proxy sends for this error (see docs/protocol.md).
    code: str = "internal"


class InvalidParameter(IkproxyError, ValueError):
    """A run request names a parameter, task or input the deployment does not have."""

    code = "invalid_parameter"


class InvalidInput(InvalidParameter):
    """A run input cannot be sent: unreadable, or of a type the workflow input does not take."""

    code = "invalid_input"


class RunTimeout(IkproxyError, TimeoutError):
    """A run did not finish within its overall deadline."""

    code = "timeout"


class UpstreamError(IkproxyError):
    """The deployment could not be reached or answered with an error."""

    code = "upstream_failed"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class UpstreamHTTPError(UpstreamError):
    """The deployment answered with an HTTP error status."""


class RunNotFound(UpstreamHTTPError):
    """The deployment does not know the run asked for (HTTP 404 on its results)."""


class UpstreamConnectionError(UpstreamError):
    """The connection to the deployment failed or dropped."""


class UpstreamTimeout(UpstreamError):
    """One request to the deployment timed out."""


class AuthenticationFailed(UpstreamError):
    """The deployment refused our credentials (HTTP 401 or 403)."""

    code = "unauthorized"


class WorkflowFailed(UpstreamError):
    """The workflow itself failed (HTTP 520); the message is the server's."""

    code = "workflow_failed"


class StreamError(IkproxyError):
    """A stream ended with an `error` event: its code, safe message and request id."""

    def __init__(
        self,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.request_id = request_id
        #: The HTTP status when the error came as a response before any stream.
        self.status_code = status_code


class IncompleteStream(IkproxyError):
    """A stream ended without a terminal `result` or `error` event."""

    code = "incomplete_stream"


class FetchError(IkproxyError):
    """A URL input could not be fetched; `reason` says why in one word.

    The message names the URL without its query string or user info, which
    may hold secrets (presigned URLs, passwords).
    """

    code = "invalid_input"
    #: One of `not_found`, `too_large`, `timeout`, `refused_address`,
    #: `origin_not_allowed`, `unsupported_scheme`, `too_many_redirects`, `http_error`.
    reason: str = "error"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The URL (redacted) of the hop that failed.
        self.url = url


class FetchNotFound(FetchError):
    """The URL answered 404 or 410."""

    reason = "not_found"


class FetchTooLarge(FetchError):
    """The body is larger than the size limit (declared or read)."""

    code = "payload_too_large"
    reason = "too_large"


class FetchTimeout(FetchError, TimeoutError):
    """The fetch (all hops together) took longer than its timeout."""

    code = "timeout"
    reason = "timeout"


class FetchRefusedAddress(FetchError):
    """The host resolves to a private, loopback or otherwise non-public address."""

    reason = "refused_address"


class FetchOriginNotAllowed(FetchError):
    """The URL (or a redirect) leads to an origin outside the allowed ones."""

    reason = "origin_not_allowed"


class FetchUnsupportedScheme(FetchError):
    """The URL is not http(s) (nor, where supported, an fsspec protocol)."""

    reason = "unsupported_scheme"


class FetchTooManyRedirects(FetchError):
    """The URL redirected more times than allowed."""

    reason = "too_many_redirects"


class FetchHTTPError(FetchError):
    """The URL answered another HTTP error status, or the connection failed."""

    reason = "http_error"

    def __init__(
        self, message: str, *, url: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message, url=url)
        self.status_code = status_code


class StorageError(UpstreamError):
    """SCALE storage answered with an error; the message is its `detail`."""


class StorageObjectExists(StorageError):
    """The storage path already holds an object (HTTP 409): overwrite to replace it."""


class StorageObjectNotFound(StorageError):
    """No storage object matches (HTTP 404)."""


class HTTPError(Exception):
    """A request refused before the stream starts: a status, a code and a safe message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class AccessDenied(HTTPError):
    """Raised by an `authorize` hook: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: Literal[401, 403] = 403, message: str | None = None) -> None:
        if status not in (401, 403):
            raise ValueError("AccessDenied status must be 401 or 403")
        code = "unauthenticated" if status == 401 else "forbidden"
        default = "Authentication required." if status == 401 else "Not allowed."
        super().__init__(status, code, message or default)


def error_code(exc: BaseException) -> str:
    """The wire error code for an exception raised by a run."""
    if isinstance(exc, IkproxyError) and exc.code in ERROR_MESSAGES:
        return exc.code
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "internal"
