"""Request parsing refuses hostile bodies with a 4xx and a JSON error: never a 500, never half-used."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy.asgi import create_app
from ikproxy.policy import HTTPError, Param
from tests.support.deployments import ScriptedDeployment
from tests.support.http import multipart
from tests.support.images import HOSTILE_IMAGES, png, png_bomb


@pytest.fixture
def deployment() -> ScriptedDeployment:
    return ScriptedDeployment()


@pytest.fixture
def client(deployment: ScriptedDeployment) -> Iterator[TestClient]:
    app = create_app(
        deployment,
        parameters={"prompt": Param(str, required=True)},
        rate_limit=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(
            Starlette(routes=[Mount("/api", app=app)]), raise_server_exceptions=False
        )
    with client:
        yield client


def _refused(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def _post_multipart(client: TestClient, body: bytes, boundary: str) -> Any:
    return client.post(
        "/api/run",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


# -- JSON ------------------------------------------------------------------------------------


def test_json_nested_a_thousand_levels_is_a_400(client: TestClient) -> None:
    body = '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/api/run", content=body, headers={"Content-Type": "application/json"})
    assert _refused(response, 400, "bad_request") == "request body is nested too deeply"


def test_json_integer_of_more_than_4300_digits_is_a_400(client: TestClient) -> None:
    body = '{"prompt": ' + "9" * 5000 + "}"
    response = client.post("/api/run", content=body, headers={"Content-Type": "application/json"})
    message = _refused(response, 400, "bad_request")
    assert message == "request body holds an integer too long to read"


def test_json_duplicated_key_is_a_400(client: TestClient, deployment: ScriptedDeployment) -> None:
    body = '{"prompt": "a", "prompt": "b"}'
    response = client.post("/api/run", content=body, headers={"Content-Type": "application/json"})
    assert _refused(response, 400, "invalid_parameter") == "parameter 'prompt' given more than once"
    assert deployment.calls == []


# -- query strings and forms -------------------------------------------------------------------


def test_query_with_invalid_utf8_is_a_400_not_replaced(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    response = client.get("/api/run?prompt=%ff%fe")
    assert _refused(response, 400, "bad_request") == "query string is not valid UTF-8"
    assert deployment.calls == []


def test_form_with_invalid_utf8_escape_is_a_400_not_replaced(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    response = client.post(
        "/api/run",
        content=b"prompt=%ff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert _refused(response, 400, "bad_request") == "form body is not valid UTF-8"
    assert deployment.calls == []


# -- multipart -----------------------------------------------------------------------------------


def test_multipart_boundary_longer_than_the_parser_takes_is_a_400(client: TestClient) -> None:
    boundary = "b" * 300
    body = multipart([("prompt", b"a cat", False)], boundary=boundary, filename="x.png")
    response = _post_multipart(client, body, boundary)
    assert _refused(response, 400, "bad_request") == "multipart boundary is too long"


def test_multipart_without_closing_boundary_is_refused_not_half_used(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    boundary = "xyz"
    parts = [("prompt", b"a cat", False), ("image", png(), True)]
    response = _post_multipart(
        client, multipart(parts, close=False, boundary=boundary, filename="x.png"), boundary
    )
    assert _refused(response, 400, "bad_request") == "multipart body is incomplete"
    assert deployment.calls == []


def test_multipart_cut_inside_a_part_is_refused(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    boundary = "xyz"
    body = multipart(
        [("prompt", b"a cat", False), ("image", png(), True)], boundary=boundary, filename="x.png"
    )
    response = _post_multipart(client, body[: len(body) - 40], boundary)
    assert _refused(response, 400, "bad_request") == "multipart body is incomplete"
    assert deployment.calls == []


def test_well_formed_multipart_still_runs_with_its_image(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    boundary = "xyz"
    body = multipart(
        [("prompt", b"a cat", False), ("image", png(), True)], boundary=boundary, filename="x.png"
    )
    response = _post_multipart(client, body, boundary)
    assert response.status_code == 200
    assert deployment.calls[0]["parameters"] == {"prompt": "a cat"}
    assert len(deployment.calls[0]["inputs"]) == 1


# -- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_hostile_upload_is_refused_before_the_run(
    client: TestClient, deployment: ScriptedDeployment, name: str
) -> None:
    data, status = HOSTILE_IMAGES[name]
    boundary = "xyz"
    body = multipart(
        [("prompt", b"a cat", False), ("image", data, True)], boundary=boundary, filename="x.png"
    )
    response = _post_multipart(client, body, boundary)
    code = "payload_too_large" if status == 413 else "unsupported_media_type"
    _refused(response, status, code)
    assert deployment.calls == []


@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_hostile_json_image_is_refused_before_the_run(
    client: TestClient, deployment: ScriptedDeployment, name: str
) -> None:
    data, status = HOSTILE_IMAGES[name]
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    body = json.dumps({"prompt": "a cat", "image": url})
    response = client.post("/api/run", content=body, headers={"Content-Type": "application/json"})
    code = "payload_too_large" if status == 413 else "unsupported_media_type"
    _refused(response, status, code)
    assert deployment.calls == []


def test_image_pixel_limit_is_a_policy_option(deployment: ScriptedDeployment) -> None:
    app = create_app(deployment, parameters={"prompt": str}, rate_limit=None, max_image_pixels=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = TestClient(app)
    body = json.dumps({"image": base64.b64encode(png(11)).decode()})
    response = client.post("/run", content=body, headers={"Content-Type": "application/json"})
    message = _refused(response, 413, "payload_too_large")
    assert message == "the image is 11x11 pixels: at most 100 pixels are accepted"
    body = json.dumps({"image": base64.b64encode(png(10)).decode()})
    response = client.post("/run", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200


def test_verify_image_names_the_size_of_a_bomb() -> None:
    from ikproxy.proxy.images import verify_image

    with pytest.raises(HTTPError) as caught:
        verify_image(png_bomb(8000, 8000), max_pixels=40_000_000)
    assert caught.value.status == 413
    assert caught.value.message == (
        "the image is 8000x8000 pixels: at most 40000000 pixels are accepted"
    )
    with pytest.raises(HTTPError) as caught:  # beyond Pillow's own limit: sized from the header too
        verify_image(png_bomb(20000, 20000), max_pixels=40_000_000)
    assert caught.value.message == (
        "the image is 20000x20000 pixels: at most 40000000 pixels are accepted"
    )


def test_verify_image_keeps_pillows_global_limit() -> None:
    from PIL import Image

    from ikproxy.proxy.images import verify_image

    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(HTTPError):
        verify_image(png(), max_pixels=10)
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("name", ["ppm-bomb", "qoi-bomb", "psd-bomb", "png-bomb-20000x20000"])
def test_image_format_of_a_bomb_is_unknown_not_an_exception(name: str) -> None:
    from ikproxy import ImageIO

    image = ImageIO.from_bytes(HOSTILE_IMAGES[name][0])
    assert image.format in (None, "PNG")


# -- bodies ------------------------------------------------------------------------------------


def _short_request() -> Any:
    from ikproxy.proxy.parsing import ProxyRequest

    headers = {"content-length": "1000", "content-type": "application/x-www-form-urlencoded"}
    return ProxyRequest("POST", "/run", "", headers)


def test_a_body_shorter_than_its_content_length_is_refused_not_half_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ikproxy.proxy.parsing import read_body_sync

    with caplog.at_level("INFO", logger="ikproxy"), pytest.raises(HTTPError) as caught:
        read_body_sync(_short_request(), [b"prompt=a"], 64 * 1024, request_id="r1")
    assert (caught.value.status, caught.value.message) == (
        400,
        "the request body could not be read",
    )
    assert [r.getMessage() for r in caplog.records] == [
        "request body not received: the client left or sent a malformed body "
        "[request_id=r1 error=ended after 8 of 1000 bytes]"
    ]


@pytest.mark.anyio
async def test_a_short_async_body_is_refused_too() -> None:
    from ikproxy.proxy.parsing import read_body

    async def body() -> Any:
        yield b"prompt=a"

    with pytest.raises(HTTPError) as caught:
        await read_body(_short_request(), body(), 64 * 1024)
    assert caught.value.status == 400


def _short_multipart() -> tuple[Any, list[bytes]]:
    """A complete multipart body of one field, sent under a longer `Content-Length`."""
    from ikproxy.proxy.parsing import ProxyRequest

    body = b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n--B--\r\n'
    headers = {"content-length": "1000", "content-type": "multipart/form-data; boundary=B"}
    return ProxyRequest("POST", "/run", "", headers), [body]


def test_a_short_multipart_body_read_while_parsed_is_refused(tmp_path: Any) -> None:
    from ikproxy.policy import Policy
    from ikproxy.proxy.parsing import read_run_request_sync
    from ikproxy.proxy.uploads import UploadDir

    request, body = _short_multipart()
    policy = Policy(parameters={"prompt": str})
    with pytest.raises(HTTPError) as caught:
        read_run_request_sync(request, body, policy, "r1", UploadDir())
    assert (caught.value.status, caught.value.message) == (
        400,
        "the request body could not be read",
    )


@pytest.mark.anyio
async def test_a_short_async_multipart_body_read_while_parsed_is_refused() -> None:
    from ikproxy.policy import Policy
    from ikproxy.proxy.parsing import read_run_request
    from ikproxy.proxy.uploads import UploadDir

    request, chunks = _short_multipart()

    async def body() -> Any:
        for chunk in chunks:
            yield chunk

    with pytest.raises(HTTPError) as caught:
        await read_run_request(
            request, body(), Policy(parameters={"prompt": str}), "r1", UploadDir()
        )
    assert caught.value.status == 400


# -- many fields ---------------------------------------------------------------------------------

MANY = 150_000
TOO_MANY = (413, "payload_too_large", "too many form fields: at most 1000 per request")


def test_a_multipart_body_of_150000_tiny_fields_is_refused_at_the_cap(
    client: TestClient, deployment: ScriptedDeployment
) -> None:
    body = multipart([(f"f{i}", b"x", False) for i in range(MANY)], boundary="xyz")
    assert len(body) < 16 * 1024**2
    response = _post_multipart(client, body, "xyz")
    assert _refused(response, *TOO_MANY[:2]) == TOO_MANY[2]
    assert deployment.calls == []


def test_the_multipart_reader_stops_at_the_first_field_past_the_cap() -> None:
    from ikproxy.policy import Policy
    from ikproxy.proxy.multipart import MultipartReader

    reader = MultipartReader("multipart/form-data; boundary=xyz", Policy(max_form_fields=10), None)
    body = multipart([(f"f{i}", b"x", False) for i in range(MANY)], boundary="xyz")
    with pytest.raises(HTTPError) as refused:
        reader.feed(body)
    assert refused.value.message == "too many form fields: at most 10 per request"
    assert len(reader.fields) == 10


@pytest.mark.parametrize("where", ["form", "query"])
def test_a_form_of_150000_fields_or_a_long_query_is_refused(
    client: TestClient, deployment: ScriptedDeployment, where: str
) -> None:
    if where == "form":
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        pairs = "&".join(f"f{i}=x" for i in range(MANY))
        response = client.post("/api/run", content=pairs, headers=form)
    else:  # as many as a URL holds
        response = client.get("/api/run?" + "&".join(["a"] * 20_000))
    assert _refused(response, *TOO_MANY[:2]) == TOO_MANY[2]
    assert deployment.calls == []


def test_max_form_fields_is_a_checked_policy_option() -> None:
    from ikproxy.policy import Policy

    assert Policy().max_form_fields == 1000
    with pytest.raises(
        ValueError, match="Policy option `max_form_fields`: must be at least 1, not 0"
    ):
        Policy(max_form_fields=0)
