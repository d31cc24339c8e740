"""fetch_url against a real HTTP server on loopback: limits, redirects, SSRF refusal, errors."""

from __future__ import annotations

import gzip
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ikproxy.errors import (
    FetchError,
    FetchHTTPError,
    FetchNotFound,
    FetchOriginNotAllowed,
    FetchRefusedAddress,
    FetchTimeout,
    FetchTooLarge,
    FetchTooManyRedirects,
    FetchUnsupportedScheme,
    IkproxyError,
)
from ikproxy.fetch import fetch_url, is_public_address, origin_of, redact_url
from ikproxy.io import sniff_content_type
from ikproxy.testing import TINY_PNG

pytestmark = pytest.mark.anyio

PNG = TINY_PNG
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 100
BIG = b"x" * 300_000


class _Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/image.png":
            self._send(200, PNG, {"Content-Type": "text/plain"})
        elif path == "/video.mp4":
            self._send(200, MP4, {"Content-Type": "video/mp4"})
        elif path == "/big":
            self._send(200, BIG)
        elif path == "/big-chunked":
            # No Content-Length: the limit must hold while reading.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(30):
                chunk = b"y" * 10_000
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/lying-length":
            self._send(200, b"", {"Content-Length": "999999999"})
        elif path == "/gzip":
            body = gzip.compress(b"z" * 500_000)
            self._send(200, body, {"Content-Encoding": "gzip"})
        elif path == "/gone":
            self._send(410, b"gone")
        elif path == "/boom":
            self._send(503, b"busy")
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            target = "/image.png" if left == 0 else f"/hop/{left - 1}"
            self._send(302, b"", {"Location": target})
        elif path == "/to-file-scheme":
            self._send(302, b"", {"Location": "file:///etc/passwd"})
        elif path == "/to-other":
            self._send(307, b"", {"Location": self.headers["X-Other"]})
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"12345")
            self.wfile.flush()
            self.release.wait(10)
        elif path == "/host":
            self._send(200, self.headers["Host"].encode())
        else:
            self._send(404, b"nope")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


async def test_fetches_into_memory_and_sniffs_the_bytes(server: str) -> None:
    fetched = await fetch_url(
        f"{server}/image.png?sig=secret", max_bytes=10_000, timeout=5, allow_private=True
    )
    assert fetched.data == PNG
    assert fetched.size == len(PNG)
    assert fetched.content_type == "image/png"
    assert fetched.declared_content_type == "text/plain"
    assert fetched.filename == "image.png"
    assert fetched.path is None


async def test_fetches_into_a_file_in_a_directory(server: str, tmp_path: Path) -> None:
    fetched = await fetch_url(
        f"{server}/video.mp4", max_bytes=10_000, timeout=5, allow_private=True, dest=tmp_path
    )
    assert fetched.data is None
    assert fetched.path is not None
    assert fetched.path.parent == tmp_path
    assert fetched.path.read_bytes() == MP4
    assert fetched.read_bytes() == MP4
    assert fetched.content_type == "video/mp4"


async def test_fetches_into_a_given_file(server: str, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    fetched = await fetch_url(
        f"{server}/big", max_bytes=len(BIG), timeout=5, allow_private=True, dest=target
    )
    assert fetched.path == target
    assert target.read_bytes() == BIG


async def test_declared_length_over_the_limit_is_refused_before_reading(server: str) -> None:
    with pytest.raises(FetchTooLarge, match=r"999999999 bytes, over the limit of 1000") as info:
        await fetch_url(f"{server}/lying-length", max_bytes=1000, timeout=5, allow_private=True)
    assert info.value.reason == "too_large"
    assert info.value.code == "payload_too_large"


async def test_limit_holds_while_reading_a_chunked_body(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchTooLarge, match="larger than the limit of 100000 bytes"):
        await fetch_url(
            f"{server}/big-chunked", max_bytes=100_000, timeout=5, allow_private=True, dest=tmp_path
        )
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - the partial file is removed


async def test_limit_counts_decoded_bytes_of_a_compressed_body(server: str) -> None:
    with pytest.raises(FetchTooLarge):
        await fetch_url(f"{server}/gzip", max_bytes=100_000, timeout=5, allow_private=True)
    fetched = await fetch_url(f"{server}/gzip", max_bytes=500_000, timeout=5, allow_private=True)
    assert fetched.data == b"z" * 500_000


async def test_not_found_and_gone(server: str) -> None:
    with pytest.raises(FetchNotFound, match=r"/missing was not found \(HTTP 404\)") as info:
        await fetch_url(f"{server}/missing?token=abc", max_bytes=100, timeout=5, allow_private=True)
    assert "abc" not in str(info.value)
    assert info.value.reason == "not_found"
    with pytest.raises(FetchNotFound, match="HTTP 410"):
        await fetch_url(f"{server}/gone", max_bytes=100, timeout=5, allow_private=True)


async def test_upstream_http_error(server: str) -> None:
    with pytest.raises(FetchHTTPError, match=r"/boom answered HTTP 503") as info:
        await fetch_url(f"{server}/boom", max_bytes=100, timeout=5, allow_private=True)
    assert info.value.status_code == 503
    assert isinstance(info.value, IkproxyError)


async def test_connection_refused_is_an_http_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchHTTPError, match="cannot fetch"):
        await fetch_url(f"http://127.0.0.1:{port}/x", max_bytes=100, timeout=5, allow_private=True)


async def test_redirects_are_followed_up_to_the_limit(server: str) -> None:
    fetched = await fetch_url(
        f"{server}/hop/2", max_bytes=10_000, timeout=5, allow_private=True, max_redirects=3
    )
    assert fetched.data == PNG
    assert fetched.url == f"{server}/image.png"
    with pytest.raises(FetchTooManyRedirects, match="more than 2 times"):
        await fetch_url(
            f"{server}/hop/2", max_bytes=10_000, timeout=5, allow_private=True, max_redirects=2
        )
    with pytest.raises(FetchTooManyRedirects):
        await fetch_url(
            f"{server}/hop/0", max_bytes=10_000, timeout=5, allow_private=True, max_redirects=0
        )


async def test_a_redirect_to_another_scheme_is_refused(server: str) -> None:
    with pytest.raises(FetchUnsupportedScheme, match="not file scheme"):
        await fetch_url(f"{server}/to-file-scheme", max_bytes=100, timeout=5, allow_private=True)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "/relative"]
)
async def test_unsupported_schemes(url: str) -> None:
    with pytest.raises(FetchUnsupportedScheme) as info:
        await fetch_url(url, max_bytes=100, timeout=5, allow_private=True)
    assert info.value.reason == "unsupported_scheme"


async def test_total_timeout_covers_a_slow_body(server: str) -> None:
    with pytest.raises(FetchTimeout, match=r"took longer than 0\.3 s") as info:
        await fetch_url(f"{server}/slow", max_bytes=100, timeout=0.3, allow_private=True)
    assert isinstance(info.value, TimeoutError)
    assert info.value.reason == "timeout"


async def test_loopback_is_refused_unless_allowed(server: str) -> None:
    with pytest.raises(FetchRefusedAddress, match="non-public address") as info:
        await fetch_url(f"{server}/image.png", max_bytes=10_000, timeout=5)
    assert info.value.reason == "refused_address"


async def test_localhost_by_name_is_refused() -> None:
    with pytest.raises(FetchRefusedAddress):
        await fetch_url("http://localhost:9/x", max_bytes=100, timeout=5)


async def test_a_redirect_to_a_private_address_is_refused(server: str) -> None:
    """A public first hop (served by a mock transport) redirecting to loopback is refused."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": f"{server}/image.png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(FetchRefusedAddress):
            await fetch_url("http://93.184.215.14/start", max_bytes=100, timeout=5, client=client)


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        fetched = await fetch_url(
            "https://93.184.215.14:8443/a.png?x=1", max_bytes=10_000, timeout=5, client=client
        )
    assert fetched.data == PNG
    (request,) = seen
    assert request.url.host == "93.184.215.14"
    assert request.headers["host"] == "93.184.215.14:8443"
    assert request.extensions["sni_hostname"] == "93.184.215.14"


async def test_allowed_origins_are_checked_on_every_hop(server: str) -> None:
    fetched = await fetch_url(
        f"{server}/hop/1",
        max_bytes=10_000,
        timeout=5,
        allow_private=True,
        allowed_origins=[server + "/"],
    )
    assert fetched.data == PNG
    with pytest.raises(FetchOriginNotAllowed, match="is not an allowed origin"):
        await fetch_url(
            f"{server}/image.png",
            max_bytes=10_000,
            timeout=5,
            allow_private=True,
            allowed_origins=["https://cdn.example"],
        )
    other = server.replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(headers={"X-Other": f"{other}/image.png"}) as client:
        with pytest.raises(FetchOriginNotAllowed) as info:
            await fetch_url(
                f"{server}/to-other",
                max_bytes=10_000,
                timeout=5,
                allow_private=True,
                allowed_origins=[server],
                client=client,
            )
    assert info.value.url == f"{other}/image.png"


async def test_every_error_is_a_fetch_error() -> None:
    for cls in (
        FetchNotFound,
        FetchTooLarge,
        FetchTimeout,
        FetchRefusedAddress,
        FetchOriginNotAllowed,
        FetchUnsupportedScheme,
        FetchTooManyRedirects,
        FetchHTTPError,
    ):
        assert issubclass(cls, FetchError)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:0a00:0001::1", False),
        # The explicit rule, the same on Python 3.10 to 3.13 (issue 17):
        ("fec0::1", False),  # site-local (deprecated)
        ("192.88.99.1", False),  # 6to4 relay anycast (deprecated)
        ("3fff::1", False),  # documentation (RFC 9637)
        ("192.0.0.8", False),  # IPv4 dummy address
        ("192.0.0.9", False),
        ("192.0.0.170", False),  # NAT64 discovery
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("198.51.100.7", False),
        ("203.0.113.9", False),
        ("255.255.255.255", False),
        ("2001:db8::1", False),
        ("2001:2::1", False),  # benchmarking (in 2001::/23)
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("5f00::1", False),  # SRv6
        ("100::1", False),  # discard-only
        ("64:ff9b:1::1", False),  # local-use NAT64
        ("::ffff:0:0:1", False),
        ("::0.0.0.1", False),  # IPv4-compatible (deprecated)
        ("4000::1", False),  # outside 2000::/3: not allocated
        ("fd00::1", False),
        ("ff0e::1", False),
        ("::ffff:93.184.215.14", True),  # mapped, a public IPv4 address
        ("64:ff9b::5db8:d70e", True),  # NAT64 of 93.184.215.14
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:5db8:d70e::1", True),  # 6to4 of 93.184.215.14
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2001:4860:4860::8888", True),
        ("2a00:1450:4007:80e::200e", True),
        ("192.31.196.1", True),  # AS112, globally reachable
        ("100.128.0.1", True),  # just past 100.64.0.0/10
        ("172.32.0.1", True),  # just past 172.16.0.0/12
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_origins_and_redaction() -> None:
    assert origin_of("HTTPS://Example.COM:443/a") == "https://example.com"
    assert origin_of("http://[::1]:80/") == "http://[::1]"
    assert origin_of("http://h:8080/x") == "http://h:8080"
    assert (
        redact_url("https://user:pw@h.example/p/x.jpg?X-Amz-Signature=s#f")
        == "https://h.example/p/x.jpg"
    )


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (PNG, "image/png"),
        (MP4, "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/quicktime"),
        (
            b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2\x81\x04B\xf3\x81\x08B\x82\x84webm",
            "video/webm",
        ),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\x82\x88matroska", "video/x-matroska"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video/x-msvideo"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"PK\x03\x04\x14\x00", "application/zip"),
        (b"%PDF-1.7", "application/pdf"),
        (b"hello", None),
    ],
)
def test_sniffing(head: bytes, mime: str | None) -> None:
    assert sniff_content_type(head) == mime


async def test_an_invalid_url() -> None:
    with pytest.raises(FetchUnsupportedScheme, match=r"^not a valid URL$"):
        await fetch_url("http://host:notaport/secret", max_bytes=10, timeout=5)
