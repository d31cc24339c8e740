"""Outputs by reference: large outputs leave the stream as URLs the proxy serves, ranges included."""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync, run_sync
from ikproxy.io import ImageIO, RefIO
from ikproxy.proxy.outputs import OutputStore, RangeNotSatisfiable, parse_range
from tests.support.http import error_of

BIG = b"\x89PNG\r\n\x1a\n" + os.urandom(50_000)
SMALL = b"\x89PNG\r\n\x1a\n" + b"small"


def _deployment() -> LocalDeployment:
    deployment = LocalDeployment()

    @deployment.task
    def outputs() -> list[bytes]:
        return [BIG, SMALL]

    return deployment


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(_deployment(), rate_limit=None, inline_output_limit=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(Starlette(routes=[Mount("/api", app=app)])) as client:
            client.app_state = app.state  # type: ignore[attr-defined]
            yield client


def _results(client: TestClient, url: str = "/api/run") -> Any:
    response = client.get(url)
    assert response.status_code == 200
    return process_readable_stream_sync([response.content])


def test_a_large_image_comes_by_reference_and_a_small_one_inline(client: TestClient) -> None:
    results = _results(client)
    ref = results.get_output(0, expect=RefIO)
    assert ref.url.startswith("outputs/")
    assert ref.url.endswith("/0")
    assert (ref.of, ref.content_type, ref.size) == ("image", "image/png", len(BIG))
    assert len(ref.url.split("/")[1]) >= 43  # secrets.token_urlsafe(32)
    assert results.get_output(1, expect=ImageIO).to_bytes() == SMALL
    response = client.get("/api/" + ref.url)
    assert response.status_code == 200
    assert response.content == BIG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(BIG))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


def test_range_requests(client: TestClient) -> None:
    url = "/api/" + _results(client).get_output(0).url
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == BIG[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(BIG)}"
    assert part.headers["content-length"] == "10"
    tail = client.get(url, headers={"Range": "bytes=-7"})
    assert (tail.status_code, tail.content) == (206, BIG[-7:])
    rest = client.get(url, headers={"Range": f"bytes={len(BIG) - 3}-"})
    assert (rest.status_code, rest.content) == (206, BIG[-3:])
    over = client.get(url, headers={"Range": "bytes=0-99999999"})
    assert (over.status_code, over.content) == (206, BIG)
    beyond = client.get(url, headers={"Range": f"bytes={len(BIG)}-"})
    assert error_of(beyond) == (
        416,
        "range_not_satisfiable",
        f"the range is outside the output ({len(BIG)} bytes)",
    )
    assert beyond.headers["content-range"] == f"bytes */{len(BIG)}"
    several = client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, BIG)  # ignored, as RFC 9110 allows


def test_head_gives_the_headers_only(client: TestClient) -> None:
    url = "/api/" + _results(client).get_output(0).url
    response = client.head(url)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(BIG))
    assert response.content == b""


def test_unknown_tokens_indexes_and_methods_are_refused(client: TestClient) -> None:
    url = "/api/" + _results(client).get_output(0).url
    token = url.split("/")[3]
    assert error_of(client.get(f"/api/outputs/{'x' * 43}/0")) == (
        404,
        "not_found",
        "no such output",
    )
    assert error_of(client.get(f"/api/outputs/{token}/1"))[0] == 404  # inline: not served
    assert error_of(client.get(f"/api/outputs/{token}/9"))[0] == 404
    assert error_of(client.get(f"/api/outputs/{token}/-1"))[0] == 404
    assert error_of(client.get(f"/api/outputs/{token}"))[0] == 404
    refused = client.post(url)
    assert error_of(refused) == (405, "method_not_allowed", "method POST not allowed on an output")
    assert refused.headers["allow"] == "GET, HEAD"


def test_expired_outputs_are_gone(client: TestClient) -> None:
    store: OutputStore = client.app_state.proxy.outputs  # type: ignore[attr-defined]
    now = [1000.0]
    store.clock = lambda: now[0]
    url = "/api/" + _results(client).get_output(0).url
    now[0] += store.window - 1
    assert client.get(url).status_code == 200
    now[0] += 2
    assert error_of(client.get(url)) == (410, "output_expired", "this output has expired")
    assert len(store) == 0


def test_run_with_a_trailing_slash_gets_a_url_that_resolves_back_to_the_mount(
    client: TestClient,
) -> None:
    ref = _results(client, "/api/run/").get_output(0)
    assert ref.url.startswith("../outputs/")
    resolved = httpx.URL("http://testserver/api/run/").join(ref.url)
    assert resolved.path.startswith("/api/outputs/")
    assert client.get(str(resolved)).content == BIG


def test_the_python_consumer_downloads_lazily_with_the_callers_client(client: TestClient) -> None:
    results = run_sync("http://testserver/api/run", client=client)
    ref = results.get_output(0, expect=RefIO)
    assert ref.url.startswith("http://testserver/api/outputs/")
    assert ref.read() == BIG
    assert ref.to_image().mime_type == "image/png"


def test_no_limit_keeps_every_image_inline() -> None:
    app = create_app(_deployment(), rate_limit=None, inline_output_limit=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(Starlette(routes=[Mount("/api", app=app)]))
    results = _results(client)
    assert results.get_output(0, expect=ImageIO).to_bytes() == BIG


def test_store_expiry_files_and_bounds(tmp_path: Any) -> None:
    from ikproxy.proxy.outputs import FileBody, InlineBody

    now = [0.0]
    store = OutputStore(10, max_runs=2, clock=lambda: now[0])
    path = store.file_path(".bin")
    path.write_bytes(b"abc")
    first = store.put([FileBody(path, "video/mp4", 3, owned=True)])
    second = store.put([None, InlineBody(b"x", "image/png")])
    third = store.put([InlineBody(b"y", "image/png")])  # the oldest (first) goes
    assert not path.exists()
    with pytest.raises(LookupError):
        store.get(first, 0)
    assert store.get(second, 1).size == 1
    with pytest.raises(KeyError):
        store.get(second, 0)
    now[0] = 11
    assert len(store) == 0
    with pytest.raises(LookupError):
        store.get(third, 0)
    store.close()


def test_parse_range() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range("bytes=2-", 10) == (2, 10)
    assert parse_range("bytes=-3", 10) == (7, 10)
    assert parse_range("bytes=-30", 10) == (0, 10)
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=0-1,3-4", 10) is None
    for unsatisfiable in ("bytes=10-", "bytes=-0", "bytes=12-20"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(unsatisfiable, 10)


# -- the URL resolves on every surface: Flask and Django --------------------------------


def test_flask_blueprint_serves_outputs_under_its_prefix() -> None:
    from flask import Flask

    from ikproxy.adapters.flask import blueprint

    app = Flask(__name__)
    app.register_blueprint(
        blueprint(
            _deployment(), url_prefix="/deep/api", rate_limit=None, inline_output_limit=10_000
        )
    )
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://flask") as http:
        results = run_sync("http://flask/deep/api/run", client=http)
        ref = results.get_output(0, expect=RefIO)
        assert ref.url.startswith("http://flask/deep/api/outputs/")
        assert ref.read() == BIG
        part = http.get(ref.url, headers={"Range": "bytes=100-199"})
        assert (part.status_code, part.content) == (206, BIG[100:200])
        assert part.headers["content-length"] == "100"


@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
def test_django_urls_serve_outputs_under_their_prefix(handler: str) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings
    from django.urls import include, path

    import ikproxy.adapters.django
    from ikproxy.browser import run
    from tests.unit.surfaces import test_adapter_django  # noqa: F401  (configures Django as the adapter tests do)

    urlconf = types.ModuleType("ikproxy_output_urls")
    urlconf.urlpatterns = [  # type: ignore[attr-defined]
        path(
            "site/api/",
            include(
                ikproxy.adapters.django.urls(
                    _deployment(), rate_limit=None, inline_output_limit=10_000
                )
            ),
        )
    ]
    base = "http://testserver/site/api"
    with override_settings(ROOT_URLCONF=urlconf):
        if handler == "wsgi":
            transport = httpx.WSGITransport(app=WSGIHandler())
            with httpx.Client(transport=transport, base_url="http://testserver") as http:
                ref = run_sync(f"{base}/run", client=http).get_output(0, expect=RefIO)
                body = ref.read()
                part = http.get(ref.url, headers={"Range": "bytes=-10", "Accept-Encoding": "gzip"})
        else:

            async def fetch() -> tuple[RefIO, bytes, httpx.Response]:
                transport = httpx.ASGITransport(app=ASGIHandler())
                async with httpx.AsyncClient(transport=transport) as http:
                    ref = (await run(f"{base}/run", client=http)).get_output(0, expect=RefIO)
                    body = await ref.aread()
                    headers = {"Range": "bytes=-10", "Accept-Encoding": "gzip"}
                    return ref, body, await http.get(ref.url, headers=headers)

            ref, body, part = anyio.run(fetch)
    assert ref.url.startswith(f"{base}/outputs/")
    assert body == BIG
    assert (part.status_code, part.content) == (206, BIG[-10:])
    assert part.headers["content-range"] == f"bytes {len(BIG) - 10}-{len(BIG) - 1}/{len(BIG)}"


def test_ref_wire_form_is_checked_and_an_unbound_ref_says_how_to_read_it() -> None:
    from ikproxy.io import io_from_json

    ref = io_from_json(
        {"ref": {"url": "outputs/t/0", "kind": "image", "content_type": "image/png", "size": 3}}
    )
    assert isinstance(ref, RefIO)
    assert ref.to_json() == {
        "ref": {"url": "outputs/t/0", "kind": "image", "content_type": "image/png", "size": 3}
    }
    with pytest.raises(RuntimeError, match="fetch its url"):
        ref.read()
    for bad in (
        {"kind": "image"},
        {"url": 3},
        {"url": "x", "size": -1},
        {"url": "x", "size": True},
    ):
        with pytest.raises(ValueError, match="ref"):
            io_from_json({"ref": bad})
