"""Resume without a store: event ids carry a sealed reference to the SCALE run (resume_secret)."""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import time
import uuid as uuid_module
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import ImageIO, LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.codecs.sse import ServerSentEvent, SSEDecoder
from ikproxy.deployments.scale import Client
from ikproxy.policy import Policy
from ikproxy.protocol import parse_position
from ikproxy.runs.sealed import ExpiredReference, InvalidReference, Sealer
from ikproxy.testing import TINY_PNG, FakeScale
from tests.support.deployments import ScriptedDeployment
from tests.support.servers import serving

SECRET = b"0123456789abcdef0123456789abcdef-shared-by-every-instance"
RUN_UUID = "5f0c2a43-1e8b-4c53-9d5e-0a1b2c3d4e5f"


# -- the sealing itself ------------------------------------------------------------------------


def test_a_reference_opens_for_its_caller_only() -> None:
    sealer = Sealer(SECRET)
    reference = sealer.seal(RUN_UUID, "alice", time.time() + 60)
    assert sealer.open(reference, "alice") == RUN_UUID
    assert Sealer(SECRET.decode()).open(reference, "alice") == RUN_UUID  # str secrets too
    with pytest.raises(InvalidReference):
        sealer.open(reference, "bob")
    with pytest.raises(InvalidReference):
        Sealer(b"another secret, just as long as the first").open(reference, "alice")


def test_a_reference_is_short_url_safe_and_never_holds_the_uuid() -> None:
    sealer = Sealer(SECRET)
    reference = sealer.seal(RUN_UUID, "alice", time.time() + 60)
    assert len(reference) <= 80
    assert set(reference) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    raw = base64.urlsafe_b64decode(reference + "=" * (-len(reference) % 4))
    parsed = uuid_module.UUID(RUN_UUID)
    for clear in (RUN_UUID.encode(), parsed.bytes, parsed.hex.encode(), b"alice"):
        assert clear not in raw
    # Two seals of the same run differ (a fresh nonce each time).
    assert sealer.seal(RUN_UUID, "alice", 10**10) != sealer.seal(RUN_UUID, "alice", 10**10)


def test_any_upstream_id_round_trips() -> None:
    sealer = Sealer(SECRET)
    for run_id in ("legacy-id-42", "ÉTÉ", "x" * 256, RUN_UUID.upper()):
        assert sealer.open(sealer.seal(run_id, "k", time.time() + 5), "k") == run_id
    with pytest.raises(ValueError, match="1 to 256 bytes"):
        sealer.seal("x" * 257, "k", time.time() + 5)


def test_every_altered_byte_is_refused() -> None:
    sealer = Sealer(SECRET)
    reference = sealer.seal(RUN_UUID, "alice", time.time() + 60)
    raw = bytearray(base64.urlsafe_b64decode(reference + "=" * (-len(reference) % 4)))
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
        with pytest.raises(InvalidReference):
            sealer.open(text, "alice")
    for garbage in ("", "!!!", reference[:20], reference + "AAAA"):
        with pytest.raises(InvalidReference):
            sealer.open(garbage, "alice")


def test_only_the_canonical_text_of_a_reference_opens() -> None:
    sealer = Sealer(SECRET)
    reference = sealer.seal(RUN_UUID, "alice", time.time() + 60)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(reference[-1])
    spare_bits = {2: 4, 3: 2}.get(len(reference) % 4, 0)  # bits base64 leaves unused at the end
    same_bytes = [reference[:-1] + alphabet[last ^ bit] for bit in range(1, 1 << spare_bits)]
    for text in [
        reference + "!!!!",
        reference + "=",
        reference + "==",
        reference + "\n",
        " " + reference,
        reference[:10] + "!" + reference[10:],
        reference[:10] + "+" + reference[11:],  # the standard alphabet, not url-safe
        *same_bytes,
    ]:
        with pytest.raises(InvalidReference):
            sealer.open(text, "alice")
    assert sealer.open(reference, "alice") == RUN_UUID


def test_an_expired_reference_is_refused() -> None:
    sealer = Sealer(SECRET)
    reference = sealer.seal(RUN_UUID, "alice", 1000.0)
    assert sealer.open(reference, "alice", now=999.0) == RUN_UUID
    with pytest.raises(ExpiredReference):
        sealer.open(reference, "alice", now=1000.0)


def test_the_secret_is_checked_and_never_shown() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Sealer(b"short")
    with pytest.raises(TypeError, match="bytes or str"):
        Sealer(42)  # type: ignore[arg-type]
    assert SECRET.decode() not in repr(Sealer(SECRET))
    assert SECRET.decode() not in repr(Policy(resume_window=5, resume_secret=SECRET))
    with pytest.raises(ValueError, match="`resume_secret`: needs resume_window"):
        Policy(resume_secret=SECRET)


def test_without_the_cryptography_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'ikproxy\[resume\]'"):
        Sealer(SECRET)


# -- two proxy instances sharing the secret -------------------------------------------------


class Instances:
    """Two proxy apps (as on two machines) on one fake SCALE deployment."""

    def __init__(self, fake: FakeScale, **options: Any) -> None:
        self.fake = fake
        self.options = options
        self.servers = contextlib.ExitStack()

    def app(self, **overrides: Any) -> httpx.Client:
        """A client of a new instance, served for real: a cut stream must really be cut
        (the TestClient of Python 3.10 reads a whole stream before it answers)."""
        options = {
            "resume_window": 30.0,
            "resume_secret": SECRET,
            "rate_limit": None,
            "parameters": {"prompt": str},
            **self.options,
            **overrides,
        }
        deployment = Client(
            "http://endpoint.test",
            self.fake.token,
            api_url="http://scale.test",
            transport=self.fake.transport(),
            poll_schedule=lambda n: 0.0,
        )
        app = Starlette(routes=[Mount("/api", app=create_app(deployment, **options))])
        return self.servers.enter_context(serving(app))

    def close(self) -> None:
        self.servers.close()


@pytest.fixture
def instances() -> Iterator[Instances]:
    made: list[Instances] = []

    def make(fake: FakeScale, **options: Any) -> Instances:
        made.append(Instances(fake, **options))
        return made[-1]

    yield make  # type: ignore[misc]
    for each in made:
        each.close()


def events_until(chunks: Iterator[bytes], count: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    while len(events) < count:
        events += decoder.feed(next(chunks))
    return events


def sse(content: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(content) + decoder.close()


def start_and_cut(client: httpx.Client, count: int, **headers: str) -> list[ServerSentEvent]:
    with client.stream("GET", "/api/run", params={"prompt": "x"}, headers=headers) as response:
        assert response.status_code == 200
        return events_until(response.iter_bytes(), count)


def test_a_run_cut_on_one_instance_resumes_on_another(instances: Any) -> None:
    fake = FakeScale(polls_before_done=4, next_poll_in=10)
    pair = instances(fake)
    a, b = pair.app(), pair.app()
    seen = start_and_cut(a, 2)
    token, count = parse_position(seen[-1].id or "") or ("", 0)
    assert token.startswith("s.")
    assert count == 2
    assert all((e.id or "").startswith("s.") for e in seen)
    first = json.loads(seen[0].data)

    resumed = b.get("/api/run", headers={"Last-Event-ID": seen[-1].id or ""})
    assert resumed.status_code == 200
    rest = sse(resumed.content)
    # The current progress, then the rest, numbered on from the last id seen.
    assert [parse_position(e.id or "")[1] for e in rest] == list(range(3, 3 + len(rest)))  # type: ignore[index]
    assert [e.event for e in rest[:-1]] == ["progress"] * (len(rest) - 1)
    assert rest[-1].event == "result"
    assert len({e.id for e in seen + rest}) == len(seen + rest)
    final = json.loads(rest[-1].data)
    assert (final["uuid"], final["run_id"], final["name"]) == (
        first["uuid"],
        first["run_id"],
        first["name"],
    )
    assert final["results"]["outputs"] == [{"image": ImageIO(TINY_PNG).to_base64()}]
    assert fake.count("run") == 1  # resumed by attaching, never by running again
    results = process_readable_stream_sync([resumed.content])
    assert results.get_output(0) == ImageIO(TINY_PNG)


def test_a_finished_run_resumes_in_ndjson_with_its_result(instances: Any) -> None:
    fake = FakeScale(polls_before_done=1, next_poll_in=10)
    pair = instances(fake)
    a, b = pair.app(), pair.app()
    first = a.get("/api/run", params={"prompt": "x", "format": "ndjson"})
    lines = [json.loads(line) for line in first.content.splitlines()]
    assert lines[-1]["type"] == "result"
    again = b.get("/api/run", params={"format": "ndjson", "last_event_id": lines[0]["id"]})
    assert again.status_code == 200
    replayed = [json.loads(line) for line in again.content.splitlines()]
    assert [line["type"] for line in replayed] == ["result"]
    assert replayed[0]["id"].startswith("s.")
    assert replayed[0]["id"].endswith(":2")
    assert replayed[0]["results"] == lines[-1]["results"]


def key_by_user(request: Any) -> str:
    return str(request.headers.get("x-user", "nobody"))


def test_a_reference_sealed_for_another_key_is_refused(instances: Any) -> None:
    fake = FakeScale(polls_before_done=3, next_poll_in=10)
    pair = instances(fake, rate_limit_key=key_by_user)
    a, b = pair.app(), pair.app()
    last = start_and_cut(a, 1, **{"X-User": "alice"})[-1].id or ""
    polls = fake.count("poll")
    stolen = b.get("/api/run", headers={"Last-Event-ID": last, "X-User": "mallory"})
    assert stolen.status_code == 410
    assert stolen.json()["error"]["code"] == "resume_expired"
    assert fake.count("poll") == polls  # refused before touching the upstream
    mine = b.get("/api/run", headers={"Last-Event-ID": last, "X-User": "alice"})
    assert mine.status_code == 200
    assert sse(mine.content)[-1].event == "result"


def test_an_async_key_hook_binds_references_too(instances: Any) -> None:
    async def key(request: Any) -> str:
        return key_by_user(request)

    fake = FakeScale(polls_before_done=1, next_poll_in=10)
    pair = instances(fake, rate_limit_key=key)
    a, b = pair.app(), pair.app()
    last = start_and_cut(a, 1, **{"X-User": "alice"})[-1].id or ""
    assert b.get("/api/run", headers={"Last-Event-ID": last, "X-User": "bob"}).status_code == 410
    assert b.get("/api/run", headers={"Last-Event-ID": last, "X-User": "alice"}).status_code == 200


def test_a_tampered_id_is_gone(instances: Any) -> None:
    fake = FakeScale(polls_before_done=3, next_poll_in=10)
    pair = instances(fake)
    a, b = pair.app(), pair.app()
    last = start_and_cut(a, 1)[-1].id or ""
    token, _ = parse_position(last) or ("", 0)
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for forged in (f"{flipped}:1", f"s.{'A' * 70}:1", "s.:1", f"{token[:-4]}:1"):
        gone = b.get("/api/run", headers={"Last-Event-ID": forged})
        assert gone.status_code == 410, forged
        assert gone.json()["error"] == {
            "code": "resume_expired",
            "message": "the run to resume is unknown or has expired",
            "request_id": gone.headers["x-request-id"],
        }
    # Only the number after the reference is the client's to change.
    assert b.get("/api/run", headers={"Last-Event-ID": f"{token}:7"}).status_code == 200


def test_an_expired_reference_is_gone(instances: Any) -> None:
    fake = FakeScale(polls_before_done=3, next_poll_in=10)
    pair = instances(fake)
    a, b = pair.app(), pair.app()
    run_uuid = json.loads(start_and_cut(a, 1)[0].data)["uuid"]
    # Genuine references to a run the deployment knows, for this caller (the client.s
    # address): one expired a second ago, one still good.
    sealer = Sealer(SECRET)
    expired = sealer.seal(run_uuid, "127.0.0.1", time.time() - 1)
    gone = b.get("/api/run", headers={"Last-Event-ID": f"s.{expired}:1"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resume_expired"
    good = sealer.seal(run_uuid, "127.0.0.1", time.time() + 60)
    assert b.get("/api/run", headers={"Last-Event-ID": f"s.{good}:1"}).status_code == 200


def test_a_reference_to_a_run_the_upstream_forgot_is_gone(instances: Any) -> None:
    fake = FakeScale()
    b = instances(fake).app()
    reference = Sealer(SECRET).seal(RUN_UUID, "127.0.0.1", time.time() + 60)
    gone = b.get("/api/run", headers={"Last-Event-ID": f"s.{reference}:4"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resume_expired"
    assert fake.count("poll") == 1


def test_an_instance_without_the_secret_cannot_resume(instances: Any) -> None:
    fake = FakeScale(polls_before_done=3, next_poll_in=10)
    pair = instances(fake)
    a = pair.app()
    plain = pair.app(resume_secret=None)
    other = pair.app(resume_secret=b"z" * 32)
    last = start_and_cut(a, 1)[-1].id or ""
    for client in (plain, other):
        assert client.get("/api/run", headers={"Last-Event-ID": last}).status_code == 410


def test_a_local_deployment_never_gets_sealed_ids() -> None:
    def answer(*, prompt: str) -> dict[str, str]:
        return {"text": prompt.upper()}

    for deployment in (LocalDeployment({"answer": answer}), ScriptedDeployment()):
        app = Starlette(
            routes=[
                Mount(
                    "/api",
                    app=create_app(
                        deployment,
                        resume_window=30.0,
                        resume_secret=SECRET,
                        rate_limit=None,
                        parameters={"prompt": str},
                    ),
                )
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = TestClient(app)
        with client:
            events = sse(client.get("/api/run", params={"prompt": "x"}).content)
            assert events[-1].event == "result"
            ids = [e.id or "" for e in events]
            assert not any(i.startswith("s.") for i in ids)
            # Still resumable the in-memory way.
            again = client.get("/api/run", headers={"Last-Event-ID": ids[0]})
            assert again.status_code == 200
            assert [e.id for e in sse(again.content)] == ids[1:]


def test_sealed_resume_on_wsgi_instances() -> None:
    import flask

    from ikproxy.adapters.flask import blueprint

    fake = FakeScale(polls_before_done=2, next_poll_in=10)
    apps = []
    for _ in range(2):
        deployment = Client(
            "http://endpoint.test",
            fake.token,
            api_url="http://scale.test",
            transport=fake.transport(),
            poll_schedule=lambda n: 0.0,
        )
        app = flask.Flask(__name__)
        app.register_blueprint(
            blueprint(
                deployment,
                url_prefix="/api",
                resume_window=30.0,
                resume_secret=SECRET,
                rate_limit=None,
                rate_limit_key=key_by_user,
                parameters={"prompt": str},
            )
        )
        apps.append(app.test_client())
    a, b = apps
    events = sse(a.get("/api/run?prompt=x", headers={"X-User": "alice"}).get_data())
    assert events[-1].event == "result"
    assert all((e.id or "").startswith("s.") for e in events)
    refused = b.get("/api/run", headers={"Last-Event-ID": events[0].id or "", "X-User": "bob"})
    assert refused.status_code == 410
    resumed = b.get("/api/run", headers={"Last-Event-ID": events[0].id or "", "X-User": "alice"})
    assert resumed.status_code == 200
    rest = sse(resumed.get_data())
    assert [e.event for e in rest] == ["result"]
    assert json.loads(rest[0].data)["results"] == json.loads(events[-1].data)["results"]
    assert fake.count("run") == 1
