"""Video and file uploads through the proxy: typed on their bytes, streamed to a file, removed after."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import InvalidParameter, LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.deployments.local import check_cancelled
from ikproxy.io import FileIO, ImageIO
from ikproxy.proxy import Proxy, ProxyRequest
from ikproxy.proxy.uploads import UploadDir, accepts
from tests.support.http import error_of
from tests.support.images import png as _png
from tests.support.servers import free_port, running_server, serving
from tests.support.upload_app import StoredOutputs

VIDEO = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + os.urandom(3_000_000)
PDF = b"%PDF-1.7\n" + os.urandom(5000)
VIDEO_POLICY: dict[str, Any] = {
    "accept": ["image/*", "video/mp4"],
    "max_upload_bytes": 20_000_000,
    "rate_limit": None,
}


class Seen:
    """What the task saw of its input, and a way to hold it."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.content_type: str | None = None
        self.digest: str | None = None
        self.started = threading.Event()
        self.release = threading.Event()

    @property
    def folder(self) -> Path:
        assert self.path is not None
        return self.path.parent


def _video_deployment(seen: Seen, *, hold: bool = False, fail: bool = False) -> LocalDeployment:
    deployment = LocalDeployment()

    def check(video: FileIO, *, reject: bool = False) -> None:
        seen.path = video.path
        if reject:
            raise InvalidParameter("rejected by the task's check")

    def clip(video: FileIO, *, reject: bool = False) -> dict[str, Any]:
        seen.path, seen.content_type = video.path, video.content_type
        seen.digest = hashlib.sha256(video.path.read_bytes()).hexdigest()
        seen.started.set()
        while hold and not seen.release.wait(0.01):
            check_cancelled()  # a closed run stops the task here
        if fail:
            raise RuntimeError("the task failed")
        return {"summary": {"size": video.path.stat().st_size}}

    deployment.add_task(clip, validate=check)
    return deployment


def _client(deployment: LocalDeployment, **options: Any) -> TestClient:
    app = Starlette(routes=[Mount("/api", app=create_app(deployment, **options))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def _gone_soon(path: Path, timeout: float = 5.0) -> bool:
    """Wait (bounded) for cleanup that happens right after the stream's end."""
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- the happy paths -------------------------------------------------------------------


def test_a_video_upload_reaches_a_local_task_as_a_file_with_identical_bytes() -> None:
    seen = Seen()
    with _client(_video_deployment(seen), **VIDEO_POLICY) as client:
        response = client.post(
            "/api/run", files={"video": ("clip.mp4", VIDEO, "application/octet-stream")}
        )
        assert response.status_code == 200, response.text
        results = process_readable_stream_sync([response.content])
    assert seen.digest == hashlib.sha256(VIDEO).hexdigest()
    assert seen.content_type == "video/mp4"
    assert seen.path is not None
    assert seen.path.suffix == ".mp4"
    assert seen.folder.name.startswith("ikproxy-upload-")
    assert results.get_output(0).to_json() == {"summary": {"size": len(VIDEO)}}
    assert _gone_soon(seen.folder)


@pytest.mark.parametrize("surface", ["asgi", "flask"])
def test_two_large_files_arrive_whole_and_in_order(surface: str) -> None:
    second = VIDEO[:32] + os.urandom(9_000_000)  # spans several writes
    deployment = LocalDeployment()
    got: list[bytes] = []

    @deployment.task
    def both(a: Path, b: Path) -> None:
        got.extend([a.read_bytes(), b.read_bytes()])

    policy = {**VIDEO_POLICY, "max_inputs": 2}
    files = [("a", ("a.mp4", VIDEO, "video/mp4")), ("b", ("b.mp4", second, "video/mp4"))]
    if surface == "asgi":
        with _client(deployment, **policy) as client:
            response = client.post("/api/run", files=files)
            status, body = response.status_code, response.content
    else:
        from flask import Flask

        from ikproxy.adapters.flask import blueprint

        app = Flask(__name__)
        app.register_blueprint(blueprint(deployment, url_prefix="/api", **policy))
        data = {name: (io.BytesIO(content), filename) for name, (filename, content, _) in files}
        response = app.test_client().post("/api/run", data=data, content_type="multipart/form-data")
        status, body = response.status_code, response.get_data()
    assert status == 200
    process_readable_stream_sync([body])
    assert got == [VIDEO, second]


def test_a_task_annotated_path_gets_the_files_path() -> None:
    deployment = LocalDeployment()
    got: list[Any] = []

    @deployment.task
    def document(pdf: Path) -> None:
        got.append((type(pdf), pdf.read_bytes() == PDF))

    policy = {"accept": ["application/pdf"], "rate_limit": None}
    with _client(deployment, **policy) as client:
        response = client.post("/api/run", files={"doc": ("a.pdf", PDF, "application/pdf")})
        assert response.status_code == 200, response.text
        process_readable_stream_sync([response.content])
    assert got == [(type(Path()), True)]


def test_images_still_come_inline_and_verified() -> None:
    deployment = LocalDeployment()
    got: list[Any] = []

    @deployment.task
    def look(image: ImageIO) -> None:
        got.append(type(image))

    with _client(deployment, **VIDEO_POLICY) as client:
        response = client.post("/api/run", files={"image": ("a.png", _png(), "image/png")})
        assert response.status_code == 200
        process_readable_stream_sync([response.content])
    assert got == [ImageIO]


def test_a_local_task_that_takes_a_path_refuses_an_image() -> None:
    deployment = LocalDeployment()

    @deployment.task
    def document(pdf: Path) -> None:
        pass

    with _client(deployment, rate_limit=None) as client:
        response = client.post("/api/run", files={"image": ("a.png", _png(), "image/png")})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"


# -- refusals --------------------------------------------------------------------------


def test_by_default_only_images_are_accepted_whatever_the_declared_type() -> None:
    seen = Seen()
    with _client(_video_deployment(seen), rate_limit=None, max_upload_bytes=20_000_000) as client:
        response = client.post("/api/run", files={"video": ("clip.png", VIDEO, "image/png")})
    assert error_of(response) == (
        415,
        "unsupported_media_type",
        "the upload is not a supported image",
    )
    assert seen.path is None


def test_a_type_outside_accept_is_named() -> None:
    seen = Seen()
    with _client(_video_deployment(seen), **VIDEO_POLICY) as client:
        response = client.post("/api/run", files={"doc": ("a.mp4", PDF, "video/mp4")})
    assert error_of(response) == (
        415,
        "unsupported_media_type",
        "uploads of type application/pdf are not accepted",
    )


def test_accepts() -> None:
    assert accepts(["image/*"], "image/png")
    assert not accepts(["image/*"], "video/mp4")
    assert accepts(["video/mp4"], "video/mp4")
    assert not accepts(["video/mp4"], "video/webm")
    assert accepts(["*/*"], "application/octet-stream")


def _multipart(name: str, filename: str, data: bytes) -> tuple[str, bytes, bytes]:
    """(content type, head of the body with the part's first bytes, the closing tail)."""
    boundary = "ikproxy-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode() + data
    return f"multipart/form-data; boundary={boundary}", head, f"\r\n--{boundary}--\r\n".encode()


class Body:
    """An async request body of endless chunks after a head; counts what was read."""

    def __init__(self, head: bytes, chunk: bytes = b"\0" * 65536, count: int = 10_000) -> None:
        self.head, self.chunk, self.count, self.read = head, chunk, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read += len(self.head)
        yield self.head
        for _ in range(self.count):
            self.read += len(self.chunk)
            yield self.chunk


def _handle(proxy: Proxy, content_type: str, body: Body) -> Any:
    request = ProxyRequest("POST", "/run", headers={"content-type": content_type})
    return anyio.run(proxy.handle, request, body)


def test_a_refused_type_stops_reading_at_its_first_bytes(tmp_path: Path) -> None:
    proxy = Proxy(LocalDeployment({"t": lambda f: None}), max_upload_bytes=10**9, rate_limit=None)
    content_type, head, _ = _multipart("video", "clip.mp4", VIDEO[:100])
    body = Body(head)
    response = _handle(proxy, content_type, body)
    assert response.status == 415
    assert body.read == len(head)  # nothing after the part's first bytes was read


def test_413_at_the_first_chunk_over_the_limit_and_the_partial_file_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    limit = 1_000_000
    proxy = Proxy(
        LocalDeployment({"t": lambda f: None}),
        accept=["video/mp4"],
        max_upload_bytes=limit,
        rate_limit=None,
    )
    content_type, head, _ = _multipart("video", "clip.mp4", VIDEO[:100])
    body = Body(head)
    response = _handle(proxy, content_type, body)
    assert response.status == 413
    assert json.loads(response.body)["error"] == {
        "code": "payload_too_large",
        "message": f"request body exceeds {limit} bytes",
        "request_id": response.headers["X-Request-ID"],
    }
    assert limit < body.read <= limit + len(body.chunk)
    assert list(tmp_path.iterdir()) == []  # the partial file and its folder are gone


def test_a_second_file_over_max_inputs_is_refused_and_the_first_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    seen = Seen()
    with _client(_video_deployment(seen), **VIDEO_POLICY) as client:
        response = client.post(
            "/api/run",
            files=[("a", ("a.mp4", VIDEO, "video/mp4")), ("b", ("b.mp4", VIDEO, "video/mp4"))],
        )
    assert error_of(response) == (400, "invalid_input", "too many images: at most 1 per request")
    assert list(tmp_path.iterdir()) == []


# -- the temporary files are removed in every ending ----------------------------------


def test_removed_after_a_failed_run() -> None:
    seen = Seen()
    with _client(_video_deployment(seen, fail=True), **VIDEO_POLICY) as client:
        response = client.post("/api/run", files={"v": ("v.mp4", VIDEO, "video/mp4")})
    assert response.status_code == 200
    assert b"event: error" in response.content
    assert _gone_soon(seen.folder)


def test_removed_after_a_refusal_before_the_200() -> None:
    seen = Seen()
    with _client(_video_deployment(seen), **VIDEO_POLICY, parameters={"reject": bool}) as client:
        response = client.post(
            "/api/run", files={"v": ("v.mp4", VIDEO, "video/mp4")}, data={"reject": "true"}
        )
    assert error_of(response)[:2] == (400, "invalid_parameter")
    assert seen.path is not None  # the task's check saw the file...
    assert not seen.folder.exists()  # ...which was removed before the answer


def test_removed_when_the_client_disconnects() -> None:
    seen = Seen()
    app = Starlette(
        routes=[Mount("/api", app=create_app(_video_deployment(seen, hold=True), **VIDEO_POLICY))]
    )
    with serving(app) as client:  # a real server: the TestClient of Python 3.10 cannot stream
        try:
            with client.stream(
                "POST", "/api/run", files={"v": ("v.mp4", VIDEO, "video/mp4")}
            ) as response:
                assert response.status_code == 200
                chunks, head = response.iter_raw(), b""
                while b'"STARTED"' not in head:
                    head += next(chunks)
                assert seen.started.wait(5)  # the task is running
                assert seen.folder.exists()
            # The client left while the task still held the file (never released).
            assert _gone_soon(seen.folder)
        finally:
            seen.release.set()


def test_removed_when_the_server_shuts_down(tmp_path: Path) -> None:
    port = free_port()
    args = [
        "-m", "uvicorn", "tests.support.upload_app:create", "--factory", "--port", str(port),
        "--host", "127.0.0.1", "--timeout-graceful-shutdown", "1",
    ]  # fmt: skip
    with (
        running_server(args, ready="Uvicorn running", env={"TMPDIR": str(tmp_path)}) as server,
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            f"http://127.0.0.1:{port}/api/run",
            files={"v": ("v.mp4", VIDEO, "video/mp4")},
        ) as response,
    ):
        assert response.status_code == 200
        folders = _wait_for(lambda: list(tmp_path.glob("ikproxy-upload-*")))
        assert len(folders) == 1
        assert (folders[0] / "input-1.mp4").read_bytes() == VIDEO
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    assert list(tmp_path.glob("ikproxy-upload-*")) == []


def _wait_for(probe: Callable[[], list[Path]], timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while not (found := probe()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_upload_dir_close_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    uploads = UploadDir()
    uploads.new_file(".mp4").write_bytes(b"x")
    uploads.close()
    uploads.close()
    assert list(tmp_path.iterdir()) == []


# -- a WSGI surface: Flask ---------------------------------------------------------------


def test_a_video_upload_through_flask() -> None:
    from flask import Flask

    from ikproxy.adapters.flask import blueprint

    seen = Seen()
    app = Flask(__name__)
    app.register_blueprint(blueprint(_video_deployment(seen), url_prefix="/api", **VIDEO_POLICY))
    client = app.test_client()
    response = client.post(
        "/api/run",
        data={"v": (io.BytesIO(VIDEO), "clip.mp4", "video/mp4")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    results = process_readable_stream_sync([response.get_data()])
    assert seen.digest == hashlib.sha256(VIDEO).hexdigest()
    assert results.get_output(0).to_json() == {"summary": {"size": len(VIDEO)}}
    assert _gone_soon(seen.folder)


def iter_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


# -- through a real SCALE client, to the fake SCALE served on loopback ----------------------


@pytest.fixture
def scale() -> Iterator[tuple[Any, str]]:
    from ikproxy.testing import FakeScale

    fake = FakeScale(polls_before_done=1, next_poll_in=5)
    with fake.serve() as url:
        yield fake, url


def _scale_proxy(url: str, **options: Any) -> TestClient:
    from ikproxy import Client

    client = Client(url, "fake-token", api_url=url, scalefs_url=url)
    options = {**VIDEO_POLICY, "inline_output_limit": 1000, **options}
    app = Starlette(routes=[Mount("/api", app=create_app(StoredOutputs(client), **options))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def test_a_video_upload_reaches_scale_storage_with_identical_bytes_and_comes_back_by_reference(
    scale: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = scale
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with _scale_proxy(url) as client:
        response = client.post("/api/run", files={"v": ("clip.mp4", VIDEO, "video/mp4")})
        assert response.status_code == 200, response.text
        results = process_readable_stream_sync([response.content])
        # The run got a storage_object input, whose stored bytes are the upload's.
        (run,) = [r for r in fake.requests if r.kind == "run"]
        (stored_input,) = run.json["inputs"]
        uid = fake.storage.uid_from_url(stored_input["storage_object"]["url"])
        assert stored_input["storage_object"]["data_type"] in {"video", "image"}
        assert fake.storage.read(uid) == VIDEO
        # The stored output (a copy of the input) reaches the browser by reference.
        ref = results.get_output(0).to_json()["ref"]
        assert (ref["kind"], ref["content_type"], ref["size"]) == (
            "storage_object",
            "video/mp4",
            len(VIDEO),
        )
        whole = client.get("/api/" + ref["url"])
        assert whole.status_code == 200
        assert whole.content == VIDEO
        assert whole.headers["content-length"] == str(len(VIDEO))
        part = client.get("/api/" + ref["url"], headers={"Range": "bytes=1000-1999999"})
        assert part.status_code == 206
        assert part.content == VIDEO[1000:2_000_000]
        assert part.headers["content-range"] == f"bytes 1000-1999999/{len(VIDEO)}"
        assert "fake-token" not in response.text
        assert "authorization" not in {k.lower() for k in whole.headers}
    assert list(tmp_path.glob("ikproxy-upload-*")) == []


def test_presigned_outputs_hand_out_the_storages_url(scale: tuple[Any, str]) -> None:
    _, url = scale
    with _scale_proxy(url, presigned_outputs=True) as client:
        response = client.post("/api/run", files={"v": ("clip.mp4", VIDEO, "video/mp4")})
        results = process_readable_stream_sync([response.content])
    ref = results.get_output(0).to_json()["ref"]
    assert ref["url"].startswith(url)
    with httpx.Client() as http:  # no credentials at all
        assert http.get(ref["url"]).content == VIDEO
