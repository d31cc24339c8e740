"""`Client.storage` and `SyncClient.storage` against the fake SCALE storage served on loopback."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from ikproxy import (
    AuthenticationFailed,
    Client,
    FileIO,
    StorageError,
    StorageObjectExists,
    StorageObjectIO,
    StorageObjectNotFound,
    SyncClient,
    UpstreamError,
)
from ikproxy.deployments.scale.storage import StorageInfos, StorageObject
from ikproxy.testing import FakeScale

pytestmark = pytest.mark.anyio

TOKEN = "fake-token"
VIDEO = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 400


@pytest.fixture
def fake() -> FakeScale:
    return FakeScale(polls_before_done=0, storage_page_size=2)


@pytest.fixture
def url(fake: FakeScale) -> Iterator[str]:
    with fake.serve() as served:
        yield served


@pytest.fixture
async def client(url: str) -> AsyncIterator[Client]:
    async with Client(url, TOKEN, api_url=url, scalefs_url=url) as client:
        yield client


async def test_put_bytes_text_and_file_then_get(
    client: Client, fake: FakeScale, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    from_file = await client.storage.put(video, "videos/clip.mp4")
    assert from_file.path == "videos/clip.mp4"
    assert from_file.content_type == "video/mp4"
    assert from_file.size == len(VIDEO)
    assert from_file.sha256 == hashlib.sha256(VIDEO).hexdigest()
    assert isinstance(from_file.created_at, dt.datetime)
    assert fake.storage.read(from_file.uid) == VIDEO

    text = await client.storage.put("hello", "notes/a")
    assert text.content_type == "text/plain"
    raw = await client.storage.put(b"\x01\x02")
    assert raw.path is None
    assert raw.content_type == "application/octet-stream"
    typed = await client.storage.put(io.BytesIO(b"{}"), "x.bin", content_type="application/json")
    assert typed.content_type == "application/json"
    from_io = await client.storage.put(FileIO(video, content_type="video/webm"), "videos/b")
    assert from_io.content_type == "video/webm"

    assert await client.storage.get("videos/clip.mp4") == from_file
    assert await client.storage.get_by_uid(raw.uid) == raw


class _Recorder(httpx.AsyncHTTPTransport):
    """A real transport that keeps a copy of each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.seen.append(request)
        return await super().handle_async_request(request)


async def test_the_upload_is_multipart_with_one_file_part_and_no_filename(url: str) -> None:
    recorder = _Recorder()
    async with Client(url, TOKEN, api_url=url, scalefs_url=url, transport=recorder) as client:
        await client.storage.put(b"abc", "p/q.txt")
    seen = [r for r in recorder.seen if "/v1/objects/" in r.url.path]
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{url}/v1/objects/p/q.txt"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["authorization"].startswith("Bearer ")
    body = request.content
    assert (
        b'Content-Disposition: form-data; name="file"\r\nContent-Type: text/plain\r\n\r\nabc'
        in body
    )
    assert b"filename" not in body


async def test_an_existing_path_raises_unless_overwritten(client: Client) -> None:
    first = await client.storage.put(b"one", "same")
    with pytest.raises(StorageObjectExists, match="already exists at 'same'") as info:
        await client.storage.put(b"two", "same")
    assert info.value.status_code == 409
    second = await client.storage.put(b"two", "same", overwrite=True)
    assert second.uid == first.uid  # the object at that path is updated
    assert second.sha256 != first.sha256
    assert await client.storage.read_bytes(await client.storage.get("same")) == b"two"


async def test_not_found_errors(client: Client) -> None:
    with pytest.raises(StorageObjectNotFound, match="no storage object at 'nope'"):
        await client.storage.get("nope")
    with pytest.raises(StorageObjectNotFound, match="no storage object with uid 'u-x'"):
        await client.storage.get_by_uid("u-x")
    with pytest.raises(StorageObjectNotFound, match="No object found at 'nope/'") as info:
        await client.storage.delete("nope/")
    assert info.value.status_code == 404
    with pytest.raises(StorageObjectNotFound):
        await client.storage.copy("u-x", "dest")
    assert issubclass(StorageObjectNotFound, StorageError)
    assert issubclass(StorageError, UpstreamError)


async def test_list_pages_prefix_and_sha256(client: Client, fake: FakeScale) -> None:
    for name in ("a/1", "a/2", "a/3", "a/4", "a/5", "b/1"):
        await client.storage.put(name.encode(), name)
    listed = [o.path async for o in client.storage.list("a/")]
    assert listed == ["a/1", "a/2", "a/3", "a/4", "a/5"]
    pages = [
        r.query.get("page") for r in fake.requests if r.kind == "storage" and r.method == "GET"
    ]
    assert pages == ["1", "2", "3"]  # page size 2: pages fetched one after another
    everything = [o.path async for o in client.storage.list()]
    assert len(everything) == 6
    sha = hashlib.sha256(b"b/1").hexdigest()
    assert [o.path async for o in client.storage.list(sha256=sha)] == ["b/1"]


async def test_list_fetches_pages_only_as_far_as_it_is_read(
    client: Client, fake: FakeScale
) -> None:
    for i in range(6):
        await client.storage.put(b"x", f"lazy/{i}")
    before = fake.count("storage")
    stream = client.storage.list("lazy/")
    first = await stream.__anext__()
    await stream.aclose()
    assert first.path == "lazy/0"
    assert fake.count("storage") == before + 1


async def test_copy_and_copy_over(client: Client, fake: FakeScale) -> None:
    source = await client.storage.put(b"content", "src")
    copied = await client.storage.copy(source, "dst")
    assert copied.uid != source.uid
    assert copied.sha256 == source.sha256
    assert fake.storage.read(copied.uid) == b"content"
    with pytest.raises(StorageObjectExists):
        await client.storage.copy(source.uid, "dst")
    again = await client.storage.copy(source.uid, "dst", overwrite=True)
    assert (await client.storage.get("dst")).uid == again.uid
    anonymous = await client.storage.copy(source)
    assert anonymous.path is None


async def test_delete_exact_and_prefix(client: Client) -> None:
    for name in ("d/x", "d/xy", "d/z"):
        await client.storage.put(b"1", name)
    await client.storage.delete("d/x", exact=True)
    assert [o.path async for o in client.storage.list("d/")] == ["d/xy", "d/z"]
    await client.storage.delete("d/")
    assert [o.path async for o in client.storage.list("d/")] == []


async def test_presigned_url_works_without_auth_and_expires(
    client: Client, fake: FakeScale
) -> None:
    obj = await client.storage.put(VIDEO, "v.mp4")
    url = await client.storage.presigned_download_url(obj, expire_in=dt.timedelta(minutes=5))
    form = [r for r in fake.requests if "/presigned-urls/download/" in r.path][-1]
    assert form.method == "PUT"
    async with httpx.AsyncClient() as plain:
        answer = await plain.get(url)
        assert answer.status_code == 200
        assert answer.content == VIDEO
        expired = await client.storage.presigned_download_url(obj.uid, expire_in=-1)
        refused = await plain.get(expired)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "This presigned URL has expired."}
        # The authenticated download URL refuses a request without the JWT.
        assert obj.download_url is not None
        assert (await plain.get(obj.download_url)).status_code == 401


async def test_read_streams_whole_or_a_range(client: Client) -> None:
    obj = await client.storage.put(VIDEO, "r.mp4")
    chunks = [chunk async for chunk in client.storage.read(obj)]
    assert b"".join(chunks) == VIDEO
    part = b"".join([c async for c in client.storage.read(obj.uid, start=10, end=19)])
    assert part == VIDEO[10:20]
    tail = b"".join([c async for c in client.storage.read(obj, start=-5)])
    assert tail == VIDEO[-5:]
    async with client.storage.download(obj, start=100) as download:
        assert download.status_code == 206
        assert download.content_range == f"bytes 100-{len(VIDEO) - 1}/{len(VIDEO)}"
        assert download.content_length == len(VIDEO) - 100
        assert download.content_type == "video/mp4"
    with pytest.raises(ValueError, match="invalid byte range 5-2"):
        async with client.storage.download(obj, start=5, end=2):
            pass


async def test_read_a_deleted_object_raises_not_found(client: Client) -> None:
    obj = await client.storage.put(b"gone soon", "g")
    await client.storage.delete("g", exact=True)
    with pytest.raises(StorageObjectNotFound):
        await client.storage.read_bytes(obj)  # its download_url is known: the GET is a 404


async def test_infos(client: Client) -> None:
    await client.storage.put(b"12345", "p")
    await client.storage.put(b"123")
    infos = await client.storage.infos()
    assert infos == StorageInfos(
        count=2,
        used_bytes=8,
        total_bytes=infos.total_bytes,
        anonymous_count=1,
        anonymous_used_bytes=3,
    )
    assert infos.total_bytes > 0


async def test_a_stored_output_resolves_by_url_or_metadata(client: Client, fake: FakeScale) -> None:
    stored = fake.storage.add(b"payload", content_type="text/plain")
    base = client.storage.url
    by_url = StorageObjectIO(
        {"url": f"{base}/v1/objects/?uid={stored.uid}", "data_type": "file_path"}
    )
    assert await client.storage.read_bytes(by_url) == b"payload"
    resolved = await client.storage.resolve(by_url)
    assert resolved.uid == stored.uid
    with pytest.raises(ValueError, match="names no uid"):
        await client.storage.read_bytes(
            StorageObjectIO({"url": f"{base}/elsewhere", "data_type": "image"})
        )


async def test_a_jwt_without_storage_rights_is_refused_by_the_fake(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get(
            "/v1/projects/jwt/",
            params={"endpoint": url},
            headers={"Authorization": f"Token {TOKEN}"},
        )
        jwt = answer.json()["id_token"]
        refused = await http.get("/v1/infos", headers={"Authorization": f"Bearer {jwt}"})
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this token has no storage rights"}


async def test_the_client_asks_for_storage_rights_and_renews_an_expired_jwt(
    client: Client, fake: FakeScale
) -> None:
    await client.storage.infos()
    assert fake.requests[0].query["storage"] == "true"
    fake.expire_jwts()
    await client.storage.infos()
    assert fake.count("jwt") == 2


async def test_error_statuses_map_to_typed_errors(client: Client, fake: FakeScale) -> None:
    fake.fail("storage", 403, {"detail": "forbidden"})
    with pytest.raises(AuthenticationFailed, match=r"rejected the credentials \(HTTP 403\)"):
        await client.storage.infos()
    fake.fail("storage", 507, {"detail": "quota exceeded"})
    with pytest.raises(StorageError, match="answered HTTP 507: quota exceeded") as info:
        await client.storage.put(b"x")
    assert info.value.status_code == 507
    fake.fail("storage", 502, b"<html>bad gateway</html>")
    with pytest.raises(StorageError, match=r"HTTP 502$"):
        await client.storage.get("x")


def test_sync_storage_from_a_plain_thread(url: str, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    outcome: dict[str, object] = {}

    def work() -> None:
        with SyncClient(url, TOKEN, api_url=url, scalefs_url=url) as client:
            obj = client.storage.put(video, "sync/clip.mp4")
            outcome["get"] = client.storage.get("sync/clip.mp4") == obj
            outcome["by_uid"] = client.storage.get_by_uid(obj.uid) == obj
            outcome["list"] = [o.path for o in client.storage.list("sync/")]
            outcome["read"] = b"".join(client.storage.read(obj, start=0, end=3))
            outcome["bytes"] = client.storage.read_bytes(obj) == VIDEO
            copied = client.storage.copy(obj, "sync/copy")
            outcome["copy"] = copied.sha256 == obj.sha256
            outcome["presigned"] = (
                httpx.get(client.storage.presigned_download_url(obj)).content == VIDEO
            )
            outcome["infos"] = client.storage.infos().count
            outcome["resolve"] = client.storage.resolve(obj.uid) == obj
            client.storage.delete("sync/")
            try:
                client.storage.get("sync/clip.mp4")
            except StorageObjectNotFound as exc:
                outcome["deleted"] = str(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert outcome == {
        "get": True,
        "by_uid": True,
        "list": ["sync/clip.mp4"],
        "read": VIDEO[:4],
        "bytes": True,
        "copy": True,
        "presigned": True,
        "infos": 2,
        "resolve": True,
        "deleted": "no storage object at 'sync/clip.mp4'",
    }


def test_storage_object_from_json_needs_a_uid() -> None:
    with pytest.raises(UpstreamError, match="cannot read"):
        StorageObject.from_json({"path": "x"})
    obj = StorageObject.from_json({"uid": "u", "size": True, "created_at": "not a date"})
    assert (obj.size, obj.created_at) == (None, None)


async def test_an_upload_refused_for_an_expired_jwt_is_sent_again_whole(
    client: Client, fake: FakeScale, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    await client.storage.infos()
    fake.expire_jwts()
    obj = await client.storage.put(video, "again.mp4")
    assert fake.count("jwt") == 2
    assert fake.storage.read(obj.uid) == VIDEO
    uploads = [r for r in fake.requests if r.method == "POST"]
    assert [r.headers["content-length"] for r in uploads] == [
        uploads[0].headers["content-length"]
    ] * 2


async def test_upload_stream_stores_the_bytes_written_while_it_runs(
    client: Client, fake: FakeScale
) -> None:
    async with client.storage.upload_stream("video/mp4") as upload:
        for offset in range(0, len(VIDEO), 10_000):
            await upload.write(VIDEO[offset : offset + 10_000])
        obj = await upload.finish()
    assert (obj.path, obj.content_type, obj.size) == (None, "video/mp4", len(VIDEO))  # temporary
    assert fake.storage.read(obj.uid) == VIDEO


async def test_upload_stream_left_without_finish_stores_nothing(
    client: Client, fake: FakeScale
) -> None:
    async def broken_source() -> None:
        async with client.storage.upload_stream("video/mp4") as upload:
            await upload.write(VIDEO)
            await upload.write(VIDEO)  # the first write is in the request's body by now
            raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        await broken_source()
    assert fake.storage.objects() == []


async def test_upload_stream_is_sent_once_a_refused_jwt_raises(
    client: Client, fake: FakeScale
) -> None:
    async def upload_once() -> None:
        async with client.storage.upload_stream("video/mp4") as upload:
            await upload.write(VIDEO)
            await upload.finish()

    await client.storage.infos()
    fake.expire_jwts()
    with pytest.raises(AuthenticationFailed, match="HTTP 401"):
        await upload_once()
    assert fake.storage.objects() == []
    assert fake.count("jwt") == 1  # not renewed: the body could not be sent again
