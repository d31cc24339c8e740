"""Run inputs of the SCALE client: URLs, videos, files, folders, save_temporary, stored outputs.

Every test runs the client against the fake SCALE server served on loopback; URL
inputs come from an HTTP server of the test's own.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ikproxy import (
    Client,
    FetchError,
    FileIO,
    ImageIO,
    InvalidInput,
    StorageObjectIO,
    SyncClient,
    TaskIO,
)
from ikproxy.errors import FetchNotFound, FetchRefusedAddress, FetchTooLarge, FetchUnsupportedScheme
from ikproxy.testing import TINY_PNG, FakeScale, default_workflow

pytestmark = pytest.mark.anyio

TOKEN = "fake-token"
VIDEO = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 300
PAGES: dict[str, tuple[bytes, str]] = {
    "/Foggy_Cityscapes.jpg": (TINY_PNG, "image/jpeg"),  # the bytes decide: a PNG
    "/clip": (VIDEO, "application/octet-stream"),
    "/page.html": (b"<!doctype html><p>not an image</p>", "text/html"),
}


class _Pages(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/Foggy_Cityscapes.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, content_type = PAGES.get(path, (b"missing", ""))
        self.send_response(200 if content_type else 404)
        self.send_header("Content-Type", content_type or "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fake(input_type: str = "IODataType.IMAGE", **options: Any) -> FakeScale:
    return FakeScale(default_workflow(input_type), polls_before_done=0, **options)


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> FakeScale:
    return _fake(getattr(request, "param", "IODataType.IMAGE"))


@pytest.fixture
def url(fake: FakeScale) -> Iterator[str]:
    with fake.serve() as served:
        yield served


@pytest.fixture
async def client(url: str) -> AsyncIterator[Client]:
    async with Client(url, TOKEN, api_url=url, scalefs_url=url, max_input_bytes=100_000) as client:
        yield client


def _run_inputs(fake: FakeScale) -> list[dict[str, Any]]:
    runs = [r for r in fake.requests if r.kind == "run"]
    inputs: list[dict[str, Any]] = runs[-1].json["inputs"]
    return inputs


def _stored_uid(item: dict[str, Any], scalefs: str) -> str:
    stored = item["storage_object"]
    prefix = f"{scalefs}/v1/objects/?uid="
    assert stored["url"].startswith(prefix)
    uid: str = stored["url"].removeprefix(prefix)
    return uid


# -- URLs ----------------------------------------------------------------------


async def test_an_image_url_is_fetched_and_sent_inline(
    client: Client, fake: FakeScale, pages: str
) -> None:
    results = await client.run(f"{pages}/Foggy_Cityscapes.jpg")
    assert _run_inputs(fake) == [{"image": base64.b64encode(TINY_PNG).decode()}]
    assert results.get_outputs() == [ImageIO(TINY_PNG)]


async def test_a_redirected_image_url(client: Client, fake: FakeScale, pages: str) -> None:
    await client.run(f"{pages}/redirect")
    assert _run_inputs(fake) == [{"image": base64.b64encode(TINY_PNG).decode()}]


async def test_a_video_url_goes_through_storage_typed_by_its_bytes(
    client: Client, fake: FakeScale, pages: str, url: str
) -> None:
    results = await client.run(f"{pages}/clip")
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "video"
    stored = fake.storage.get(_stored_uid(item, url))
    assert stored.content_type == "video/mp4"
    assert fake.storage.read(stored.uid) == VIDEO
    (output,) = results.get_outputs()
    assert output == TaskIO(
        "stored_input",
        {
            "uid": stored.uid,
            "size": len(VIDEO),
            "sha256": hashlib.sha256(VIDEO).hexdigest(),
            "content_type": "video/mp4",
            "data_type": "video",
        },
    )


async def test_url_errors_are_clear(client: Client, fake: FakeScale, pages: str) -> None:
    with pytest.raises(FetchNotFound, match=r"/missing was not found \(HTTP 404\)"):
        await client.run(f"{pages}/missing")
    with pytest.raises(
        InvalidInput,
        match=r"/page\.html: cannot send a file of type 'text/html' to a workflow input of type 'image'",
    ):
        await client.run(f"{pages}/page.html")
    with pytest.raises(FetchUnsupportedScheme, match="nosuch:// is not a protocol fsspec knows"):
        await client.run("nosuch://bucket/x.jpg")
    assert fake.count("run") == 0


async def test_url_size_limit(url: str, pages: str) -> None:
    async with Client(url, TOKEN, api_url=url, scalefs_url=url, max_input_bytes=1000) as client:
        with pytest.raises(FetchTooLarge, match="over the limit of 1000"):
            await client.run(f"{pages}/clip")


async def test_private_addresses_can_be_refused(url: str, pages: str) -> None:
    async with Client(url, TOKEN, api_url=url, scalefs_url=url, allow_private_urls=False) as client:
        with pytest.raises(FetchRefusedAddress):
            await client.run(f"{pages}/Foggy_Cityscapes.jpg")
    assert issubclass(FetchRefusedAddress, FetchError)


async def test_an_fsspec_url(client: Client, fake: FakeScale) -> None:
    import fsspec

    with fsspec.open("memory://bucket/clip.mp4", "wb") as out:
        out.write(VIDEO)
    try:
        await client.run("memory://bucket/clip.mp4")
    finally:
        fsspec.filesystem("memory").rm("/bucket", recursive=True)
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "video"
    assert [o.content_type for o in fake.storage.objects()] == ["video/mp4"]


async def test_an_fsspec_url_without_fsspec(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(
        FetchUnsupportedScheme,
        match=r"s3:// inputs need fsspec \(pip install 'ikproxy\[fsspec\]'\)",
    ):
        await client.run("s3://bucket/x.jpg")


# -- files and folders -----------------------------------------------------------


async def test_a_video_file_goes_through_storage(
    client: Client, fake: FakeScale, tmp_path: Path, url: str
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    await client.run(video)
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "video"  # the image input takes a video
    stored = fake.storage.get(_stored_uid(item, url))
    assert (stored.content_type, stored.path) == ("video/mp4", None)
    upload = next(r for r in fake.requests if r.kind == "storage" and r.method == "POST")
    assert upload.path == "/v1/objects/"


@pytest.mark.parametrize("fake", ["IODataType.VIDEO"], indirect=True)
async def test_a_video_workflow_refuses_an_image_file(client: Client, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(TINY_PNG)
    with pytest.raises(
        InvalidInput,
        match="cannot send a file of type 'image/png' to a workflow input of type 'video'",
    ):
        await client.run(image)
    with pytest.raises(InvalidInput):
        await client.run(ImageIO(TINY_PNG), save_temporary=True)


@pytest.mark.parametrize("fake", ["IODataType.FILE_PATH"], indirect=True)
async def test_a_file(client: Client, fake: FakeScale, tmp_path: Path, url: str) -> None:
    document = tmp_path / "report.pdf"
    document.write_bytes(b"%PDF-1.7 fake")
    results = await client.run(document)
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "file_path"
    stored = fake.storage.get(_stored_uid(item, url))
    assert stored.content_type == "application/pdf"
    assert results.get_outputs()[0].data["sha256"] == hashlib.sha256(b"%PDF-1.7 fake").hexdigest()  # type: ignore[attr-defined]


@pytest.mark.parametrize("fake", ["IODataType.FOLDER_PATH"], indirect=True)
async def test_a_folder_is_zipped(
    client: Client, fake: FakeScale, tmp_path: Path, url: str
) -> None:
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("A")
    (folder / "sub" / "b.bin").write_bytes(b"\x00" * 1000)
    await client.run(folder)
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "folder_path"
    stored = fake.storage.get(_stored_uid(item, url))
    assert stored.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(fake.storage.read(stored.uid))) as archive:
        assert sorted(archive.namelist()) == ["a.txt", "sub/b.bin"]
        assert archive.read("sub/b.bin") == b"\x00" * 1000


async def test_a_folder_for_an_image_input_needs_an_explicit_data_type(
    client: Client, fake: FakeScale, tmp_path: Path
) -> None:
    with pytest.raises(
        InvalidInput, match="cannot send a folder to a workflow input of type 'image'"
    ):
        await client.run(tmp_path)
    with pytest.raises(
        InvalidInput, match="a folder can only be sent as data_type 'folder_path', not 'video'"
    ):
        await client.run(FileIO(tmp_path, data_type="video"))
    (tmp_path / "x").write_text("x")
    await client.run(FileIO(tmp_path, data_type="folder_path"))
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "folder_path"


async def test_data_type_override_for_a_file(
    client: Client, fake: FakeScale, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    await client.run(FileIO(video, data_type="file_path"))
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "file_path"


async def test_a_missing_file(client: Client, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"input file not found: .*nope\.mp4"):
        await client.run(tmp_path / "nope.mp4")


# -- save_temporary and stored outputs ---------------------------------------------


async def test_save_temporary_sends_an_image_through_storage(
    client: Client, fake: FakeScale, tmp_path: Path, url: str
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(TINY_PNG)
    await client.run(image, ImageIO(TINY_PNG), save_temporary=True)
    first, second = _run_inputs(fake)
    for item in (first, second):
        assert item["storage_object"]["data_type"] == "image"
        assert fake.storage.read(_stored_uid(item, url)) == TINY_PNG
    assert fake.storage.get(_stored_uid(first, url)).content_type == "image/png"


async def test_a_stored_output_is_read_back(
    client: Client, fake: FakeScale, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    results = await client.run(video, store_outputs=True)
    run = [r for r in fake.requests if r.kind == "run"][-1]
    assert all(o["save_temporary"] is True for o in run.json["outputs"])
    (output,) = results.get_outputs()
    assert isinstance(output, StorageObjectIO)
    assert output.data_type == "video"
    assert await client.storage.read_bytes(output) == VIDEO
    chunk = b"".join([c async for c in client.storage.read(output, start=8, end=11)])
    assert chunk == b"isom"


async def test_a_stored_image_output(client: Client) -> None:
    results = await client.run(TINY_PNG, store_outputs=True)
    (output,) = results.get_outputs()
    assert isinstance(output, StorageObjectIO)
    assert output.data_type == "image"
    assert await client.storage.read_bytes(output) == TINY_PNG


async def test_the_fake_refuses_a_storage_object_it_does_not_hold(client: Client, url: str) -> None:
    from ikproxy import UpstreamHTTPError

    bogus = StorageObjectIO({"url": f"{url}/v1/objects/?uid=nope", "data_type": "video"})
    with pytest.raises(UpstreamHTTPError, match="HTTP 400"):
        await client.run(bogus)


def test_sync_client_runs_a_video(url: str, fake: FakeScale, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    outcome: dict[str, Any] = {}

    def work() -> None:
        with SyncClient(url, TOKEN, api_url=url, scalefs_url=url) as client:
            results = client.run(video, store_outputs=True)
            outcome["bytes"] = client.storage.read_bytes(results.get_outputs()[0])  # type: ignore[arg-type]
            outcome["states"] = [p.state for p in client.run_stream(video, save_temporary=True)]

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert outcome["bytes"] == VIDEO
    assert outcome["states"][-1] == "SUCCESS"


@pytest.mark.parametrize("fake", ["IODataType.FOLDER_PATH"], indirect=True)
async def test_an_fsspec_folder_is_zipped_and_a_missing_one_is_not_found(
    client: Client, fake: FakeScale, url: str
) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe({"/frames/a.txt": b"A", "/frames/sub/b.txt": b"B"})
    try:
        await client.run("memory://frames")
        with pytest.raises(FetchNotFound, match=r"memory://frames2/? was not found"):
            await client.run("memory://frames2")
    finally:
        memory.rm("/frames", recursive=True)
    (item,) = _run_inputs(fake)
    assert item["storage_object"]["data_type"] == "folder_path"
    with zipfile.ZipFile(io.BytesIO(fake.storage.read(_stored_uid(item, url)))) as archive:
        assert sorted(archive.namelist()) == ["a.txt", "sub/b.txt"]


SECRET = "Fs-5e1c-s3cret"


@pytest.mark.parametrize(
    "given",
    [
        f"memory://user:{SECRET}@bucket/missing.mp4",
        f"nosuch://user:{SECRET}@bucket/x.jpg",
        f"memory://bucket/missing.mp4?token={SECRET}",
        f"http://user:{SECRET}@127.0.0.1:1/x.jpg",
    ],
)
async def test_no_credential_of_an_input_url_in_its_error(client: Client, given: str) -> None:
    with pytest.raises(FetchError) as refused:
        await client.run(given)
    exc = refused.value
    assert SECRET not in f"{exc} {exc!r} {exc.public_message} {getattr(exc, 'url', '')}"
    assert exc.__cause__ is None or SECRET not in str(exc.__cause__)
