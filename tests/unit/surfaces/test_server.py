"""`ikproxy.server`: encoding a run as wire protocol bytes, keepalives, errors, closing."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from ikproxy import Progress, Results, TaskIO, WorkflowFailed
from ikproxy.codecs.ndjson import NDJSONDecoder
from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.concurrency import iterate_in_portal
from ikproxy.errors import AuthenticationFailed, RunTimeout, UpstreamConnectionError
from ikproxy.server import to_readable_stream
from tests.support.deployments import default_script

pytestmark = pytest.mark.anyio


async def _items(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        if isinstance(item, BaseException):
            raise item
        yield item


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def _sse(data: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(data) + decoder.close()


async def test_sse_stream_has_preamble_progress_and_one_result() -> None:
    data = await _collect(to_readable_stream(_items(default_script()), request_id="rq"))
    assert data.startswith(b": ikproxy protocol 1\nretry: 3000\n\n")
    events = _sse(data)
    assert [e.event for e in events] == ["progress", "progress", "result"]
    assert [e.id for e in events] == ["1", "2", "3"]
    first = json.loads(events[0].data)
    assert first == {
        "state": "PENDING",
        "eta": [2000, 3000],
        "run_id": "r-1",
        "uuid": "u-1",
        "name": "t",
        "fraction": None,
    }
    final = Progress.from_json(json.loads(events[2].data))
    assert final == default_script()[2]


async def test_ndjson_stream_carries_type_and_id() -> None:
    data = await _collect(to_readable_stream(_items(default_script()), format="ndjson"))
    values = NDJSONDecoder().feed(data)
    assert [(v["type"], v["id"]) for v in values] == [
        ("progress", 1),
        ("progress", 2),
        ("result", 3),
    ]
    assert values[2]["results"]["outputs"] == [{"answer": {"value": 42}}]


async def test_dicts_of_the_wire_form_are_accepted() -> None:
    items = [p.to_json() for p in default_script()]
    events = _sse(await _collect(to_readable_stream(_items(items))))
    assert [e.event for e in events] == ["progress", "progress", "result"]


async def test_events_after_the_result_are_not_sent() -> None:
    script = [*default_script(), Progress("STARTED")]
    events = _sse(await _collect(to_readable_stream(_items(script))))
    assert [e.event for e in events] == ["progress", "progress", "result"]


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (WorkflowFailed("boom at /secret/path"), "workflow_failed", "The workflow failed"),
        (AuthenticationFailed("token abc refused"), "unauthorized", "The deployment refused"),
        (
            UpstreamConnectionError("https://xyz.scale.ikomia.ai down"),
            "upstream_failed",
            "The deployment could",
        ),
        (RunTimeout("late"), "timeout", "The run did not finish"),
        (RuntimeError("Traceback: secret"), "internal", "An internal error"),
    ],
)
async def test_an_upstream_exception_becomes_one_safe_error_event(
    exc: BaseException, code: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    script = [default_script()[0], exc]
    with caplog.at_level(logging.ERROR, logger="ikproxy"):
        data = await _collect(to_readable_stream(_items(script), request_id="req-7"))
    events = _sse(data)
    assert [e.event for e in events] == ["progress", "error"]
    body = json.loads(events[1].data)
    assert body["code"] == code
    assert body["message"].startswith(message)
    assert body["request_id"] == "req-7"
    assert str(exc) not in data.decode()
    assert b"Traceback" not in data
    # The detail goes to the log, under the same request id.
    assert any("req-7" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_stream_that_ends_without_results_ends_with_an_error() -> None:
    events = _sse(await _collect(to_readable_stream(_items(default_script()[:2]))))
    assert [e.event for e in events] == ["progress", "progress", "error"]
    assert json.loads(events[2].data)["code"] == "upstream_failed"


async def test_a_failure_state_ends_with_workflow_failed() -> None:
    events = _sse(await _collect(to_readable_stream(_items([Progress("FAILURE")]))))
    assert [e.event for e in events] == ["error"]
    assert json.loads(events[0].data)["code"] == "workflow_failed"


async def test_keepalive_comments_while_the_upstream_is_silent() -> None:
    release = anyio.Event()

    async def slow() -> AsyncIterator[Progress]:
        yield default_script()[0]
        await release.wait()
        yield default_script()[2]

    stream = to_readable_stream(slow(), keepalive=0.05, retry_ms=None)
    chunks = [await stream.__anext__() for _ in range(4)]
    release.set()
    chunks += [chunk async for chunk in stream]
    assert chunks[0] == b": ikproxy protocol 1\n\n"
    assert chunks[1].startswith(b"event: progress\n")
    assert chunks[2] == chunks[3] == b": keepalive\n\n"
    assert chunks[-1].startswith(b"event: result\n")


async def test_ndjson_keepalive_is_a_typed_line() -> None:
    release = anyio.Event()

    async def slow() -> AsyncIterator[Progress]:
        await release.wait()
        yield default_script()[2]

    stream = to_readable_stream(slow(), format="ndjson", keepalive=0.05)
    assert await stream.__anext__() == b'{"type":"keepalive"}\n'
    release.set()
    rest = b"".join([c async for c in stream])
    assert json.loads(rest)["type"] == "result"


async def test_closing_the_stream_closes_the_upstream_at_once() -> None:
    closed = anyio.Event()
    forever = anyio.Event()

    async def upstream() -> AsyncIterator[Progress]:
        try:
            yield default_script()[0]
            await forever.wait()
        finally:
            closed.set()

    stream = to_readable_stream(upstream())
    await stream.__anext__()
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    with anyio.fail_after(1):
        await closed.wait()


async def test_cancelling_the_reader_closes_the_upstream() -> None:
    closed = anyio.Event()
    reading = anyio.Event()
    forever = anyio.Event()

    async def upstream() -> AsyncIterator[Progress]:
        try:
            reading.set()
            await forever.wait()
            yield default_script()[0]
        finally:
            closed.set()

    async def read() -> None:
        async for _ in to_readable_stream(upstream()):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await reading.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(1):
        await closed.wait()


async def test_finish_on_disconnect_lets_the_run_finish() -> None:
    release = anyio.Event()
    finished = anyio.Event()

    async def upstream() -> AsyncIterator[Progress]:
        yield default_script()[0]
        await release.wait()
        finished.set()  # the run was pulled on to its end after the client left
        yield default_script()[2]

    stream = to_readable_stream(upstream(), finish_on_disconnect=True)
    await stream.__anext__()
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    release.set()
    with anyio.fail_after(2):
        await finished.wait()


async def test_the_run_deadline_gives_a_timeout_error() -> None:
    forever = anyio.Event()

    async def upstream() -> AsyncIterator[Progress]:
        yield default_script()[0]
        await forever.wait()

    events = _sse(await _collect(to_readable_stream(upstream(), timeout=0.1)))
    assert [e.event for e in events] == ["progress", "error"]
    assert json.loads(events[1].data)["code"] == "timeout"


async def test_a_large_result_is_framed_exactly() -> None:
    big = "x" * (3 * 1024 * 1024)
    result = Progress("SUCCESS", results=Results((TaskIO("text", big),)))
    events = _sse(await _collect(to_readable_stream(_items([result]))))
    assert json.loads(events[0].data)["results"]["outputs"][0]["text"] == big


def test_the_sync_bridge_streams_and_closing_it_closes_the_upstream() -> None:
    closed = threading.Event()
    forever = threading.Event()

    async def upstream() -> AsyncIterator[Progress]:
        try:
            yield default_script()[0]
            await anyio.to_thread.run_sync(forever.wait, abandon_on_cancel=True)
        finally:
            closed.set()

    chunks = iterate_in_portal(to_readable_stream(upstream()))
    assert next(chunks).startswith(b": ikproxy")
    assert next(chunks).startswith(b"event: progress")
    chunks.close()  # what a WSGI server does when the client leaves
    assert closed.wait(timeout=2)
    forever.set()


def test_the_sync_bridge_runs_a_whole_stream_from_plain_threads() -> None:
    outputs: list[bytes] = []

    def consume() -> None:
        outputs.append(b"".join(iterate_in_portal(to_readable_stream(_items(default_script())))))

    threads = [threading.Thread(target=consume) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(outputs) == 3
    assert all(len(_sse(o)) == 3 for o in outputs)


# -- the ASGI fast path: RunStream.send_to -------------------------------------------


async def _send_to(stream: AsyncIterator[Any], **options: Any) -> list[bytes]:
    writes: list[bytes] = []

    async def write(chunk: bytes) -> None:
        writes.append(chunk)

    await to_readable_stream(stream, **options).send_to(write)
    return writes


async def test_send_to_writes_the_preamble_with_the_first_event() -> None:
    writes = await _send_to(_items(default_script()))
    assert len(writes) == 3
    assert writes[0].startswith(b": ikproxy protocol 1\nretry: 3000\n\nevent: progress\nid: 1\n")
    assert [e.event for e in _sse(b"".join(writes))] == ["progress", "progress", "result"]
    assert b"".join(writes) == await _collect(to_readable_stream(_items(default_script())))


async def test_send_to_writes_the_preamble_alone_when_the_first_event_is_slow() -> None:
    release = anyio.Event()
    writes: list[bytes] = []

    async def write(chunk: bytes) -> None:
        writes.append(chunk)
        release.set()  # the preamble went out while the upstream was silent

    async def slow() -> AsyncIterator[Progress]:
        await release.wait()
        yield default_script()[2]

    with anyio.fail_after(5):
        await to_readable_stream(slow()).send_to(write)
    assert writes[0] == b": ikproxy protocol 1\nretry: 3000\n\n"
    assert writes[1].startswith(b"event: result\n")


async def test_send_to_sends_keepalives_while_the_upstream_is_silent() -> None:
    release = anyio.Event()
    writes: list[bytes] = []

    async def write(chunk: bytes) -> None:
        writes.append(chunk)
        if writes.count(b": keepalive\n\n") == 2:
            release.set()

    async def slow() -> AsyncIterator[Progress]:
        yield default_script()[0]
        await release.wait()
        yield default_script()[2]

    with anyio.fail_after(5):
        await to_readable_stream(slow(), keepalive=0.05).send_to(write)
    assert writes[1:3] == [b": keepalive\n\n", b": keepalive\n\n"]
    assert writes[-1].startswith(b"event: result\n")


async def test_send_to_ends_with_a_safe_error_event() -> None:
    writes = await _send_to(_items([default_script()[0], RuntimeError("secret")]), request_id="r")
    events = _sse(b"".join(writes))
    assert [e.event for e in events] == ["progress", "error"]
    assert json.loads(events[1].data) == {
        "code": "internal",
        "message": "An internal error occurred.",
        "request_id": "r",
    }


async def test_send_to_closes_the_upstream_when_cancelled() -> None:
    closed = anyio.Event()
    started = anyio.Event()

    async def upstream() -> AsyncIterator[Progress]:
        try:
            yield default_script()[0]
            started.set()
            await anyio.sleep_forever()
            yield default_script()[2]
        finally:
            closed.set()

    async def write(chunk: bytes) -> None:
        pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(to_readable_stream(upstream()).send_to, write)
        await started.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(1):
        await closed.wait()


async def test_a_run_stream_is_consumed_once() -> None:
    stream = to_readable_stream(_items(default_script()))
    await _collect(stream)
    with pytest.raises(RuntimeError, match=r"^a RunStream can be consumed only once$"):
        await stream.send_to(_noop)


async def _noop(chunk: bytes) -> None:
    del chunk
