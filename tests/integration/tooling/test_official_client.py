"""The official SCALE client, `ikomia-client` 0.4.2, against the fake SCALE server, unchanged.

It runs a video file (uploaded to the fake storage first, as it always does
for videos) and drives every method of its storage client. What it sent is
then checked on the fake's side, and what our own client sends for the same
video is compared with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ikproxy import SyncClient
from ikproxy.testing import FakeScale
from tests.support import ikclient as _ikclient

TOKEN = "fake-token"
VIDEO = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 1000

SCRIPT = textwrap.dedent(
    """
    import datetime, json, sys
    import httpx
    from ikclient.core.client import Client

    url, video = sys.argv[1], sys.argv[2]
    report = {}
    with Client(url) as client:
        results = client.run(video)
        report["outputs"] = [o.raw for o in results.get_outputs()]
        storage = client.storage
        obj = storage.put(b"hello", "docs/a.txt")
        report["put"] = obj
        report["get"] = storage.get("docs/a.txt")["uid"] == obj["uid"]
        report["get_by_uid"] = storage.get_by_uid(obj["uid"])["path"]
        for i in range(3):
            storage.put(f"n{i}", f"docs/n{i}.txt")
        report["list"] = [o["path"] for o in storage.list("docs/")]
        report["by_sha256"] = [o["path"] for o in storage.list_by_sha256(obj["sha256"])]
        copied = storage.copy({"uid": obj["uid"]}, "docs/copy.txt")
        report["copy"] = [copied["path"], copied["sha256"] == obj["sha256"]]
        try:
            storage.put(b"again", "docs/a.txt")
        except FileExistsError as exc:
            report["exists"] = str(exc)
        report["overwrite"] = storage.put(b"again", "docs/a.txt", overwrite=True)["size"]
        url_ = storage.get_presigned_download_url(obj, expire_in=datetime.timedelta(minutes=1))
        report["presigned"] = httpx.get(url_).text
        with storage.read(copied) as response:
            report["read"] = response.text
        with storage.read(copied, stream=True) as response:
            report["read_stream"] = b"".join(response.iter_bytes()).decode()
        report["infos"] = storage.infos()
        storage.delete("docs/", exact=False)
        try:
            storage.get("docs/a.txt")
        except FileNotFoundError as exc:
            report["not_found"] = str(exc)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def ikclient_python() -> str:
    return _ikclient.python()


@pytest.fixture
def fake() -> FakeScale:
    return FakeScale(polls_before_done=1, storage_page_size=2)


@pytest.fixture
def url(fake: FakeScale) -> Iterator[str]:
    with fake.serve() as served:
        yield served


def _official(python: str, url: str, video: Path) -> dict[str, Any]:
    env = os.environ | {"IKOMIA_URL": url, "IKOMIA_SCALEFS_URL": url, "IKOMIA_TOKEN": TOKEN}
    done = subprocess.run(
        [python, "-c", SCRIPT, url, str(video)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_official_client_runs_a_video_and_uses_storage(
    ikclient_python: str, fake: FakeScale, url: str, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    report = _official(ikclient_python, url, video)

    # The video went through storage, then into the run as a storage_object.
    run = next(r for r in fake.requests if r.kind == "run")
    (item,) = run.json["inputs"]
    assert item["storage_object"]["data_type"] == "video"
    uid = item["storage_object"]["url"].rsplit("uid=", 1)[1]
    assert report["outputs"][0]["stored_input"]["uid"] == uid
    assert report["outputs"][0]["stored_input"]["size"] == len(VIDEO)

    assert report["put"]["path"] == "docs/a.txt"
    assert report["put"]["content_type"] == "text/plain"
    assert report["get"] is True
    assert report["get_by_uid"] == "docs/a.txt"
    assert report["list"] == ["docs/a.txt", "docs/n0.txt", "docs/n1.txt", "docs/n2.txt"]
    assert report["by_sha256"] == ["docs/a.txt"]
    assert report["copy"] == ["docs/copy.txt", True]
    assert report["exists"] == "An object already exists at 'docs/a.txt'."
    assert report["overwrite"] == 5
    assert report["presigned"] == "again"  # the overwritten object, same uid
    assert report["read"] == report["read_stream"] == "hello"
    assert set(report["infos"]) == {"count", "used_bytes", "total_bytes", "anonymous_objects"}
    assert report["not_found"] == "Object not found: docs/a.txt"
    assert [o.path for o in fake.storage.objects()] == [None]  # only the video is left


def test_our_client_uploads_the_video_as_the_official_one(
    ikclient_python: str, fake: FakeScale, url: str, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(VIDEO)
    _official(ikclient_python, url, video)
    with SyncClient(url, TOKEN, api_url=url, scalefs_url=url) as client:
        client.run(video)
    runs = [r for r in fake.requests if r.kind == "run"]
    uploads = [r for r in fake.requests if r.kind == "storage" and r.path == "/v1/objects/"]
    theirs, ours = runs[0].json, runs[-1].json
    # Same run body, but for the uid of each upload.
    for body in (theirs, ours):
        body["inputs"][0]["storage_object"]["url"] = body["inputs"][0]["storage_object"][
            "url"
        ].rsplit("=", 1)[0]
    assert theirs == ours
    assert uploads[0].method == uploads[-1].method == "POST"
    first_video = fake.storage.objects()[0]
    last_video = fake.storage.objects()[-1]
    assert (first_video.content_type, first_video.sha256) == (
        last_video.content_type,
        last_video.sha256,
    )
    jwts = [r for r in fake.requests if r.kind == "jwt"]
    assert {r.query["storage"] for r in jwts} == {"true"}
