"""`ikproxy.browser`: reading a stream back into `Results`, and every way it can fail."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from ikproxy import IncompleteStream, Progress, StreamError, TaskIO
from ikproxy.browser import (
    process_json_stream,
    process_json_stream_sync,
    process_readable_stream,
    process_readable_stream_sync,
    process_streaming_response,
    process_streaming_response_sync,
)
from ikproxy.server import to_readable_stream
from tests.support.deployments import default_script

pytestmark = pytest.mark.anyio


async def _wire(fmt: str = "sse", items: list[Any] | None = None) -> bytes:
    async def source() -> AsyncIterator[Any]:
        for item in items if items is not None else default_script():
            if isinstance(item, BaseException):
                raise item
            yield item

    stream = to_readable_stream(source(), format=fmt, request_id="rq-1")  # type: ignore[arg-type]
    return b"".join([chunk async for chunk in stream])


def _bytewise(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
async def test_results_and_every_progress(fmt: str) -> None:
    data = await _wire(fmt)
    seen: list[Progress] = []
    results = await process_readable_stream([data], seen.append)
    assert [p.state for p in seen] == ["PENDING", "STARTED", "SUCCESS"]
    assert seen[-1].results == results
    assert results.get_output(0, expect=TaskIO).data == {"value": 42}


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_sync_twin_byte_by_byte(fmt: str) -> None:
    import anyio

    data = anyio.run(_wire, fmt)
    states: list[str] = []
    results = process_readable_stream_sync(_bytewise(data), lambda p: states.append(p.state))
    assert states == ["PENDING", "STARTED", "SUCCESS"]
    assert len(results) == 1


async def test_async_on_progress_is_awaited() -> None:
    data = await _wire()
    seen: list[str] = []

    async def on_progress(progress: Progress) -> None:
        seen.append(progress.state)

    await process_readable_stream([data], on_progress)
    assert seen == ["PENDING", "STARTED", "SUCCESS"]


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
async def test_an_error_event_raises_stream_error(fmt: str) -> None:
    from ikproxy import WorkflowFailed

    data = await _wire(fmt, [default_script()[0], WorkflowFailed("boom")])
    with pytest.raises(StreamError) as caught:
        await process_readable_stream([data])
    assert caught.value.code == "workflow_failed"
    assert caught.value.message == "The workflow failed while processing this request."
    assert caught.value.request_id == "rq-1"
    assert str(caught.value) == (
        "workflow_failed: The workflow failed while processing this request. (request rq-1)"
    )


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
async def test_a_cut_stream_raises_incomplete_stream(fmt: str) -> None:
    data = await _wire(fmt)
    cut = data[: data.rindex(b"result") - 10]
    with pytest.raises(
        IncompleteStream, match=r"^the stream ended without a result or error event$"
    ):
        await process_readable_stream([cut])


async def test_an_empty_stream_is_incomplete() -> None:
    with pytest.raises(IncompleteStream):
        await process_readable_stream([])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"event: progress\ndata: {nope\n\n", "malformed stream: event data is not JSON"),
        (
            b'event: progress\ndata: {"eta": 1}\n\n',
            "malformed stream: progress.state must be a string",
        ),
        (
            b'event: result\ndata: {"state": "SUCCESS"}\n\n',
            "malformed stream: result event without results",
        ),
        (b'{"type": "progress"\n', "malformed stream: line 1: invalid JSON"),
        (b"[1]\n", "malformed stream: a line is not a JSON object"),
    ],
)
async def test_malformed_streams_raise_invalid_stream(data: bytes, message: str) -> None:
    with pytest.raises(StreamError) as caught:
        await process_readable_stream([data])
    assert caught.value.code == "invalid_stream"
    assert caught.value.message.startswith(message)


async def test_unknown_event_types_and_keepalives_are_ignored() -> None:
    data = await _wire()
    extra = b": keepalive\n\nevent: future-thing\ndata: {}\n\n"
    results = await process_readable_stream([extra, data])
    assert len(results) == 1


async def test_json_stream_from_objects_bytes_and_async_chunks() -> None:
    data = await _wire("ndjson")
    objects = [json.loads(line) for line in data.splitlines()]
    assert len(await process_json_stream(objects)) == 1
    assert len(process_json_stream_sync(objects)) == 1
    assert len(await process_json_stream(data)) == 1

    async def chunks() -> AsyncIterator[bytes]:
        yield data[:10]
        yield data[10:]

    assert len(await process_json_stream(chunks())) == 1


async def test_json_stream_error_object() -> None:
    with pytest.raises(StreamError) as caught:
        await process_json_stream([{"type": "error", "code": "timeout", "message": "late"}])
    assert (caught.value.code, caught.value.message, caught.value.request_id) == (
        "timeout",
        "late",
        None,
    )


async def test_streaming_response_reads_http_errors() -> None:
    body = {"error": {"code": "invalid_parameter", "message": "missing", "request_id": "r9"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        response = await http.get("http://x/run")
        with pytest.raises(StreamError) as caught:
            await process_streaming_response(response)
    assert (caught.value.code, caught.value.message, caught.value.request_id) == (
        "invalid_parameter",
        "missing",
        "r9",
    )
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: now
        ("soon", None),
        (None, None),
    ],
)
def test_a_refusal_carries_its_retry_after_in_seconds(
    retry_after: str | None, seconds: float | None
) -> None:
    body = {"error": {"code": "rate_limited", "message": "later", "request_id": "r1"}}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=body, headers=headers)

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(StreamError) as caught,
    ):
        process_streaming_response_sync(http.get("http://x/run"))
    error = caught.value
    assert (error.status_code, error.code, error.request_id) == (429, "rate_limited", "r1")
    assert error.retry_after == seconds


def test_a_retry_after_date_in_the_future_counts_the_seconds_to_it() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={}, headers={"Retry-After": when})

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(StreamError) as caught,
    ):
        process_streaming_response_sync(http.get("http://x/run"))
    assert caught.value.retry_after is not None
    assert 28 <= caught.value.retry_after <= 31


def test_streaming_response_sync_with_a_non_json_error_page() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        response = http.get("http://x/run")
        with pytest.raises(StreamError) as caught:
            process_streaming_response_sync(response)
    assert (caught.value.code, caught.value.message, caught.value.status_code) == (
        "http_error",
        "HTTP 502",
        502,
    )


async def test_streaming_response_picks_the_format_from_the_content_type() -> None:
    data = await _wire("ndjson")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data, headers={"Content-Type": "application/x-ndjson"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        response = await http.get("http://x/run")
        results = await process_streaming_response(response)
    assert len(results) == 1


def test_progress_that_arrives_with_the_error_is_passed_on_first() -> None:
    data = (
        b'event: progress\ndata: {"state": "STARTED"}\n\n'
        b'event: error\ndata: {"code": "timeout", "message": "late"}\n\n'
    )
    seen: list[str] = []
    with pytest.raises(StreamError, match=r"^timeout: late$"):
        process_readable_stream_sync([data], lambda p: seen.append(p.state))
    assert seen == ["STARTED"]


def test_progress_before_a_malformed_ndjson_line_is_passed_on_first() -> None:
    data = b'{"type": "progress", "state": "STARTED"}\n{oops\n'
    seen: list[str] = []
    with pytest.raises(StreamError, match=r"^invalid_stream: malformed stream: line 2"):
        process_readable_stream_sync([data], lambda p: seen.append(p.state))
    assert seen == ["STARTED"]


def test_the_data_of_unknown_event_types_is_not_parsed() -> None:
    data = b"event: later\ndata: not json at all\n\n"
    data += b'event: result\ndata: {"state": "SUCCESS", "results": {"outputs": []}}\n\n'
    assert len(process_readable_stream_sync([data])) == 0
