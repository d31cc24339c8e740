"""Inputs given as URLs: only from allowed origins, never from private addresses, redirects checked."""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.fetch import is_public_address
from ikproxy.io import BaseIO, FileIO, ImageIO
from tests.support.http import error_of
from tests.support.images import png

VIDEO = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(range(256)) * 400


PNG = png(5, 3, "blue")


class _Files(BaseHTTPRequestHandler):
    """/a.png, /clip.mp4, and /redirect?to=<url> (302)."""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {"/a.png": PNG, "/clip.mp4": VIDEO}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Seen:
    def __init__(self) -> None:
        self.inputs: list[BaseIO] = []
        self.digests: list[str] = []
        self.folders: list[Path] = []


def _client(seen: Seen, **options: Any) -> TestClient:
    deployment = LocalDeployment()

    @deployment.task
    def take(item: BaseIO) -> None:
        seen.inputs.append(item)
        if isinstance(item, FileIO):
            seen.digests.append(hashlib.sha256(item.path.read_bytes()).hexdigest())
            seen.folders.append(item.path.parent)
        elif isinstance(item, ImageIO):
            seen.digests.append(hashlib.sha256(item.to_bytes()).hexdigest())

    options.setdefault("rate_limit", None)
    app = Starlette(routes=[Mount("/api", app=create_app(deployment, **options))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def _run(client: TestClient, **request: Any) -> Any:
    response = client.post("/api/run", **request)
    assert response.status_code == 200, response.text
    return process_readable_stream_sync([response.content])


# -- allowed ------------------------------------------------------------------------------


def test_an_image_url_from_an_allowed_origin_is_fetched_and_sent_inline(origin: str) -> None:
    seen = Seen()
    with _client(seen, allow_input_urls=[origin], allow_private_input_urls=True) as client:
        _run(client, json={"image": f"{origin}/a.png"})
    assert [type(i) for i in seen.inputs] == [ImageIO]
    assert seen.digests == [hashlib.sha256(PNG).hexdigest()]


def test_a_video_url_becomes_a_file_with_identical_bytes_removed_after(origin: str) -> None:
    seen = Seen()
    options = {"allow_input_urls": [origin], "allow_private_input_urls": True}
    with _client(seen, accept=["image/*", "video/mp4"], **options) as client:
        _run(client, data={"image_url": f"{origin}/clip.mp4"})
    (video,) = seen.inputs
    assert isinstance(video, FileIO)
    assert video.content_type == "video/mp4"
    assert seen.digests == [hashlib.sha256(VIDEO).hexdigest()]
    assert not seen.folders[0].exists()


def test_the_image_url_field_works_in_a_query_string_too(origin: str) -> None:
    seen = Seen()
    with _client(seen, allow_input_urls=[origin], allow_private_input_urls=True) as client:
        response = client.get("/api/run", params={"image_url": f"{origin}/a.png"})
        assert response.status_code == 200
    assert [type(i) for i in seen.inputs] == [ImageIO]


# -- refused ------------------------------------------------------------------------------


def test_input_urls_are_off_by_default() -> None:
    seen = Seen()
    with _client(seen) as client:
        response = client.post("/api/run", json={"image": "https://images.example.com/a.png"})
    assert error_of(response) == (400, "input_url_not_allowed", "input URLs are not accepted here")
    assert seen.inputs == []


def test_an_origin_outside_the_list_is_refused_before_any_fetch() -> None:
    with _client(Seen(), allow_input_urls=["https://images.example.com"]) as client:
        response = client.post("/api/run", data={"image_url": "https://evil.example/a.png"})
    assert error_of(response) == (
        400,
        "input_url_not_allowed",
        "https://evil.example is not an allowed origin for input URLs",
    )


def test_a_loopback_url_is_refused_even_from_an_allowed_origin(origin: str) -> None:
    seen = Seen()
    with _client(seen, allow_input_urls=[origin]) as client:  # private addresses not allowed
        response = client.post("/api/run", json={"image": f"{origin}/a.png?secret=1"})
    assert error_of(response) == (
        400,
        "input_url_refused",
        f"{origin}/a.png resolves to a non-public address; it is not fetched",
    )
    assert seen.inputs == []


def test_a_redirect_to_another_origin_is_refused(origin: str) -> None:
    port = origin.rsplit(":", 1)[1]
    elsewhere = f"http://localhost:{port}"  # the same server under a name not allowed
    seen = Seen()
    with _client(seen, allow_input_urls=[origin], allow_private_input_urls=True) as client:
        response = client.post(
            "/api/run", json={"image": f"{origin}/redirect?to={elsewhere}/a.png"}
        )
    assert error_of(response) == (
        400,
        "input_url_not_allowed",
        f"{elsewhere} is not an allowed origin for inputs",
    )
    assert seen.inputs == []


def test_a_fetched_type_outside_accept_is_refused(origin: str) -> None:
    with _client(Seen(), allow_input_urls=[origin], allow_private_input_urls=True) as client:
        response = client.post("/api/run", json={"image": f"{origin}/clip.mp4"})
    assert error_of(response) == (
        415,
        "unsupported_media_type",
        "the upload is not a supported image",
    )


def test_a_fetch_over_the_upload_limit_is_413(origin: str) -> None:
    options = {"allow_input_urls": [origin], "allow_private_input_urls": True}
    with _client(Seen(), accept=["video/mp4"], max_upload_bytes=1000, **options) as client:
        response = client.post("/api/run", json={"image": f"{origin}/clip.mp4"})
    assert error_of(response)[:2] == (413, "payload_too_large")


def test_a_missing_file_is_a_400(origin: str) -> None:
    with _client(Seen(), allow_input_urls=[origin], allow_private_input_urls=True) as client:
        response = client.post("/api/run", json={"image": f"{origin}/nothing.png"})
    assert error_of(response) == (
        400,
        "input_url_failed",
        f"{origin}/nothing.png was not found (HTTP 404)",
    )


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
