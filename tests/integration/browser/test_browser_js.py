"""The browser module, ikproxy.js, in real headless Chromium against a live server.

Each test imports the module from the server (`/api/ikproxy.js`) inside a page and
runs it with `page.evaluate`. The last tests feed the same wire bytes to the browser
module and to its Python twin, `ikproxy.browser`, and compare what they make of them.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from ikproxy.browser import process_readable_stream_sync
from ikproxy.errors import IncompleteStream, StreamError
from tests.support.browser import TEST_KEY, app_command, chromium, png
from tests.support.servers import free_port, running_server


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    with running_server(app_command(port), ready=r"Uvicorn running on"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base_url}/api/health")
    try:
        yield page
    finally:
        context.close()


def js(page: Page, body: str, arg: Any = None) -> Any:
    """Run `body` in the page with `ik` (the module) and `arg` in scope; errors as data."""
    script = f"""async (arg) => {{
        const ik = await import("/api/ikproxy.js");
        const failure = (e) => ({{
            failed: true, name: e.name, code: e.code ?? null, message: e.message,
            requestId: e.requestId ?? null, status: e.status ?? null,
            retryAfter: e.retryAfter ?? null,
            isIkproxyError: e instanceof ik.IkproxyError,
            isStreamError: e instanceof ik.StreamError,
            isIncomplete: e instanceof ik.IncompleteStream,
        }});
        const bytes = (list) => new Uint8Array(list);
        const streamOf = (chunks) => new ReadableStream({{
            start(controller) {{
                for (const chunk of chunks) controller.enqueue(bytes(chunk));
                controller.close();
            }},
        }});
        try {{
            {body}
        }} catch (e) {{
            return failure(e);
        }}
    }}"""
    return page.evaluate(script, arg)


# -- runs against the live server ------------------------------------------------------


def test_sse_run_reports_increasing_progress_and_a_png(page: Page) -> None:
    out = js(
        page,
        """
        const seen = [];
        const response = await fetch("/api/run?prompt=a+lighthouse");
        const results = await ik.processStreamingResponse(response, (p) => {
            seen.push({state: p.state, fraction: p.fraction, eta: p.eta, runId: p.runId,
                       uuid: p.uuid, name: p.name, done: p.done,
                       isProgress: p instanceof ik.Progress});
        });
        const image = results.getOutput(0);
        const img = new Image();
        img.src = image.dataUrl;
        await img.decode();
        return {seen, length: results.length, uuid: results.uuid, format: image.format,
                mimeType: image.mimeType, head: image.dataUrl.slice(0, 22),
                width: img.naturalWidth, isImage: image instanceof ik.ImageOutput,
                contentType: response.headers.get("content-type"),
                iterated: [...results].length, outputs: results.getOutputs().length};
        """,
    )
    assert out.get("failed") is None, out
    assert out["contentType"] == "text/event-stream; charset=utf-8"
    assert (out["length"], out["iterated"], out["outputs"]) == (1, 1, 1)
    assert out["isImage"] is True
    assert (out["format"], out["mimeType"]) == ("PNG", "image/png")
    assert out["head"] == "data:image/png;base64,"
    assert out["width"] == 512
    seen = out["seen"]
    assert all(p["isProgress"] for p in seen)
    assert seen[0]["state"] == "PENDING"
    assert seen[-1]["state"] == "SUCCESS"
    assert seen[-1]["done"] is True
    assert not any(p["done"] for p in seen[:-1])
    fractions = [p["fraction"] for p in seen if p["fraction"] is not None]
    assert len(fractions) >= 5
    assert fractions == sorted(fractions)
    assert len(set(fractions)) == len(fractions)
    assert fractions[-1] == 1
    assert {p["runId"] for p in seen} == {seen[0]["runId"]}
    assert seen[0]["runId"]
    assert {p["name"] for p in seen} == {"generate"}
    assert out["uuid"] == seen[-1]["uuid"]
    uppers = [p["eta"][1] for p in seen if p["state"] == "STARTED" and p["eta"][1] is not None]
    assert uppers == sorted(uppers, reverse=True)
    assert len(uppers) >= 5


def test_ndjson_run_by_format_and_by_accept(page: Page) -> None:
    out = js(
        page,
        """
        const states = [];
        const viaRun = await ik.run("/api/run", {prompt: "a cat"}, {
            format: "ndjson", onProgress: (p) => { states.push(p.state); }});
        const response = await fetch("/api/run?prompt=a+cat",
                                     {headers: {Accept: "application/x-ndjson"}});
        const type = response.headers.get("content-type");
        const viaJson = await ik.processJsonStream(response.body);
        return {states, type, a: viaRun.getOutput(0).format, b: viaJson.getOutput(0).format,
                same: viaRun.getOutput(0).base64 === viaJson.getOutput(0).base64};
        """,
    )
    assert out.get("failed") is None, out
    assert out["type"] == "application/x-ndjson"
    assert out["states"][0] == "PENDING"
    assert out["states"][-1] == "SUCCESS"
    assert (out["a"], out["b"], out["same"]) == ("PNG", "PNG", True)


def test_post_with_an_image_file_and_a_data_url(page: Page) -> None:
    picture = list(png(8, 6))
    out = js(
        page,
        """
        const blob = new Blob([bytes(arg)], {type: "image/png"});
        const file = new File([blob], "tiny.png", {type: "image/png"});
        const fromFile = await ik.run("/api/edges/run", {}, {image: file});
        const dataUrl = "data:image/png;base64," + btoa(String.fromCharCode(...arg));
        const fromDataUrl = await ik.run("/api/edges/run", {}, {image: dataUrl, format: "ndjson"});
        const sizes = [];
        for (const results of [fromFile, fromDataUrl]) {
            const img = new Image();
            img.src = results.getOutput(0, ik.ImageOutput).objectUrl();
            await img.decode();
            sizes.push([img.naturalWidth, img.naturalHeight]);
        }
        const blobOut = fromFile.getOutput(0).toBlob();
        return {sizes, blobType: blobOut.type, blobSize: blobOut.size,
                bytes: fromFile.getOutput(0).bytes.length};
        """,
        picture,
    )
    assert out.get("failed") is None, out
    assert out["sizes"] == [[8, 6], [8, 6]]
    assert out["blobType"] == "image/png"
    assert out["blobSize"] == out["bytes"] > 0


def test_a_refused_request_rejects_with_its_code_message_and_status(page: Page) -> None:
    out = js(page, 'await ik.run("/api/run", {prompt: "x".repeat(501)}); return {};')
    assert out["failed"] is True
    assert (out["name"], out["code"], out["status"]) == ("StreamError", "invalid_parameter", 400)
    assert out["message"] == "parameter 'prompt' is longer than 500 characters"
    assert out["isStreamError"]
    assert out["isIkproxyError"]
    assert isinstance(out["requestId"], str)
    assert len(out["requestId"]) >= 8

    missing = js(page, 'await ik.run("/api/run", {}); return {};')
    assert (missing["code"], missing["status"]) == ("invalid_parameter", 400)
    assert missing["message"] == "missing required parameter 'prompt'"


def test_headers_are_sent_and_a_wrong_key_is_refused(page: Page) -> None:
    out = js(
        page,
        """
        const ok = await ik.run("/api/run", {prompt: "key"}, {
            headers: {Authorization: `Bearer ${arg}`}});
        let refused = null;
        try {
            await ik.run("/api/run", {prompt: "key"}, {headers: {Authorization: "Bearer nope"}});
        } catch (e) { refused = failure(e); }
        return {ok: ok.length, refused};
        """,
        TEST_KEY,
    )
    assert out.get("failed") is None, out
    assert out["ok"] == 1
    refused = out["refused"]
    assert (refused["code"], refused["status"], refused["message"]) == (
        "unauthenticated",
        401,
        "Invalid API key.",
    )


def test_an_error_event_rejects_with_stream_error(page: Page) -> None:
    out = js(
        page,
        """
        const states = [];
        try {
            await ik.run("/fail/run", {prompt: "x"}, {
                onProgress: (p) => { states.push(p.state); }});
            return {};
        } catch (e) { return {states, error: failure(e)}; }
        """,
    )
    error = out["error"]
    assert (error["name"], error["code"]) == ("StreamError", "workflow_failed")
    assert error["message"] == "The workflow failed while processing this request."
    assert error["status"] is None
    assert isinstance(error["requestId"], str)
    assert error["requestId"]
    assert "secret" not in json.dumps(out)
    assert out["states"][0] == "PENDING"


@pytest.mark.parametrize("path", ["/truncated.sse", "/truncated.ndjson"])
def test_a_truncated_stream_rejects_with_incomplete_stream(page: Page, path: str) -> None:
    out = js(
        page,
        """
        const fractions = [];
        try {
            const response = await fetch(arg);
            await ik.processStreamingResponse(response, (p) => { fractions.push(p.fraction); });
            return {};
        } catch (e) { return {fractions, error: failure(e)}; }
        """,
        path,
    )
    error = out["error"]
    assert (error["name"], error["code"]) == ("IncompleteStream", "incomplete_stream")
    assert error["message"] == "the stream ended without a result or error event"
    assert error["isIncomplete"]
    assert error["isIkproxyError"]
    assert not error["isStreamError"]
    assert out["fractions"] == [0.5]


def test_a_non_json_error_body_keeps_the_status(page: Page) -> None:
    out = js(page, 'await ik.processStreamingResponse(await fetch("/no/such/page")); return {};')
    assert (out["name"], out["code"], out["message"], out["status"]) == (
        "StreamError",
        "http_error",
        "HTTP 404",
        404,
    )


def test_an_unreachable_server_is_a_network_error(page: Page) -> None:
    out = js(page, 'await ik.run(`http://127.0.0.1:${arg}/run`, {prompt: "x"}); return {};', 1)
    assert (out["name"], out["code"], out["message"]) == (
        "StreamError",
        "network_error",
        "The server could not be reached.",
    )


def test_abort_signal_rejects_with_abort_error(page: Page) -> None:
    out = js(
        page,
        """
        const controller = new AbortController();
        const states = [];
        try {
            await ik.run("/api/run", {prompt: "stop"}, {signal: controller.signal,
                onProgress: (p) => {
                    states.push(p.state);
                    if (p.state === "STARTED") controller.abort();
                }});
            return {};
        } catch (e) { return {states, name: e.name}; }
        """,
    )
    assert out["name"] == "AbortError"
    assert "SUCCESS" not in out["states"]
    assert "STARTED" in out["states"]


def test_on_progress_may_be_async_and_is_awaited_in_order(page: Page) -> None:
    out = js(
        page,
        """
        const log = [];
        await ik.run("/api/run", {prompt: "order"}, {onProgress: async (p) => {
            log.push("start " + p.state);
            await new Promise((resolve) => setTimeout(resolve, 5));
            log.push("end " + p.state);
        }});
        return {log};
        """,
    )
    log = out["log"]
    assert len(log) % 2 == 0
    assert len(log) >= 6
    for start, end in zip(log[::2], log[1::2], strict=True):
        assert start.startswith("start ")
        assert end == "end " + start.removeprefix("start ")


def test_a_throwing_on_progress_rejects_with_its_error(page: Page) -> None:
    out = js(
        page,
        """
        await ik.run("/api/run", {prompt: "throw"}, {
            onProgress: () => { throw new RangeError("mine"); }});
        return {};
        """,
    )
    assert (out["name"], out["message"]) == ("RangeError", "mine")


# -- SSE and NDJSON parsing, on constructed streams ----------------------------------


def _result_json(fraction: float = 1.0) -> bytes:
    results = {"uuid": "u", "outputs": [{"image": base64.b64encode(png()).decode()}]}
    progress = {"state": "SUCCESS", "eta": [0, 0], "run_id": "r", "fraction": fraction}
    return json.dumps({**progress, "results": results}).encode()


def _chunks(data: bytes, *cuts: int) -> list[list[int]]:
    bounds = [0, *sorted(cuts), len(data)]
    return [list(data[a:b]) for a, b in itertools.pairwise(bounds)]


def _consume(page: Page, chunks: list[list[int]], fn: str = "processReadableStream") -> Any:
    return js(
        page,
        f"""
        const seen = [];
        const results = await ik.{fn}(streamOf(arg), (p) => {{
            seen.push([p.state, p.fraction, p.eta]);
        }});
        return {{seen, outputs: results.getOutputs().map((o) => o.kind),
                 format: results.getOutput(0).format}};
        """,
        chunks,
    )


def test_sse_edge_cases_crlf_cr_split_chunks_comments_bom(page: Page) -> None:
    result = _result_json()
    stream = (
        b"\xef\xbb\xbf: ikproxy protocol 1\r\n"
        b"retry: 3000\r\n\r\n"
        b"event: progress\r"
        b"id: 1\r"
        b'data:{"state":"PEND\xc3\x89",\r\n'  # no space after the colon; split below
        b'data: "fraction": 0.25}\r\r'  # two data lines joined by LF: still one JSON object
        b": keepalive\n"
        b"event: later-version\ndata: not json at all\n\n"
        b"event: progress\nid: 2\ndata: " + b'{"state":"STARTED","fraction":0.5,"eta":[100,200]}'
        b"\r\n\r\n"
        b"event: result\nid: 3\ndata: " + result + b"\n\n"
    )
    crlf = stream.index(b'",\r\n') + 3  # between CR and LF: the LF is no blank line
    utf8 = stream.index(b"\xc3\x89") + 1  # inside the two-byte character
    bom = 2  # inside the byte order mark
    out = _consume(page, _chunks(stream, bom, crlf, utf8, utf8 + 5, len(stream) - 3))
    assert out.get("failed") is None, out
    assert out["seen"] == [
        ["PENDÉ", 0.25, [None, None]],
        ["STARTED", 0.5, [100, 200]],
        ["SUCCESS", 1, [0, 0]],
    ]
    assert out["outputs"] == ["image"]
    assert out["format"] == "PNG"


def test_sse_one_byte_at_a_time(page: Page) -> None:
    stream = b'event: progress\r\ndata: {"state":"A"}\r\n\r\nevent: result\r\ndata: '
    stream += _result_json() + b"\r\n\r\n"
    out = _consume(page, [[byte] for byte in stream])
    assert out.get("failed") is None, out
    assert [s[0] for s in out["seen"]] == ["A", "SUCCESS"]


def test_sse_decoder_fields_by_the_spec(page: Page) -> None:
    out = js(
        page,
        r"""
        const d = new ik.SSEDecoder();
        const events = [
            ...d.feed("\uFEFFdata: one\n\ndata\n\n"),
            ...d.feed("data:  two spaces\nid: 7\nretry: 12x\n\n"),
            ...d.feed("id: a\0b\nretry: 1500\nevent: named\ndata: x\n"),
            ...d.feed("\n: only a comment\n\nevent: e\n\ndata: unfinished"),
            ...d.close(),
        ];
        return {events, lastEventId: d.lastEventId, retry: d.retry};
        """,
    )
    assert out["events"] == [
        {"type": "message", "data": "one", "id": ""},
        {"type": "message", "data": "", "id": ""},
        {"type": "message", "data": " two spaces", "id": "7"},
        {"type": "named", "data": "x", "id": "7"},
    ]
    assert (out["lastEventId"], out["retry"]) == ("7", 1500)


def test_ndjson_detected_from_the_first_byte(page: Page) -> None:
    lines = (
        b"\r\n"
        b'{"type":"progress","id":1,"state":"PENDING","eta":[null,null]}\r\n'
        b"\n"
        b'{"type":"keepalive"}\n'
        b'{"type":"from-the-future","id":2}\n'
        b'{"type":"result","id":3,' + _result_json()[1:]  # the last line without LF
    )
    out = _consume(page, _chunks(lines, 1, 10, 70, len(lines) - 2))
    assert out.get("failed") is None, out
    assert [s[0] for s in out["seen"]] == ["PENDING", "SUCCESS"]


def test_process_json_stream_takes_strings_and_objects(page: Page) -> None:
    out = js(
        page,
        """
        const result = {type: "result", state: "SUCCESS", results: {outputs: [{answer: 42}]}};
        const fromObjects = await ik.processJsonStream([{type: "progress", state: "A"}, result]);
        async function* generate() { yield {type: "progress", state: "B"}; yield result; }
        const fromAsync = await ik.processJsonStream(generate());
        const first = JSON.stringify({type: "progress", state: "C"});
        const text = first + "\\n" + JSON.stringify(result);
        const fromText = await ik.processJsonStream(text);
        return [fromObjects, fromAsync, fromText].map((r) => r.getOutput(0).data);
        """,
    )
    assert out == [42, 42, 42]


def test_malformed_streams_reject_with_invalid_stream(page: Page) -> None:
    cases = {
        "event: progress\ndata: {nope\n\n": "malformed stream: event data is not JSON",
        'event: progress\ndata: {"eta": [1, 2]}\n\n': (
            "malformed stream: progress.state must be a string"
        ),
        'event: progress\ndata: {"state": "A", "fraction": 2}\n\n': (
            "malformed stream: fraction must be between 0 and 1, not 2"
        ),
        'event: result\ndata: {"state": "SUCCESS"}\n\n': (
            "malformed stream: result event without results"
        ),
        "event: error\ndata: []\n\n": "malformed stream: error event is not an object",
        '{"type":"progress","state":"A"}\n[1]\n': "malformed stream: a line is not a JSON object",
    }
    for text, message in cases.items():
        out = js(
            page, "await ik.processReadableStream(streamOf([arg])); return {};", list(text.encode())
        )
        assert (out["name"], out["code"], out["message"]) == (
            "StreamError",
            "invalid_stream",
            message,
        ), text


def test_image_output_sniffing_and_unknown_formats(page: Page) -> None:
    out = js(
        page,
        """
        const kinds = {};
        const samples = {
            jpeg: [0xff, 0xd8, 0xff, 0xe0], gif: [...new TextEncoder().encode("GIF89a")],
            webp: [...new TextEncoder().encode("RIFF\\0\\0\\0\\0WEBPVP8 ")],
            avif: [0, 0, 0, 0x1c, ...new TextEncoder().encode("ftypavif")],
            bmp: [0x42, 0x4d, 1, 2],
        };
        for (const [name, head] of Object.entries(samples)) {
            const image = new ik.ImageOutput(btoa(String.fromCharCode(...head, 0, 0, 0, 0)));
            kinds[name] = [image.format, image.mimeType];
        }
        const unknown = new ik.ImageOutput(btoa("hello world"));
        let error = null;
        try { unknown.dataUrl; } catch (e) { error = [e.name, e.message]; }
        return {kinds, unknown: [unknown.format, unknown.mimeType], error};
        """,
    )
    assert out["kinds"] == {
        "jpeg": ["JPEG", "image/jpeg"],
        "gif": ["GIF", "image/gif"],
        "webp": ["WEBP", "image/webp"],
        "avif": ["AVIF", "image/avif"],
        "bmp": ["BMP", "image/bmp"],
    }
    assert out["unknown"] == [None, "application/octet-stream"]
    assert out["error"] == ["TypeError", "image output is not in a format a browser can show"]


def test_progress_estimate_moves_smoothly_and_never_backwards(page: Page) -> None:
    out = js(
        page,
        """
        let now = 0;
        const e = new ik.ProgressEstimate({now: () => now});
        const samples = [];
        const at = (t) => { now = t; samples.push(Number(e.fractionAt().toFixed(4))); };
        at(0);
        e.update(new ik.Progress({state: "PENDING"}));
        at(500);
        e.update(new ik.Progress({state: "STARTED", fraction: 0.2, eta: [800, 1000]}));
        at(1000); at(1500);
        e.update(new ik.Progress({state: "STARTED", fraction: 0.3, eta: [4000, 4000]}));
        at(1600); at(4000); at(60000);
        const capped = e.fractionAt();
        const remaining = e.remainingAt();
        e.update(new ik.Progress({state: "SUCCESS", fraction: 1, results: new ik.Results([])}));
        return {samples, capped, remaining, done: e.fractionAt(), left: e.remainingAt(),
                text: [ik.formatDuration(400), ik.formatDuration(4200), ik.formatDuration(65000)]};
        """,
    )
    samples = out["samples"]
    assert samples[:2] == [0, 0]  # nothing known yet: the bar waits
    assert samples[2] == pytest.approx(0.2 + 0.8 * 0.5)  # halfway through the 1000 ms upper bound
    assert samples == sorted(samples)  # never backwards, although 0.3 < 0.6
    assert max(samples) <= 0.99
    assert out["capped"] == 0.99
    assert out["remaining"] == 0
    assert (out["done"], out["left"]) == (1, 0)
    assert out["text"] == ["less than a second", "4 s", "1 min 5 s"]


# -- the twin: the same bytes give the same outcome in Python and in the browser -------------


_TWIN_STREAMS = {
    "sse": b'event: progress\ndata: {"state":"A","fraction":0.5}\n\nevent: result\ndata: '
    + _result_json()
    + b"\n\n",
    "ndjson": b'{"type":"progress","state":"A"}\n{"type":"result",' + _result_json()[1:] + b"\n",
    "error": b'event: error\ndata: {"code":"timeout","message":"The run did not finish in time.",'
    b'"request_id":"abc"}\n\n',
    "error-defaults": b"event: error\ndata: {}\n\n",
    "cut": b'event: progress\ndata: {"state":"A"}\n\nevent: result\ndata: {"state":',
    "empty": b"",
    "after-result": b'{"type":"result","state":"SUCCESS","results":{"outputs":[]}}\n'
    b'{"type":"error","code":"x"}\n',
}


def _python_outcome(data: bytes) -> dict[str, Any]:
    seen: list[Any] = []
    try:
        results = process_readable_stream_sync(
            [data[i : i + 7] for i in range(0, len(data), 7)],
            lambda p: seen.append([p.state, p.fraction]),
        )
    except StreamError as exc:
        return {"seen": seen, "error": [type(exc).__name__, exc.code, exc.message, exc.request_id]}
    except IncompleteStream as exc:
        return {"seen": seen, "error": [type(exc).__name__, exc.code, str(exc), None]}
    return {"seen": seen, "outputs": results.to_json()["outputs"]}


@pytest.mark.parametrize("name", sorted(_TWIN_STREAMS))
def test_same_outcome_as_the_python_consumer(page: Page, name: str) -> None:
    data = _TWIN_STREAMS[name]
    browser_outcome = js(
        page,
        """
        const seen = [];
        const chunks = [];
        for (let i = 0; i < arg.length; i += 7) chunks.push(arg.slice(i, i + 7));
        try {
            const results = await ik.processReadableStream(streamOf(chunks), (p) => {
                seen.push([p.state, p.fraction]);
            });
            return {seen, outputs: results.toJSON().outputs};
        } catch (e) {
            return {seen, error: [e.name, e.code, e.message, e.requestId ?? null]};
        }
        """,
        list(data),
    )
    assert browser_outcome == _python_outcome(data)


def test_the_module_and_its_types_are_served(base_url: str) -> None:
    js_response = httpx.get(f"{base_url}/api/ikproxy.js")
    types = httpx.get(f"{base_url}/api/ikproxy.d.ts")
    assert js_response.status_code == 200
    assert js_response.headers["content-type"].startswith("text/javascript")
    assert b"export async function processStreamingResponse" in js_response.content
    assert types.status_code == 200
    assert b"export declare function processStreamingResponse" in types.content


def test_run_resumes_a_resumable_run_after_a_lost_connection(page: Page) -> None:
    out = js(
        page,
        """
        const states = [];
        const fetches = [];
        const counting = (url, init) => { fetches.push(String(url)); return fetch(url, init); };
        const results = await ik.run("/resumable/run", {prompt: "a lighthouse"},
            {fetch: counting, onProgress: (p) => states.push([p.state, p.fraction])});
        const cut = [];
        try {
            await ik.run("/resumable/run", {prompt: "no resume"}, {resume: 0});
        } catch (e) { cut.push(e.name); }
        return {states, fetches, outputs: results.getOutputs().length,
                width: (await createImageBitmap(await results.getOutput(0).toBlob())).width, cut};
        """,
    )
    assert len(out["fetches"]) == 2
    assert "last_event_id" not in out["fetches"][1]  # the Last-Event-ID header says it
    fractions = [f for _, f in out["states"] if f is not None]
    assert fractions == sorted(fractions)  # nothing replayed twice, nothing lost
    assert len(out["states"]) == len({tuple(s) for s in out["states"]})
    assert out["states"][-1][0] == "SUCCESS"
    assert out["outputs"] == 1
    assert out["width"] == 512
    assert out["cut"] == ["IncompleteStream"]


#: In the page: `fetch` that records each request's URL, `Last-Event-ID` and answer.
RECORDING_FETCH = """
    const seen = [];
    const started = performance.now();
    const recording = async (url, init) => {
        const response = await fetch(url, init);
        seen.push({url: String(url), lastEventId: init.headers["Last-Event-ID"] ?? null,
                   status: response.status, at: performance.now() - started,
                   retryAfter: response.headers.get("retry-after")});
        return response;
    };
    await fetch("/throttled/drain", {method: "POST"});  // the next resume is refused
"""


def test_run_waits_out_retry_after_on_a_refused_resume_then_resumes(page: Page) -> None:
    out = js(
        page,
        RECORDING_FETCH
        + """
        const states = [];
        const results = await ik.run("/throttled/run", {prompt: "a lighthouse"},
            {fetch: recording, onProgress: (p) => states.push(p.fraction)});
        return {seen, states, outputs: results.getOutputs().length,
                done: performance.now() - started};
        """,
    )
    statuses = [s["status"] for s in out["seen"]]
    assert statuses == [200, 429, 200], out["seen"]
    first, refused, resumed = out["seen"]
    assert first["lastEventId"] is None
    assert refused["lastEventId"] == resumed["lastEventId"] is not None
    assert all("last_event_id" not in s["url"] for s in out["seen"])
    retry_after = int(refused["retryAfter"])
    assert retry_after >= 1
    assert resumed["at"] - refused["at"] >= retry_after * 1000 - 50  # it waited, not polled
    fractions = [f for f in out["states"] if f is not None]
    assert fractions == sorted(fractions)  # the resume went on where the stream was cut
    assert out["outputs"] == 1


def test_the_wait_for_retry_after_ends_when_the_signal_aborts(page: Page) -> None:
    out = js(
        page,
        RECORDING_FETCH
        + """
        const controller = new AbortController();
        const aborting = async (url, init) => {
            const response = await recording(url, init);
            if (response.status === 429) setTimeout(() => controller.abort(), 100);
            return response;
        };
        try {
            await ik.run("/throttled/run", {prompt: "x"}, {fetch: aborting,
                signal: controller.signal});
        } catch (e) {
            return {name: e.name, seen, after: performance.now() - started - seen.at(-1).at};
        }
        return {name: "resolved", seen};
        """,
    )
    assert out["name"] == "AbortError"
    assert [s["status"] for s in out["seen"]] == [200, 429]
    assert out["after"] < 900  # rejected at the abort, not after the Retry-After


def test_a_retry_after_beyond_the_bound_rejects_with_every_field(page: Page) -> None:
    out = js(
        page,
        RECORDING_FETCH
        + """
        await ik.run("/throttled/run", {prompt: "x"}, {fetch: recording, maxRetryAfter: 0.5});
        """,
    )
    assert out["failed"] is True
    assert out["isStreamError"] is True
    assert (out["status"], out["code"]) == (429, "rate_limited")
    assert out["retryAfter"] >= 1
    assert isinstance(out["requestId"], str)
    assert out["requestId"]
