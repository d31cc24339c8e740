"""The exceptions ikproxy raises, in one hierarchy.

Every message here is safe to show: none carries a token, a JWT, an endpoint
URL or a traceback. Full detail goes to the server log, never to the browser.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "IkproxyError",
    "IncompleteStream",
    "InvalidParameter",
    "RunNotFound",
    "RunTimeout",
    "StreamError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "WorkflowFailed",
]


class IkproxyError(Exception):
    """Base class of every ikproxy error."""

    #: The wire error code the proxy sends for this error (see docs/protocol.md).
    code: str = "internal"


class InvalidParameter(IkproxyError, ValueError):
    """A run request names a parameter, task or input the deployment does not have."""

    code = "invalid_parameter"


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
