"""The exceptions ikproxy raises, in one hierarchy, each with its HTTP status and wire code.

Every error derives from `IkproxyError`. Its class says how the proxy answers it:
`status` (the HTTP status of a refusal before the stream), `code` (the wire
error code, docs/protocol.md) and `public_message` (the safe text sent with it).
A `HTTPError` is a refusal written for the client: its own message is safe to
send. Any other error's text may hold detail (an upstream's answer, a path):
it goes to the server log, and the client gets the class's `public_message`.
None carries a token, a JWT, an endpoint URL or a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar, Literal

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "BadRequest",
    "BrokerUnavailable",
    "CrossSiteRequest",
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
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PolicyError",
    "RateLimited",
    "ResumeExpired",
    "RunLost",
    "RunNotFound",
    "RunTimeout",
    "StorageError",
    "StorageObjectExists",
    "StorageObjectNotFound",
    "StoreUnavailable",
    "StreamError",
    "TooManyRuns",
    "UnsupportedMediaType",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamTimeout",
    "WorkflowFailed",
    "error_class",
    "error_code",
    "public_error",
]


class IkproxyError(Exception):
    """Base class of every ikproxy error: 500 `internal` unless a subclass says otherwise."""

    #: The HTTP status when this error refuses a request before its stream starts.
    status: ClassVar[int] = 500
    #: The wire error code the proxy sends for this error (see docs/protocol.md).
    code: str = "internal"
    #: The text sent to the client with `code`; the exception's own text goes to the log.
    public_message: ClassVar[str] = "An internal error occurred."


class InvalidParameter(IkproxyError, ValueError):
    """A run request names a parameter, task or input the deployment does not have."""

    code = "invalid_parameter"
    status = 400
    public_message = "The deployment refused the request's parameters."


class InvalidInput(InvalidParameter):
    """A run input cannot be sent: unreadable, or of a type the workflow input does not take."""

    code = "invalid_input"
    status = 400
    public_message = "The deployment refused the request's inputs."


class RunTimeout(IkproxyError, TimeoutError):
    """A run did not finish within its overall deadline."""

    code = "timeout"
    status = 504
    public_message = "The run did not finish in time."


class UpstreamError(IkproxyError):
    """The deployment could not be reached or answered with an error."""

    code = "upstream_failed"
    status = 502
    public_message = "The deployment could not be reached or answered with an error."

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
    status = 502
    public_message = "The deployment refused the server's credentials."


class WorkflowFailed(UpstreamError):
    """The workflow itself failed (HTTP 520); the message is the server's."""

    code = "workflow_failed"
    status = 502
    public_message = "The workflow failed while processing this request."


class PolicyError(IkproxyError, TypeError, ValueError):
    """A `Policy` option that is unknown or has a bad value, found when the policy is made.

    Its message names the option, says what is wrong, and gives the nearest
    valid option or value when there is one ("did you mean `max_active_runs`?").
    Every surface gives the same text (Django's system checks too). A
    `TypeError` and a `ValueError`, as Python raises for a bad argument.
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"Policy option `{option}`: {problem}")
        #: The option's name, as given.
        self.option = option
        #: What is wrong with it, and the nearest valid choice if any.
        self.problem = problem


class StreamError(IkproxyError):
    """A stream ended with an `error` event: its code, safe message and request id.

    Raised by the consumers (`ikproxy.browser`). Should a run re-raise one, the
    proxy answers it as the upstream's failure (502 `upstream_failed`).
    `status_code` and `retry_after` (seconds, from the `Retry-After` header) are
    set when the error came as a refused request before any stream.
    """

    code = "upstream_failed"
    status = 502
    public_message = UpstreamError.public_message

    def __init__(
        self,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.request_id = request_id
        #: The HTTP status when the error came as a response before any stream.
        self.status_code = status_code
        #: The seconds the server asked to wait before retrying (`Retry-After`), or None.
        self.retry_after = retry_after


class IncompleteStream(IkproxyError):
    """A stream ended without a terminal `result` or `error` event."""

    code = "incomplete_stream"
    status = 502
    public_message = "The stream ended before its terminal event."


class FetchError(IkproxyError):
    """A URL input could not be fetched; `reason` says why in one word.

    The message names the URL without its query string or user info, which
    may hold secrets (presigned URLs, passwords).
    """

    code = "invalid_input"
    status = 400
    public_message = "An input URL could not be fetched."
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
    status = 413
    public_message = "An input is larger than allowed."
    reason = "too_large"


class FetchTimeout(FetchError, TimeoutError):
    """The fetch (all hops together) took longer than its timeout."""

    code = "timeout"
    status = 504
    public_message = "An input URL took too long to fetch."
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


class RunLost(IkproxyError):
    """The instance running a shared run died or lost it; its followers cannot finish it."""

    status = 502
    code = "run_lost"
    public_message = "The run was lost with the server that was running it."


class StoreUnavailable(IkproxyError):
    """The store could not be reached in time; the proxy answers 503 `store_unavailable`."""

    status = 503
    code = "store_unavailable"
    public_message = "The shared store could not be reached; try again shortly."


class BrokerUnavailable(IkproxyError):
    """A task queue's broker (Celery's) could not take a run in time: 503 `broker_unavailable`."""

    status = 503
    code = "broker_unavailable"
    public_message = "The task queue could not be reached; try again shortly."


# -- refusals written for the client ------------------------------------------------


class HTTPError(IkproxyError):
    """A request refused before the stream starts: a status, a code and a message safe to send.

    Raise a subclass where one fits (`BadRequest`, `PayloadTooLarge`...). A code
    that a class owns must come with that class's status: `HTTPError(500,
    "bad_request", ...)` raises `ValueError`, so a status cannot drift from its code.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        owner = error_class(code)
        if owner is not IkproxyError and owner.status != status and not _any_status(owner):
            raise ValueError(f"error code {code!r} goes with status {owner.status}, not {status}")
        super().__init__(message)
        self.status = status  # type: ignore[misc]
        self.code = code
        self.message = message
        self.public_message = message  # type: ignore[misc]
        self.headers = dict(headers or {})


class _Refusal(HTTPError):
    """A refusal whose class fixes its status and code: only the message and headers vary."""

    def __init__(
        self, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        cls = type(self)
        super().__init__(cls.status, cls.code, message or cls.public_message, headers=headers)


class BadRequest(_Refusal):
    """The request is malformed: a body that does not parse, a field given twice."""

    status = 400
    code = "bad_request"
    public_message = "The request is malformed."


class InputURLNotAllowed(_Refusal):
    """Input URLs are not accepted, or lead (or redirect) outside the allowed origins."""

    status = 400
    code = "input_url_not_allowed"
    public_message = "This input URL is not allowed."


class InputURLRefused(_Refusal):
    """An input URL leads to a private, loopback or otherwise non-public address."""

    status = 400
    code = "input_url_refused"
    public_message = "This input URL leads to an address that is not public."


class InputURLFailed(_Refusal):
    """An input URL could not be fetched: not found, an HTTP error, a timeout."""

    status = 400
    code = "input_url_failed"
    public_message = "This input URL could not be fetched."


class AccessDenied(HTTPError):
    """Raised by an `authorize` hook: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: Literal[401, 403] = 403, message: str | None = None) -> None:
        if status not in (401, 403):
            raise ValueError("AccessDenied status must be 401 or 403")
        code = "unauthenticated" if status == 401 else "forbidden"
        default = "Authentication required." if status == 401 else "Not allowed."
        super().__init__(status, code, message or default)


class CrossSiteRequest(_Refusal):
    """A run asked for by a page of another site (`Sec-Fetch-Site: cross-site`), from an
    origin not in the policy's `allowed_origins`."""

    status = 403
    code = "cross_site"
    public_message = "Runs cannot be started from another site."


class NotFound(_Refusal):
    """No such endpoint, or no such output."""

    status = 404
    code = "not_found"
    public_message = "Not found."


class MethodNotAllowed(_Refusal):
    """The endpoint exists but not for this method (the `Allow` header lists those it takes)."""

    status = 405
    code = "method_not_allowed"
    public_message = "Method not allowed."


class ResumeExpired(_Refusal):
    """The run to resume is unknown, or was forgotten."""

    status = 410
    code = "resume_expired"
    public_message = "The run to resume has expired."


class PayloadTooLarge(_Refusal):
    """The body, an upload or an image (in pixels) is larger than the policy allows."""

    status = 413
    code = "payload_too_large"
    public_message = "The request is larger than allowed."


class UnsupportedMediaType(_Refusal):
    """A body type the endpoint does not take, or an upload that is not a complete image."""

    status = 415
    code = "unsupported_media_type"
    public_message = "Unsupported media type."


class RateLimited(_Refusal):
    """The caller's rate limit is spent; `Retry-After` says when to try again."""

    status = 429
    code = "rate_limited"
    public_message = "Too many requests; retry later."


class TooManyRuns(_Refusal):
    """All of the caller's `max_active_runs` runs are going; retry when one ends."""

    status = 429
    code = "too_many_runs"
    public_message = "Too many runs at once for this client; retry when one ends."


# -- from an exception to its answer -----------------------------------------------

#: Classes whose status is set per instance (the code alone does not fix it).
_PER_INSTANCE = ("unauthenticated", "forbidden")


def _any_status(cls: type[IkproxyError]) -> bool:
    return cls.code in _PER_INSTANCE


def _subclasses(cls: type[IkproxyError]) -> Iterator[type[IkproxyError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def error_class(code: str) -> type[IkproxyError]:
    """The class that owns wire `code` (the first defined); `IkproxyError` for an unknown one."""
    for cls in _subclasses(IkproxyError):
        if vars(cls).get("code") == code:
            return cls
    return IkproxyError


def public_error(exc: BaseException) -> tuple[int, str, str]:
    """How the client is told of `exc`: (HTTP status, wire code, safe message).

    A `HTTPError`'s own; otherwise its class's, or those of the class that owns
    its code (a code replayed from a run's log); a `TimeoutError` is a timeout;
    anything else is 500 `internal`.
    """
    if isinstance(exc, HTTPError):
        return exc.status, exc.code, exc.message
    cls: type[IkproxyError] = IkproxyError
    if isinstance(exc, StreamError):
        cls = UpstreamError
    elif isinstance(exc, IkproxyError):
        cls = type(exc) if type(exc).code == exc.code else error_class(exc.code)
    elif isinstance(exc, TimeoutError):
        cls = RunTimeout
    return cls.status, cls.code, cls.public_message


def error_code(exc: BaseException) -> str:
    """The wire error code for an exception raised by a run."""
    return public_error(exc)[1]
