"""HTTP to SCALE: the token-to-JWT exchange, authorised endpoint requests, error mapping.

One pooled `httpx.AsyncClient`, created on first use. Failures become typed
`ikproxy.errors` exceptions whose messages never hold the token, the JWT or a URL;
the debug log (logger `ikproxy.deployments.scale`) has paths and statuses, no secrets.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import httpx

from ikproxy.__about__ import __version__
from ikproxy.errors import (
    AuthenticationFailed,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    WorkflowFailed,
)

__all__ = ["JWT_RENEW_MARGIN", "USER_AGENT", "ScaleHTTP"]

logger = logging.getLogger("ikproxy.deployments.scale")

USER_AGENT = f"ikproxy/{__version__} (+httpx)"
JWT_RENEW_MARGIN = 60.0
"""Seconds before its expiry at which a JWT is renewed, as the official client."""

WORKFLOW_FAILED = 520
"""The status a deployment answers when the workflow itself failed."""


class ScaleHTTP:
    """Authorised JSON requests to one deployment endpoint, with a shared, cached JWT."""

    def __init__(
        self,
        endpoint: str,
        api_url: str,
        token: str,
        *,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._endpoint = endpoint
        self._base = endpoint.rstrip("/")
        self._jwt_url = api_url.rstrip("/") + "/v1/projects/jwt/"
        self._token = token
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._jwt: str | None = None
        self._jwt_renew_at = 0.0
        self._jwt_lock = anyio.Lock()

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- authentication -------------------------------------------------------

    async def jwt(self, *, stale: str | None = None) -> str:
        """A valid JWT: the cached one, or a fresh one (shared by concurrent callers).

        `stale` is a JWT the endpoint refused: it is replaced unless another caller
        already did so.
        """
        async with self._jwt_lock:
            if (
                self._jwt is not None
                and self._jwt != stale
                and time.monotonic() < self._jwt_renew_at
            ):
                return self._jwt
            self._jwt = None
            jwt, expires_in = await self._exchange()
            self._jwt, self._jwt_renew_at = jwt, time.monotonic() + expires_in - JWT_RENEW_MARGIN
            return jwt

    async def _exchange(self) -> tuple[str, float]:
        what = "the token exchange"
        response = await self._send(
            "GET",
            self._jwt_url,
            what,
            "the SCALE API",
            params={"endpoint": self._endpoint, "storage": "true"},
            headers={"Authorization": f"Token {self._token}"},
        )
        if response.status_code in (401, 403):
            raise AuthenticationFailed(
                f"{what} was refused: SCALE rejected the API token (HTTP {response.status_code})",
                status_code=response.status_code,
            )
        if not response.is_success:
            raise UpstreamHTTPError(
                f"{what} failed: the SCALE API answered HTTP {response.status_code}",
                status_code=response.status_code,
            )
        body = _json(response, what, "the SCALE API")
        jwt = body.get("id_token") if isinstance(body, dict) else None
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        if (
            not isinstance(jwt, str)
            or not jwt
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, (int, float))
        ):
            raise UpstreamError(f"{what} failed: the SCALE API sent an answer ikproxy cannot read")
        return jwt, float(expires_in)

    # -- endpoint requests ----------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """Send one authorised request to the endpoint; its status and JSON body.

        A 401 means the JWT went stale: it is renewed once and the request sent
        again (safe even for the run request, which a 401 did not start).
        """
        url = self._base + path
        jwt = await self.jwt()
        response = await self._endpoint_send(method, url, what, jwt, params, body)
        if response.status_code == 401:
            logger.debug("%s: HTTP 401, renewing the JWT and retrying once", what)
            jwt = await self.jwt(stale=jwt)
            response = await self._endpoint_send(method, url, what, jwt, params, body)
        _raise_for_status(response, what)
        return response.status_code, _json(response, what, "the deployment")

    async def _endpoint_send(
        self, method: str, url: str, what: str, jwt: str, params: Any, body: Any
    ) -> httpx.Response:
        return await self._send(
            method,
            url,
            what,
            "the deployment",
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {jwt}"},
        )

    async def authorised(
        self,
        method: str,
        url: str,
        what: str,
        peer: str,
        *,
        stream: bool = False,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request with the Bearer JWT (to SCALE storage); the response, any status.

        A 401 renews the JWT once and sends the request again (a file body is
        read again from its start), unless `retry` is false (a body that can be
        sent once). With `stream`, the caller closes the response.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        jwt = await self.jwt()
        headers["Authorization"] = f"Bearer {jwt}"
        response = await self._send(
            method, url, what, peer, stream=stream, headers=headers, **kwargs
        )
        if response.status_code == 401 and retry:
            await response.aclose()
            logger.debug("%s: HTTP 401, renewing the JWT and retrying once", what)
            headers["Authorization"] = f"Bearer {await self.jwt(stale=jwt)}"
            response = await self._send(
                method, url, what, peer, stream=stream, headers=headers, **kwargs
            )
        return response

    async def _send(
        self, method: str, url: str, what: str, peer: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        started = time.monotonic()
        try:
            client = self._http()
            request = client.build_request(method, url, **kwargs)
            response = await client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            logger.debug(
                "%s: %s after %.3f s", what, type(exc).__name__, time.monotonic() - started
            )
            raise UpstreamTimeout(
                f"{what} timed out: {peer} did not answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.RequestError as exc:
            logger.debug("%s: %s", what, type(exc).__name__)
            raise UpstreamConnectionError(
                f"{what} failed: the connection to {peer} failed ({type(exc).__name__})"
            ) from exc
        logger.debug(
            "%s %s -> HTTP %d in %.3f s",
            method,
            response.request.url.path,
            response.status_code,
            time.monotonic() - started,
        )
        return response


def _raise_for_status(response: httpx.Response, what: str) -> None:
    """Map an endpoint error status to its exception; 2xx passes."""
    status = response.status_code
    if response.is_success:
        return
    if status == WORKFLOW_FAILED:
        try:
            detail = response.json()
        except ValueError:
            detail = None
        message = detail.get("message") if isinstance(detail, dict) else None
        logger.debug("%s: the workflow failed: %r", what, detail)
        raise WorkflowFailed(
            message if isinstance(message, str) and message else "the workflow failed",
            status_code=status,
        )
    if status in (401, 403):
        raise AuthenticationFailed(
            f"{what} was refused: the deployment rejected the credentials (HTTP {status})",
            status_code=status,
        )
    raise UpstreamHTTPError(
        f"{what} failed: the deployment answered HTTP {status}", status_code=status
    )


def _json(response: httpx.Response, what: str, peer: str) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        if not response.content and response.status_code != 200:
            return None  # an empty "not yet" answer
        raise UpstreamError(f"{what} failed: {peer} sent an answer that is not JSON") from None
