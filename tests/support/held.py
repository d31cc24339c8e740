"""Tests shared by the adapters served on loopback (their own test clients buffer streams).

A test module starts its framework's server on an app whose deployment is
`HeldRuns`, with the proxy at `/api` and two control endpoints: `/ctl/release/x`
lets run `x` finish, and `/ctl/closed/x` says whether run `x` was closed. It
defines a module-scoped `client` fixture and subclasses `HeldRunTests`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ikproxy import Progress

from .deployments import ScriptedDeployment
from .http import error_of, read_until


class HeldRuns:
    """A deployment that holds each run before its result, one `ScriptedDeployment` per prompt."""

    def __init__(self) -> None:
        self.runs: dict[str, ScriptedDeployment] = {}

    def __getitem__(self, prompt: str) -> ScriptedDeployment:
        return self.runs.setdefault(prompt, ScriptedDeployment(hold=True))

    def release_all(self) -> None:
        """Let every held run go: a held run blocks a worker thread, and so the server's exit."""
        for run in self.runs.values():
            run.release.set()

    def run_stream(
        self, *inputs: Any, parameters: Any = None, **options: Any
    ) -> AsyncIterator[Progress]:
        return self[parameters["prompt"]].run_stream(*inputs, parameters=parameters, **options)


class HeldRunTests:
    """The same endpoints, statuses and streaming behaviour, whatever the framework."""

    #: What the `authorize` hook of the app reports as the type of its request.
    request_kind: str

    def test_progress_streams_before_the_run_ends(self, client: httpx.Client) -> None:
        name = uuid.uuid4().hex[:8]
        with client.stream("GET", "/api/run", params={"prompt": name}) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            chunks = response.iter_raw()
            seen = read_until(chunks, b"event: progress", 2)
            assert b"event: result" not in seen
            client.post(f"/ctl/release/{name}").raise_for_status()
            rest = b"".join(chunks)
        assert rest.count(b"event: result") == 1

    def test_ndjson_keeps_its_exact_media_type(self, client: httpx.Client) -> None:
        name = uuid.uuid4().hex[:8]
        client.post(f"/ctl/release/{name}").raise_for_status()
        response = client.get("/api/run", params={"prompt": name, "format": "ndjson"})
        assert response.headers["content-type"] == "application/x-ndjson"
        types = [json.loads(line)["type"] for line in response.text.splitlines()]
        assert types == ["progress", "progress", "result"]

    def test_a_client_disconnect_closes_the_run(self, client: httpx.Client) -> None:
        name = uuid.uuid4().hex[:8]
        with client.stream("GET", "/api/run", params={"prompt": name}) as response:
            read_until(response.iter_raw(), b"event: progress")
        assert client.get(f"/ctl/closed/{name}").text == "closed"

    def test_the_hook_gets_the_frameworks_request(self, client: httpx.Client) -> None:
        response = client.get("/api/run", params={"prompt": "x"}, headers={"X-Who": "1"})
        assert error_of(response) == (403, "forbidden", self.request_kind)

    def test_a_bad_parameter_gets_400(self, client: httpx.Client) -> None:
        response = client.get("/api/run")
        assert error_of(response) == (
            400,
            "invalid_parameter",
            "missing required parameter 'prompt'",
        )

    def test_a_declared_oversized_body_gets_413(self, client: httpx.Client) -> None:
        response = client.post(
            "/api/run", content=b"x" * 2000, headers={"Content-Type": "application/json"}
        )
        assert error_of(response) == (413, "payload_too_large", "request body exceeds 1000 bytes")

    def test_an_undeclared_oversized_body_gets_413_while_it_arrives(
        self, client: httpx.Client
    ) -> None:
        def body() -> Iterator[bytes]:
            for _ in range(100):
                yield b"x" * 500

        response = client.post(
            "/api/run", content=body(), headers={"Content-Type": "application/json"}
        )
        assert error_of(response) == (413, "payload_too_large", "request body exceeds 1000 bytes")

    def test_every_path_under_the_prefix_is_the_proxys(self, client: httpx.Client) -> None:
        health = client.get("/api/health")
        head = client.head("/api/health")
        missing = client.get("/api/nothing")
        wrong = client.options("/api/run")
        assert health.json()["status"] == "ok"
        assert head.status_code == 200
        assert head.headers["content-length"] == health.headers["content-length"]
        assert error_of(missing) == (404, "not_found", "no such endpoint: /nothing")
        assert error_of(wrong) == (405, "method_not_allowed", "method OPTIONS not allowed on /run")
        assert wrong.headers["allow"] == "GET, POST"
