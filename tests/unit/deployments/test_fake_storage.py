"""The fake SCALE storage seen from the wire: answers, errors, recording, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ikproxy.testing import FakeScale, default_workflow

pytestmark = pytest.mark.anyio

BASE = "http://fake"


@pytest.fixture
def fake() -> FakeScale:
    return FakeScale(storage_page_size=2)


@pytest.fixture
async def http(fake: FakeScale) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        answer = await client.get(
            "/v1/projects/jwt/",
            params={"endpoint": BASE, "storage": "true"},
            headers={"Authorization": "Token fake-token"},
        )
        client.headers["Authorization"] = "Bearer " + answer.json()["id_token"]
        yield client


async def test_an_upload_is_recorded_without_its_body(
    http: httpx.AsyncClient, fake: FakeScale
) -> None:
    answer = await http.post("/v1/objects/a/b.txt", files={"file": (None, b"hello", "text/plain")})
    assert answer.status_code == 201
    obj = answer.json()
    assert obj["path"] == "a/b.txt"
    assert obj["download_url"] == f"{BASE}/v1/downloads/{obj['uid']}"
    assert set(obj) == {
        "uid",
        "path",
        "download_url",
        "content_type",
        "sha256",
        "size",
        "created_at",
    }
    upload = fake.requests[-1]
    assert (upload.kind, upload.method, upload.body, upload.json) == ("storage", "POST", b"", None)
    assert fake.storage.read(obj["uid"]) == b"hello"


async def test_bad_requests_answer_a_detail(http: httpx.AsyncClient) -> None:
    no_file = await http.post("/v1/objects/x", files={"other": (None, b"1")})
    assert (no_file.status_code, no_file.json()) == (400, {"detail": "the 'file' part is required"})
    not_multipart = await http.post("/v1/objects/x", content=b"raw")
    assert not_multipart.json() == {"detail": "the body must be multipart/form-data"}
    bad_page = await http.get("/v1/objects/", params={"page": "5"})
    assert (bad_page.status_code, bad_page.json()) == (404, {"detail": "Invalid page."})
    no_path = await http.delete("/v1/objects/")
    assert no_path.status_code == 405
    bad_date = await http.put("/v1/presigned-urls/download/u", data={"expire_at": "tomorrow"})
    assert bad_date.json() == {"detail": "expire_at must be an ISO 8601 date and time"}
    naive = await http.put(
        "/v1/presigned-urls/download/u", data={"expire_at": "2030-01-01T00:00:00"}
    )
    assert naive.json() == {"detail": "expire_at must carry a UTC offset"}
    unknown = await http.put(
        "/v1/presigned-urls/download/u", data={"expire_at": "2030-01-01T00:00:00+00:00"}
    )
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "No object with uid 'u'."})


async def test_pages_link_to_the_next_one(http: httpx.AsyncClient, fake: FakeScale) -> None:
    for i in range(3):
        fake.storage.add(b"x", f"p/{i}")
    first = (await http.get("/v1/objects/p/", params={"page": "1"})).json()
    assert [o["path"] for o in first["results"]] == ["p/0", "p/1"]
    assert first["next"] == f"{BASE}/v1/objects/p/?page=2"
    second = (await http.get(first["next"])).json()
    assert ([o["path"] for o in second["results"]], second["next"]) == (["p/2"], None)


async def test_storage_needs_a_bearer_jwt(fake: FakeScale) -> None:
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as http:
        assert (await http.get("/v1/infos")).status_code == 401


async def test_a_run_with_a_stored_input_reports_it(
    http: httpx.AsyncClient, fake: FakeScale
) -> None:
    stored = fake.storage.add(b"abc", content_type="video/mp4")
    body = {
        "inputs": [
            {
                "storage_object": {
                    "url": f"{BASE}/v1/objects/?uid={stored.uid}",
                    "data_type": "video",
                }
            }
        ],
        "outputs": [{"task_name": "infer_demo", "task_index": 0}],
    }
    run = await http.put("/api/run", json=body)
    assert run.status_code == 200
    body["inputs"][0]["storage_object"]["data_type"] = "movie"
    refused = await http.put("/api/run", json=body)
    assert refused.json() == {
        "message": "inputs[0].storage_object.data_type must be image, video, file_path or folder_path"
    }


def test_the_workflow_input_type_is_configurable() -> None:
    workflow = default_workflow("IODataType.VIDEO")
    assert workflow["tasks"][0]["task_data"]["inputs"] == [{"name": "IODataType.VIDEO"}]
