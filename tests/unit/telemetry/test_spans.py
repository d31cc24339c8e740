"""The SCALE client's child spans (submit, polls, uploads) and the bytes it uploads.

They report to OpenTelemetry's global providers, set once for the session
(`tests.support.telemetry.global_recorder`).
"""

from __future__ import annotations

import pytest
from opentelemetry import trace

from ikproxy import ImageIO
from ikproxy.deployments.scale import Client
from ikproxy.testing import TINY_PNG, FakeScale
from tests.support.telemetry import global_recorder

pytestmark = pytest.mark.anyio


def _client(fake: FakeScale) -> Client:
    return Client(
        "http://endpoint.test",
        "fake-token",
        api_url="http://scale.test",
        transport=fake.transport(),
        retry_backoff=0.0,
        poll_schedule=lambda n: 0.0,
    )


async def test_submit_and_each_poll_are_child_spans_of_the_current_one() -> None:
    recorder = global_recorder()
    fake = FakeScale(token="fake-token", polls_before_done=2)
    tracer = trace.get_tracer("tests")
    async with _client(fake) as client:
        with tracer.start_as_current_span("request") as parent:
            await client.run(ImageIO(TINY_PNG))
    trace_id = parent.get_span_context().trace_id
    mine = [
        s
        for s in recorder.exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id == trace_id
    ]
    names = [s.name for s in mine if s.name.startswith("ikproxy.scale")]
    assert names == ["ikproxy.scale.submit", *["ikproxy.scale.poll"] * fake.count("poll")]
    assert fake.count("poll") >= 2
    parent_id = parent.get_span_context().span_id
    assert all(
        s.parent is not None and s.parent.span_id == parent_id for s in mine if s.name != "request"
    )


async def test_a_storage_upload_is_a_span_and_counts_its_bytes() -> None:
    recorder = global_recorder()
    before = recorder.total("ikproxy.uploads.bytes")
    uploads = len(recorder.spans("ikproxy.scale.upload"))
    fake = FakeScale(token="fake-token", polls_before_done=1)
    async with _client(fake) as client:
        await client.run(ImageIO(TINY_PNG), save_temporary=True)
    assert len(recorder.spans("ikproxy.scale.upload")) == uploads + 1
    assert recorder.total("ikproxy.uploads.bytes") - before == len(TINY_PNG)
