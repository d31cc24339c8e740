"""`FakeScale`: an in-memory Ikomia SCALE server, for tests.

One ASGI app answers both the JWT exchange of the SCALE API and the endpoints
of one deployment, as a real deployment does. Every request is recorded;
faults (error answers, dropped connections) can be scripted per request kind.
The app may run in another thread (`serve()`), so all shared state is guarded
by one lock.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ikproxy.io import sniff_content_type
from ikproxy.testing._png import TINY_PNG_B64
from ikproxy.testing._recording import (
    JWT_PATH,
    KINDS,
    POLL_PREFIX,
    RUN_PATH,
    WORKFLOW_PATH,
    Kind,
    RecordedRequest,
    check_kind,
    classify,
    read_body,
    record,
    replay,
)
from ikproxy.testing._storage import FakeStorage
from ikproxy.testing._transport import FakeTransport, drop_connection
from ikproxy.testing._workflow import BadRunRequest, WorkflowIndex, default_workflow

__all__ = ["FakeScale", "Fault"]

OutputsFactory = Callable[[dict[str, Any]], list[dict[str, Any]]]
"""Builds a run's wire outputs from its request body."""

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour: answer `status` with a JSON `body`, or drop the connection.

    `body=None` sends the default body, `{"message": <reason phrase>}` (for 520, a
    workflow failure: `{"message", "detail"}`). A `bytes` body is sent as is, as
    text/plain, for the HTML or text error pages that proxies return.
    """

    status: int = 503
    body: Any = None
    drop: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise TypeError(f"status must be an int, not {type(self.status).__name__}")
        if not 200 <= self.status <= 599:
            raise ValueError(f"status must be between 200 and 599, not {self.status}")

    def response(self) -> Response:
        """The answer this fault sends (not used when it drops the connection)."""
        if isinstance(self.body, bytes):
            return Response(self.body, self.status, media_type="text/plain; charset=utf-8")
        body = self.body
        if body is None:
            body = _default_fault_body(self.status)
        return JSONResponse(body, self.status)


def _default_fault_body(status: int) -> dict[str, str]:
    if status == 520:
        return {"message": "Workflow failed", "detail": "a failure scripted on the fake server"}
    try:
        return {"message": HTTPStatus(status).phrase}
    except ValueError:
        return {"message": f"HTTP {status}"}


@dataclass
class _Run:
    uuid: str
    results: list[dict[str, Any]]
    polls: int = 0


class FakeScale:
    """A fake Ikomia SCALE server: the JWT endpoint and one deployment, on one app.

    Use `transport()` for an in-process httpx client, or `serve()` for a real
    server on loopback. Options:

    * `workflow`: what `GET /workflow` answers, and what run bodies are checked
      against (task names, parameter names); default `default_workflow()`.
    * `outputs`: the wire outputs of every successful run, or a function of the
      run body that returns them; default: the run's first image input, echoed
      (a small PNG, `TINY_PNG`, when it has none).
    * `token`: the API token the JWT endpoint accepts; `jwt_expires_in`: the
      lifetime of the JWTs it issues, in seconds (real time).
    * `polls_before_done`: how many polls answer 202 (PENDING, then STARTED)
      before the one that answers SUCCESS with the results.
    * `etas`: one `[lower_ms, upper_ms]` per answer (the run answer, then each
      poll), the last one repeated; default: shrinking to `[0, 0]`.
    * `next_poll_in` (ms) and `next_poll_long`: the polling advice sent; with
      `next_poll_in=None` no advice at all, as old or serverless endpoints.
    * `long_poll_hold`: how long a long poll (`long=true`, when `next_poll_long`)
      is held open before it is answered, in seconds.
    * `legacy`: the run answer is the bare uuid string, and polls carry no advice.
    * `latency`: seconds added before every answer.
    * `storage_page_size`: objects per page of a storage look-up.

    SCALE storage is faked on the same app (`storage`: a `FakeStorage`, whose
    objects a test can read or seed); use the fake's URL as `scalefs_url`.
    Storage requests need a JWT issued with `storage=true`. A run takes
    `storage_object` inputs; one whose URL is the fake's own must name a stored
    object (else 400). By default
    a run's outputs echo its first input: an image as is, a stored object as
    `{"stored_input": {"uid", "size", "sha256", "content_type", "data_type"}}`.
    Outputs asked with `save_temporary` come back as `storage_object`s (with
    their `metadata`): an image or JSON output is stored, and a stored input
    is echoed as a copy of itself.
    """

    def __init__(
        self,
        workflow: Mapping[str, Any] | None = None,
        outputs: Sequence[Mapping[str, Any]] | OutputsFactory | None = None,
        *,
        token: str = "fake-token",
        jwt_expires_in: int = 3600,
        polls_before_done: int = 2,
        etas: Sequence[Sequence[int | None]] | None = None,
        next_poll_in: int | None = 20,
        next_poll_long: bool = False,
        long_poll_hold: float = 0.2,
        legacy: bool = False,
        latency: float = 0.0,
        storage_page_size: int = 10,
    ) -> None:
        source = default_workflow() if workflow is None else workflow
        self._index = WorkflowIndex(source)
        self.workflow: dict[str, Any] = copy.deepcopy(dict(source))
        self._outputs = _check_outputs(outputs)
        self.token = token
        self.jwt_expires_in = _non_negative("jwt_expires_in", jwt_expires_in)
        self.polls_before_done = _non_negative("polls_before_done", polls_before_done)
        self.etas = _check_etas(etas, polls_before_done)
        self.next_poll_in = (
            None if next_poll_in is None else _non_negative("next_poll_in", next_poll_in)
        )
        self.next_poll_long = next_poll_long
        self.long_poll_hold = _non_negative("long_poll_hold", long_poll_hold)
        self.legacy = legacy
        self.latency = _non_negative("latency", latency)

        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._counts: Counter[Kind] = Counter()
        self._faults: dict[Kind, deque[Fault]] = {kind: deque() for kind in KINDS}
        self._jwts: dict[str, float] = {}
        self._storage_jwts: set[str] = set()
        self._runs: dict[str, _Run] = {}
        #: The fake SCALE storage, on the same app.
        self.storage = FakeStorage(self._refuse_storage, page_size=storage_page_size)
        self.app: Starlette = _FakeApp(self)

    # -- what the test reads ---------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    def count(self, kind: Kind) -> int:
        """How many requests of `kind` were received."""
        check_kind(kind)
        with self._cond:
            return self._counts[kind]

    async def wait_for(self, kind: Kind, count: int = 1, timeout: float = 5.0) -> RecordedRequest:
        """Wait until `count` requests of `kind` have arrived; return the `count`-th one.

        Works whichever thread the app runs in: the wait happens on a condition
        variable in a worker thread, which a cancellation wakes at once.
        `TimeoutError` after `timeout` seconds.
        """
        check_kind(kind)
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        with self._cond:
            if self._counts[kind] >= count:
                return self._nth(kind, count)
        abandoned = False

        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(
                    lambda: abandoned or self._counts[kind] >= count, timeout
                )

        try:
            reached = await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            with self._cond:
                abandoned = True
                self._cond.notify_all()
            raise
        return self._after_wait(kind, count, timeout, reached)

    def wait_for_sync(self, kind: Kind, count: int = 1, timeout: float = 5.0) -> RecordedRequest:
        """`wait_for` for synchronous tests (the app must run in another thread: `serve()`)."""
        check_kind(kind)
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        with self._cond:
            reached = self._cond.wait_for(lambda: self._counts[kind] >= count, timeout)
        return self._after_wait(kind, count, timeout, reached)

    def _after_wait(self, kind: Kind, count: int, timeout: float, reached: bool) -> RecordedRequest:
        with self._cond:
            if not reached:
                raise TimeoutError(
                    f"waited {timeout} s for {count} {kind!r} request(s); "
                    f"{self._counts[kind]} arrived"
                )
            return self._nth(kind, count)

    def _nth(self, kind: Kind, n: int) -> RecordedRequest:
        return [r for r in self._requests if r.kind == kind][n - 1]

    # -- what the test scripts -------------------------------------------------

    def inject(self, kind: Kind, fault: Fault, times: int = 1) -> None:
        """Make the next `times` requests of `kind` misbehave as `fault` says (FIFO per kind)."""
        check_kind(kind)
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._cond:
            self._faults[kind].extend([fault] * times)

    def fail(self, kind: Kind, status: int = 503, body: Any = None, times: int = 1) -> None:
        """Answer the next `times` requests of `kind` with `status` and `body` (520: the
        workflow failed). Faults apply before any check, so `fail("run", 401)` works."""
        self.inject(kind, Fault(status, body), times)

    def drop(self, kind: Kind, times: int = 1) -> None:
        """Close the connection of the next `times` requests of `kind` without answering.

        Under `serve()` the socket is closed, and through `transport()` httpx raises
        `RemoteProtocolError`: both as a server that went away. Under any other
        server, the app raises `ConnectionDropped` instead (most servers answer 500).
        """
        self.inject(kind, Fault(drop=True), times)

    def expire_jwts(self) -> None:
        """Make every JWT issued so far invalid (401), as if they had all expired."""
        with self._cond:
            self._jwts.clear()
            self._storage_jwts.clear()

    # -- how the test talks to it ----------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process transport for `httpx.AsyncClient(transport=..., base_url=...)`;
        any host name reaches the fake."""
        return FakeTransport(self.app)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve the fake with uvicorn in a background thread; yield its URL
        (both the SCALE API URL and the endpoint URL). Stopped and joined on exit."""
        try:
            from ikproxy.testing._server import serve_in_thread
        except ModuleNotFoundError as exc:  # uvicorn is an optional dependency
            raise ModuleNotFoundError(
                "FakeScale.serve() needs uvicorn: pip install 'ikproxy[server]'"
            ) from exc
        with serve_in_thread(self.app, host, port) as url:
            yield url

    # -- the wire: record, delay, apply faults ---------------------------------

    async def _handle_http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Callable[[Scope, Receive, Send], Awaitable[None]],
    ) -> None:
        storage = classify(scope["path"]) == "storage"
        # Storage bodies (uploads) are streamed to disk by the handler, never buffered here.
        body = b"" if storage else await read_body(receive)
        request = record(scope, body)
        with self._cond:
            self._requests.append(request)
            self._counts[request.kind] += 1
            faults = self._faults[request.kind]
            fault = faults.popleft() if faults else None
            self._cond.notify_all()
        if self.latency:
            await anyio.sleep(self.latency)
        if fault is None:
            await route(scope, receive if storage else replay(body, receive), send)
        elif fault.drop:
            await drop_connection(receive, send)
        else:
            await fault.response()(scope, receive, send)

    # -- the endpoints ---------------------------------------------------------

    async def _on_jwt(self, request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "token" or value != self.token:
            return _error(401, "invalid or missing API token")
        if not request.query_params.get("endpoint"):
            return _error(400, "the endpoint query parameter is required")
        jwt = "fakejwt-" + secrets.token_urlsafe(24)
        with self._cond:
            self._jwts[jwt] = time.monotonic() + self.jwt_expires_in
            if request.query_params.get("storage") == "true":
                self._storage_jwts.add(jwt)
        return JSONResponse({"id_token": jwt, "expires_in": self.jwt_expires_in})

    async def _on_workflow(self, request: Request) -> Response:
        refused = self._refuse(request)
        return refused if refused is not None else JSONResponse(self.workflow)

    async def _on_run(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the run request is not valid JSON")
        try:
            self._index.check_run(body)
            self._check_stored_inputs(body, _base(request))
        except BadRunRequest as exc:
            return _error(400, str(exc))
        run = _Run(str(uuid.uuid4()), self._results_for(body, _base(request)))
        with self._cond:
            self._runs[run.uuid] = run
        if self.legacy:
            return JSONResponse(run.uuid)
        answer = {"uuid": run.uuid, "state": "PENDING", "eta": self._eta(0)}
        return JSONResponse(answer | self._advice())

    async def _on_poll(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        run_uuid = request.path_params["uuid"]
        with self._cond:
            run = self._runs.get(run_uuid)
            done = run is not None and run.polls > self.polls_before_done
        if run is None:
            return _error(404, f"unknown run {run_uuid!r}")
        held = not done and self._long_polling and request.query_params.get("long") == "true"
        if held and not await _hold_open(request, self.long_poll_hold):
            return Response(status_code=204)  # the client left: nobody reads this
        with self._cond:
            run.polls += 1
            n = run.polls
        if n > self.polls_before_done:
            return JSONResponse({"results": run.results, "state": "SUCCESS", "eta": self._eta(n)})
        state = "PENDING" if n == 1 else "STARTED"
        return JSONResponse({"state": state, "eta": self._eta(n)} | self._advice(), 202)

    # -- helpers ----------------------------------------------------------------

    def _refuse(self, request: Request) -> Response | None:
        """A 401 unless the request carries a live JWT as `Authorization: Bearer`."""
        scheme, _, jwt = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not jwt:
            return _error(401, "missing Bearer token")
        with self._cond:
            expiry = self._jwts.get(jwt)
        if expiry is None or time.monotonic() >= expiry:
            return _error(401, "invalid or expired token")
        return None

    @property
    def _long_polling(self) -> bool:
        return self.next_poll_long and not self.legacy and self.next_poll_in is not None

    def _advice(self) -> dict[str, Any]:
        if self.legacy or self.next_poll_in is None:
            return {}
        return {"next_poll_in": self.next_poll_in, "next_poll_long": self.next_poll_long}

    def _eta(self, answer: int) -> list[int | None]:
        """The ETA of a run's `answer`-th answer (0: the run answer; then each poll)."""
        return list(self.etas[min(answer, len(self.etas) - 1)])

    def _refuse_storage(self, request: Request) -> Response | None:
        """As `_refuse`, and a 403 for a JWT issued without storage rights."""
        refused = self._refuse(request)
        if refused is not None:
            return refused
        jwt = request.headers["authorization"].partition(" ")[2]
        with self._cond:
            allowed = jwt in self._storage_jwts
        if not allowed:
            return JSONResponse({"detail": "this token has no storage rights"}, 403)
        return None

    def _check_stored_inputs(self, body: dict[str, Any], base: str) -> None:
        for i, item in enumerate(body.get("inputs", [])):
            stored = item.get("storage_object")
            if stored is None:
                continue
            where = f"inputs[{i}].storage_object"
            if not isinstance(stored, Mapping) or not isinstance(stored.get("url"), str):
                raise BadRunRequest(f"{where} must be an object with a url")
            if stored.get("data_type") not in {"image", "video", "file_path", "folder_path"}:
                raise BadRunRequest(
                    f"{where}.data_type must be image, video, file_path or folder_path"
                )
            own = stored["url"].startswith(f"{base}/")
            if own and self.storage.uid_from_url(stored["url"], base) is None:
                raise BadRunRequest(f"{where}.url names no stored object")

    def _results_for(self, body: dict[str, Any], base: str) -> list[dict[str, Any]]:
        first = next(iter(body.get("inputs", [])), None)
        if callable(self._outputs):
            results = self._outputs(body)
        elif self._outputs is not None:
            results = copy.deepcopy(self._outputs)
        elif first is not None and "image" in first:
            results = [{"image": first["image"]}]
        elif first is not None and "storage_object" in first:
            results = [{"stored_input": self._describe_stored(first["storage_object"], base)}]
        else:
            results = [{"image": TINY_PNG_B64}]
        if any(o.get("save_temporary") is True for o in body.get("outputs", [])):
            results = [self._store_output(r, first, base) for r in results]
        return results

    def _describe_stored(self, stored: Mapping[str, Any], base: str) -> dict[str, Any]:
        uid = self.storage.uid_from_url(stored["url"], base)
        if uid is None:  # held elsewhere: the fake cannot read it
            return {"url": stored["url"], "data_type": stored["data_type"]}
        obj = self.storage.get(uid)
        return {
            "uid": obj.uid,
            "size": obj.size,
            "sha256": obj.sha256,
            "content_type": obj.content_type,
            "data_type": stored["data_type"],
        }

    def _store_output(
        self, result: dict[str, Any], first: dict[str, Any] | None, base: str
    ) -> dict[str, Any]:
        """A result as the deployment answers it with `save_temporary`: a storage object."""
        ((kind, data),) = result.items()
        if kind == "storage_object":
            return result
        if kind == "stored_input" and "uid" in data:
            source = self.storage.get(data["uid"])
            obj = self.storage.add(source.file.read_bytes(), content_type=source.content_type)
            data_type = data["data_type"]
        elif kind == "image":
            content = base64.b64decode(data)
            mime = sniff_content_type(content[:64]) or "application/octet-stream"
            obj = self.storage.add(content, content_type=mime)
            data_type = "image"
        else:
            obj = self.storage.add(
                json.dumps({kind: data}).encode(), content_type="application/json"
            )
            data_type = "file_path"
        return {
            "storage_object": {
                "url": self.storage.object_url(base, obj.uid),
                "data_type": data_type,
                "metadata": obj.to_json(base),
            }
        }


class _FakeApp(Starlette):
    """The fake's Starlette app; HTTP requests pass through the fake's wire layer first,
    outside Starlette's error middleware, so a dropped connection never becomes a 500."""

    def __init__(self, fake: FakeScale) -> None:
        super().__init__(
            routes=[
                Route(JWT_PATH, fake._on_jwt, methods=["GET"]),
                Route(WORKFLOW_PATH, fake._on_workflow, methods=["GET"]),
                Route(RUN_PATH, fake._on_run, methods=["PUT"]),
                Route(POLL_PREFIX + "{uuid}", fake._on_poll, methods=["GET"]),
                *fake.storage.routes(),
            ],
            exception_handlers={HTTPException: _http_exception},
        )
        self._fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await self._fake._handle_http(scope, receive, send, super().__call__)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"message": exc.detail}, exc.status_code, headers=exc.headers)


async def _hold_open(request: Request, seconds: float) -> bool:
    """Hold a long poll open for `seconds`; False if the client went away meanwhile
    (the poll then does not count, and a stopped server is not kept waiting)."""
    left = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal left
            while (await request.receive())["type"] != "http.disconnect":
                pass
            left = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    return not left


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _error(status: int, message: str) -> Response:
    return JSONResponse({"message": message}, status)


def _non_negative(name: str, value: _Number) -> _Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, not {value!r}")
    return value


def _check_outputs(
    outputs: Sequence[Mapping[str, Any]] | OutputsFactory | None,
) -> list[dict[str, Any]] | OutputsFactory | None:
    if outputs is None or callable(outputs):
        return outputs
    checked = []
    for i, item in enumerate(outputs):
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ValueError(f"outputs[{i}] must be a JSON object with exactly one key (its kind)")
        checked.append(copy.deepcopy(dict(item)))
    return checked


def _check_etas(
    etas: Sequence[Sequence[int | None]] | None, polls_before_done: int
) -> list[list[int | None]]:
    if etas is None:
        # Shrinking to [0, 0] at SUCCESS: answer i of n has n - 1 - i seconds left.
        n = polls_before_done + 2
        return [[(n - 1 - i) * 1000, (n - 1 - i) * 1500] for i in range(n)]
    checked: list[list[int | None]] = []
    for i, eta in enumerate(etas):
        if (
            isinstance(eta, (str, bytes))
            or not isinstance(eta, Sequence)
            or len(eta) != 2
            or not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in eta)
        ):
            raise ValueError(f"etas[{i}] must be a pair [lower_ms, upper_ms] of integers or None")
        checked.append(list(eta))
    if not checked:
        raise ValueError("etas must not be empty")
    return checked
