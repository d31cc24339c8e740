"""A video's round trip in real Chromium: browser upload, proxy, fake SCALE storage, run, download."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from ikproxy.testing import FakeScale
from tests.support.browser import chromium
from tests.support.servers import free_port, running_server
from tests.support.upload_app import video_bytes

SIZE = 4_000_000


@pytest.fixture(scope="module")
def scale() -> Iterator[tuple[FakeScale, str]]:
    fake = FakeScale(polls_before_done=1, next_poll_in=5)
    with fake.serve() as url:
        yield fake, url


@pytest.fixture(scope="module")
def base_url(scale: tuple[FakeScale, str]) -> Iterator[str]:
    port = free_port()
    args = ["-m", "uvicorn", "tests.support.upload_app:create_scale", "--factory"]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    with running_server(args, ready="Uvicorn running", env={"IKPROXY_TEST_SCALE_URL": scale[1]}):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


ROUND_TRIP = """async (size) => {
    const ik = await import("/api/ikproxy.js");
    const head = [0, 0, 0, 0x20, ...new TextEncoder().encode("ftypisom"), 0, 0, 2, 0,
                  ...new TextEncoder().encode("isomiso2avc1mp41")];
    const bytes = new Uint8Array(size);
    bytes.set(head);
    for (let i = 0; i < size - head.length; i++) bytes[head.length + i] = (i * 31 + (i >> 8)) & 255;
    const hex = async (data) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
                                          (b) => b.toString(16).padStart(2, "0")).join("");
    const file = new File([bytes], "clip.mp4", { type: "video/mp4" });
    const results = await ik.run("/api/run", {}, { image: file });
    const output = results.getOutput(0);
    const whole = await output.fetchBytes();
    const part = await output.fetch({ headers: { Range: "bytes=1000-1999" } });
    const partBytes = new Uint8Array(await part.arrayBuffer());
    return {
        isRef: output instanceof ik.RefOutput,
        absolute: output.url.startsWith(location.origin + "/api/outputs/"),
        contentType: output.contentType,
        size: output.size,
        sent: await hex(bytes),
        received: await hex(whole),
        partStatus: part.status,
        contentRange: part.headers.get("content-range"),
        partMatches: partBytes.length === 1000 && partBytes.every((b, i) => b === bytes[1000 + i]),
    };
}"""


def test_a_video_round_trip_in_chromium(
    browser: Browser, base_url: str, scale: tuple[FakeScale, str]
) -> None:
    import hashlib

    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base_url}/api/health")
        outcome = page.evaluate(ROUND_TRIP, SIZE)
    finally:
        context.close()
    expected = hashlib.sha256(video_bytes(SIZE)).hexdigest()
    assert outcome == {
        "isRef": True,
        "absolute": True,
        "contentType": "video/mp4",
        "size": SIZE,
        "sent": expected,
        "received": expected,
        "partStatus": 206,
        "contentRange": f"bytes 1000-1999/{SIZE}",
        "partMatches": True,
    }
    fake, _ = scale
    stored = [obj for obj in fake.storage.objects() if obj.sha256 == expected]
    assert len(stored) >= 2  # the uploaded input, and the run's stored copy of it


IMAGE_BY_REFERENCE = """async () => {
    const ik = await import("/api/ikproxy.js");
    const results = await ik.run("/local/run/", {});
    const image = results.firstImage();
    const img = document.createElement("img");
    await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error("the image did not load"));
        img.src = image.url;
    });
    let syncBytes = null;
    try { image.bytes; } catch (e) { syncBytes = e.name; }
    return {
        byReference: image.byReference,
        sameAsDataUrl: image.dataUrl === image.url,
        under: new URL(image.url).pathname.startsWith("/local/outputs/"),
        size: [img.naturalWidth, img.naturalHeight],
        dataUrl: (await image.toDataUrl()).slice(0, 22),
        blobType: (await image.fetchBlob()).type,
        syncBytes,
    };
}"""


def test_an_image_by_reference_loads_as_img_src(browser: Browser, base_url: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base_url}/api/health")
        outcome = page.evaluate(IMAGE_BY_REFERENCE)
    finally:
        context.close()
    assert outcome == {
        "byReference": True,
        "sameAsDataUrl": True,
        "under": True,  # run/ gave ../outputs/..., resolved back to the mount
        "size": [64, 48],
        "dataUrl": "data:image/png;base64,",
        "blobType": "image/png",
        "syncBytes": "TypeError",
    }
