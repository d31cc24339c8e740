"""A browser's file stored in SCALE storage while it arrives: overlapped, bounded, never half-used."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ikproxy import Client, LocalDeployment
from ikproxy.browser import process_readable_stream_sync
from ikproxy.deployments import SupportsStreamingUpload
from ikproxy.policy import Param
from ikproxy.proxy import Proxy, ProxyRequest
from ikproxy.testing import FakeScale

HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
VIDEO = HEAD + os.urandom(12_000_000)
FIRST = 6_000_000  # past the first batch of file bytes: the upload is under way by then
BOUNDARY = "streaming-test-boundary"
TOKEN = "fake-token"


class Watching(httpx.AsyncBaseTransport):
    """A loopback transport that sees the storage uploads' bodies go by."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.flowing = anyio.Event()  # set once a storage upload has sent a megabyte
        self.sent = 0
        self.bodies_completed = 0  # upload bodies sent to their end (their closing boundary)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/objects/":
            request.stream = _Watched(self, request.stream)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Watched(httpx.AsyncByteStream):
    def __init__(self, watching: Watching, stream: Any) -> None:
        self.watching, self.stream = watching, stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.watching.sent += len(chunk)
            if self.watching.sent > 1_000_000:
                self.watching.flowing.set()
            yield chunk
        self.watching.bodies_completed += 1


@pytest.fixture
def fake() -> Iterator[tuple[FakeScale, str]]:
    fake = FakeScale(polls_before_done=1, next_poll_in=5)
    with fake.serve() as url:
        yield fake, url


def _part(name: str, value: str) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    return f"--{BOUNDARY}\r\n{disposition}\r\n\r\n{value}\r\n".encode()


def _body(before: dict[str, str], after: dict[str, str]) -> tuple[bytes, bytes]:
    """The multipart body of the video with fields before and after it: (up to the
    video's first FIRST bytes, the rest)."""
    head = b"".join(_part(k, v) for k, v in before.items())
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="video"; filename="clip.mp4"'
        "\r\nContent-Type: video/mp4\r\n\r\n"
    ).encode()
    tail = (
        b"\r\n" + b"".join(_part(k, v) for k, v in after.items()) + f"--{BOUNDARY}--\r\n".encode()
    )
    return head + VIDEO[:FIRST], VIDEO[FIRST:] + tail


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def _request() -> ProxyRequest:
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    return ProxyRequest("POST", "/run", headers={"content-type": content_type})


async def _run(
    url: str,
    body: Any,
    watching: Watching,
    *,
    max_upload_bytes: int = 50_000_000,
    expire_jwt: FakeScale | None = None,
) -> tuple[int, bytes]:
    async with Client(url, TOKEN, api_url=url, scalefs_url=url, transport=watching) as client:
        if expire_jwt is not None:
            await client.storage.infos()  # a JWT in the cache...
            expire_jwt.expire_jwts()  # ...that storage will refuse
        proxy = Proxy(
            client,
            accept=["video/mp4"],
            max_upload_bytes=max_upload_bytes,
            rate_limit=None,
            parameters={"speed": Param(int)},
        )
        response = await proxy.handle(_request(), body)
        if isinstance(response.body, bytes):
            return response.status, response.body
        return response.status, b"".join([chunk async for chunk in response.body])


def _stored_input(fake: FakeScale) -> bytes:
    (run,) = [r for r in fake.requests if r.kind == "run"]
    (stored,) = run.json["inputs"]
    uid = fake.storage.uid_from_url(stored["storage_object"]["url"])
    assert uid is not None
    return fake.storage.read(uid)


def test_the_scale_client_can_store_uploads_while_they_arrive() -> None:
    assert isinstance(Client("https://x.test", TOKEN), SupportsStreamingUpload)
    assert not isinstance(LocalDeployment(), SupportsStreamingUpload)


def test_the_storage_upload_runs_while_the_body_still_arrives_and_the_run_uses_it(
    fake: tuple[FakeScale, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale, url = fake
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first, rest = _body({}, {})

    async def main() -> tuple[int, bytes]:
        watching = Watching()

        async def body() -> AsyncIterator[bytes]:
            async for chunk in _chunks(first):
                yield chunk
            # The rest comes only once storage receives the first bytes: without
            # the overlap, this waits in vain.
            with anyio.fail_after(10):
                await watching.flowing.wait()
            async for chunk in _chunks(rest):
                yield chunk

        result = await _run(url, body(), watching)
        assert watching.bodies_completed == 1
        return result

    status, content = anyio.run(main)
    assert status == 200, content
    assert b"event: result" in content
    assert scale.count("storage") == 1  # stored once, on the way: the run sends its uid
    assert _stored_input(scale) == VIDEO
    (run,) = [r for r in scale.requests if r.kind == "run"]
    assert run.json["inputs"][0]["storage_object"]["data_type"] == "video"
    assert list(tmp_path.glob("ikproxy-upload-*")) == []


@pytest.mark.parametrize("ending", ["cut", "truncated", "too large", "client left"])
def test_a_body_that_ends_mid_upload_aborts_it_and_starts_no_run(
    ending: str, fake: tuple[FakeScale, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale, url = fake
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first, rest = _body({}, {})

    async def main() -> tuple[int, bytes] | None:
        watching = Watching()

        async def body() -> AsyncIterator[bytes]:
            async for chunk in _chunks(first):
                yield chunk
            with anyio.fail_after(10):
                await watching.flowing.wait()
            if ending == "cut":  # the server could not deliver the rest
                raise OSError("connection reset by peer")
            if ending == "too large":
                yield rest
            # "truncated": the body ends without the rest and its closing boundary;
            # "client left": the server cancels the request (below).
            if ending == "client left":
                await anyio.sleep_forever()

        if ending == "client left":
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_run, url, body(), watching)
                with anyio.fail_after(10):
                    await watching.flowing.wait()
                tasks.cancel_scope.cancel()
            result = None
        else:
            result = await _run(url, body(), watching, max_upload_bytes=len(first) + 1000)
        assert watching.flowing.is_set()  # the upload was under way...
        assert watching.bodies_completed == 0  # ...and never got its closing boundary
        return result

    result = anyio.run(main)
    if ending == "too large":
        assert result is not None
        assert result[0] == 413
    elif ending != "client left":
        assert result is not None
        assert result[0] == 400
    assert scale.storage.objects() == []
    assert scale.count("run") == 0
    assert list(tmp_path.glob("ikproxy-upload-*")) == []


def test_a_refusal_after_the_upload_leaves_a_temporary_object_no_run_uses(
    fake: tuple[FakeScale, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale, url = fake
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first, rest = _body({}, {"speed": "fast"})  # invalid, and only known after the file

    async def main() -> tuple[int, bytes]:
        watching = Watching()
        return await _run(url, _chunks(first + rest), watching)

    status, content = anyio.run(main)
    assert status == 400
    assert b"speed" in content
    assert scale.count("run") == 0
    (left,) = scale.storage.objects()
    assert left.path is None  # a temporary object (the storage API deletes only by path)
    assert list(tmp_path.glob("ikproxy-upload-*")) == []


def test_parameters_invalid_before_the_file_start_no_upload(
    fake: tuple[FakeScale, str],
) -> None:
    scale, url = fake
    first, rest = _body({"speed": "fast"}, {})

    async def main() -> tuple[int, bytes]:
        return await _run(url, _chunks(first + rest), Watching())

    status, _ = anyio.run(main)
    assert status == 400
    assert scale.count("storage") == 0
    assert scale.storage.objects() == []


def test_a_jwt_refused_on_the_way_falls_back_to_the_file_written_alongside(
    fake: tuple[FakeScale, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale, url = fake
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first, rest = _body({}, {})

    async def main() -> tuple[int, bytes]:
        return await _run(url, _chunks(first + rest), Watching(), expire_jwt=scale)

    status, content = anyio.run(main)
    assert status == 200, content
    results = process_readable_stream_sync([content])
    assert results is not None
    assert _stored_input(scale) == VIDEO
    # The streamed upload was refused (401); the run sent the file again, with a new JWT.
    uploads = [r for r in scale.requests if r.kind == "storage" and r.method == "POST"]
    assert len(uploads) == 2
    assert len(scale.storage.objects()) == 1
    assert list(tmp_path.glob("ikproxy-upload-*")) == []
