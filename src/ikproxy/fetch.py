"""A safe HTTP(S) fetcher for URL inputs: size limit, total timeout, checked redirects, no SSRF.

The SCALE client uses it for the URLs an application passes as inputs, and the
proxy for input URLs given by a browser (with `allow_private=False` and,
ideally, `allowed_origins`).

Against DNS rebinding, when private addresses are refused each hop's host is
resolved once, every address is checked, and the connection goes to the
checked address itself: the request URL carries the IP, the `Host` header and
the TLS server name (SNI, also used to verify the certificate) carry the
name. This works with any `httpx.AsyncClient` and needs no custom transport;
a client of our own then ignores proxy settings from the environment, since a
proxy would resolve (and reach) whatever it is asked to.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final
from urllib.parse import unquote

import anyio
import httpx

from ikproxy.decimals import parse_decimal
from ikproxy.errors import (
    FetchHTTPError,
    FetchNotFound,
    FetchOriginNotAllowed,
    FetchRefusedAddress,
    FetchTimeout,
    FetchTooLarge,
    FetchTooManyRedirects,
    FetchUnsupportedScheme,
)
from ikproxy.io import SNIFF_BYTES, sniff_content_type
from ikproxy.redaction import redact_url

__all__ = ["Fetched", "fetch_url", "is_public_address", "origin_of", "redact_url"]

_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Fetched:
    """A fetched body: in memory (`data`) or, when a destination was given, in a file (`path`)."""

    #: The final URL, after redirects.
    url: str
    #: Number of body bytes.
    size: int
    #: The MIME type read from the body's first bytes (magic numbers), or None.
    content_type: str | None
    #: The `Content-Type` the server declared (parameters stripped), or None.
    declared_content_type: str | None
    #: The last segment of the final URL's path, for display (may be empty).
    filename: str
    data: bytes | None = None
    path: Path | None = None

    def read_bytes(self) -> bytes:
        """The body, from memory or from its file."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


def origin_of(url: str | httpx.URL) -> str:
    """`scheme://host[:port]` of a URL, lower-cased, default port left out."""
    parsed = httpx.URL(str(url)) if isinstance(url, str) else url
    host = parsed.host
    if ":" in host:
        host = f"[{host}]"
    scheme = parsed.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    port = f":{parsed.port}" if parsed.port not in {None, default} else ""
    return f"{scheme}://{host.lower()}{port}"


#: Addresses that are not public, whatever the Python version's `ipaddress` says: the
#: IANA IPv4 and IPv6 Special-Purpose Address Registries' entries that are not globally
#: reachable, the deprecated ranges (site-local, the 6to4 relay anycast), and the
#: documentation, benchmarking and reserved ones. (`is_global` differs between
#: Python 3.10 and 3.13, and misses `fec0::/10`, `192.88.99.0/24` and `3fff::/20`.)
NON_PUBLIC_V4: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # this network
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.8 included)
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast 255.255.255.255
    )
)
#: IPv6: only global unicast (`2000::/3`) is public, less these; addresses that embed
#: an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by that address.
NON_PUBLIC_V6: Final = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments (Teredo's embedded address is judged too)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing (SRv6) SIDs
    )
)
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(ip: IPAddress) -> bool:
    """Whether an address is public (globally routable): outside every range of
    `NON_PUBLIC_V4` and, for IPv6, inside `2000::/3` and outside `NON_PUBLIC_V6`. The same
    answer on every Python version."""
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in network for network in NON_PUBLIC_V4)
    if ip.ipv4_mapped is not None:
        return is_public_address(ip.ipv4_mapped)
    if ip in _NAT64:
        return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
    if embedded is not None and not is_public_address(embedded):
        return False
    return ip in _GLOBAL_UNICAST and not any(ip in network for network in NON_PUBLIC_V6)


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int = 5,
    allow_private: bool = False,
    allowed_origins: Collection[str] | None = None,
    client: httpx.AsyncClient | None = None,
    dest: str | os.PathLike[str] | None = None,
) -> Fetched:
    """GET an http(s) URL, streamed, within `max_bytes` and `timeout` seconds (all hops).

    Redirects are followed by hand, at most `max_redirects`, each hop checked
    like the first: http or https only; with `allow_private` false, every
    address the host resolves to must be public (see the module docstring);
    with `allowed_origins`, the hop's origin (`scheme://host[:port]`) must be
    one of them. `dest`, a directory or a file path, keeps the body out of
    memory: a directory gets a new temporary file, removed again on error.
    Raises a `FetchError` subclass; its message never shows a query string.
    """
    origins = None if allowed_origins is None else {origin_of(o) for o in allowed_origins}
    own_client = client is None
    http = client or httpx.AsyncClient(trust_env=allow_private)
    try:
        with anyio.move_on_after(timeout) as scope:
            return await _fetch(
                url, http, max_bytes, timeout, max_redirects, allow_private, origins, dest
            )
        assert scope.cancelled_caught
        raise FetchTimeout(
            f"fetching {redact_url(url)} took longer than {timeout:g} s", url=redact_url(url)
        )
    finally:
        if own_client:
            await http.aclose()


async def _fetch(
    url: str,
    http: httpx.AsyncClient,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    allow_private: bool,
    origins: set[str] | None,
    dest: str | os.PathLike[str] | None,
) -> Fetched:
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise FetchUnsupportedScheme("not a valid URL") from None
    redirects = 0
    while True:
        shown = redact_url(current)
        if current.scheme not in {"http", "https"} or not current.host:
            raise FetchUnsupportedScheme(
                f"only http and https URLs can be fetched, not {current.scheme or 'no'} scheme",
                url=shown,
            )
        if origins is not None and origin_of(current) not in origins:
            raise FetchOriginNotAllowed(
                f"{origin_of(current)} is not an allowed origin for inputs", url=shown
            )
        request = await _build_request(http, current, allow_private, timeout)
        try:
            response = await http.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise FetchTimeout(f"fetching {shown} timed out", url=shown) from None
        except httpx.HTTPError as exc:
            raise FetchHTTPError(f"cannot fetch {shown}: {type(exc).__name__}", url=shown) from None
        try:
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                if redirects >= max_redirects:
                    raise FetchTooManyRedirects(
                        f"{redact_url(url)} redirected more than {max_redirects} times", url=shown
                    )
                redirects += 1
                try:
                    current = current.join(location)
                except httpx.InvalidURL:
                    raise FetchHTTPError(
                        f"{shown} redirected to an invalid URL", url=shown
                    ) from None
                continue
            _check_status(response, shown)
            return await _read_body(response, current, max_bytes, dest, shown)
        finally:
            await response.aclose()


async def _build_request(
    http: httpx.AsyncClient, url: httpx.URL, allow_private: bool, timeout: float
) -> httpx.Request:
    if allow_private:
        return http.build_request("GET", url, timeout=timeout)
    address = await _resolve_public(url)
    pinned = url.copy_with(host=str(address))
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    request = http.build_request("GET", pinned, headers=headers, timeout=timeout)
    request.extensions.update(extensions)
    return request


async def _resolve_public(url: httpx.URL) -> IPAddress:
    """Resolve the URL's host; every address must be public. Returns the first one."""
    shown = redact_url(url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await anyio.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise FetchHTTPError(f"cannot resolve the host of {shown}", url=shown) from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise FetchHTTPError(f"cannot resolve the host of {shown}", url=shown)
    for address in addresses:
        if not is_public_address(address):
            raise FetchRefusedAddress(
                f"{shown} resolves to a non-public address; it is not fetched", url=shown
            )
    return addresses[0]


def _check_status(response: httpx.Response, shown: str) -> None:
    status = response.status_code
    if status in {404, 410}:
        raise FetchNotFound(f"{shown} was not found (HTTP {status})", url=shown)
    if not 200 <= status < 300:
        raise FetchHTTPError(f"{shown} answered HTTP {status}", url=shown, status_code=status)


async def _read_body(
    response: httpx.Response,
    url: httpx.URL,
    max_bytes: int,
    dest: str | os.PathLike[str] | None,
    shown: str,
) -> Fetched:
    declared_length = response.headers.get("content-length")
    if (
        declared_length is not None
        and (parse_decimal(declared_length, max_digits=30) or 0) > max_bytes
    ):
        raise FetchTooLarge(
            f"{shown} is {declared_length} bytes, over the limit of {max_bytes}", url=shown
        )
    declared = response.headers.get("content-type")
    declared = declared.split(";", 1)[0].strip().lower() or None if declared else None
    filename = unquote(url.path.rsplit("/", 1)[-1])

    path: Path | None = None
    file: IO[bytes] | None = None
    chunks: list[bytes] = []
    if dest is not None:
        path, file = _open_dest(dest)
    head = b""
    size = 0
    try:
        try:
            # Decoded bytes are counted, so a compressed body cannot inflate past the limit.
            async for chunk in response.aiter_bytes(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchTooLarge(
                        f"{shown} is larger than the limit of {max_bytes} bytes", url=shown
                    )
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                if file is not None:
                    await anyio.to_thread.run_sync(file.write, chunk)
                else:
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise FetchTimeout(f"fetching {shown} timed out", url=shown) from None
        except httpx.HTTPError as exc:
            raise FetchHTTPError(
                f"reading {shown} failed: {type(exc).__name__}", url=shown
            ) from None
    except BaseException:
        if file is not None:
            file.close()
            assert path is not None
            path.unlink(missing_ok=True)
        raise
    if file is not None:
        file.close()
    return Fetched(
        url=str(url),
        size=size,
        content_type=sniff_content_type(head),
        declared_content_type=declared,
        filename=filename,
        data=b"".join(chunks) if file is None else None,
        path=path,
    )


def _open_dest(dest: str | os.PathLike[str]) -> tuple[Path, IO[bytes]]:
    target = Path(dest)
    if target.is_dir():
        fd, name = tempfile.mkstemp(prefix="ikproxy-fetch-", dir=target)
        return Path(name), os.fdopen(fd, "wb")
    return target, target.open("wb")
