"""Numbers from the wire: one parser (ASCII digits, bounded length); a hostile number in a
header, a path or a query is a 4xx (or is ignored), never a 500."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy import LocalDeployment
from ikproxy.asgi import create_app
from ikproxy.browser import process_readable_stream_sync
from ikproxy.decimals import parse_decimal, parse_float, parse_integer
from ikproxy.errors import HTTPError
from ikproxy.protocol import parse_position
from ikproxy.proxy.outputs import InlineBody, OutputStore, RangeNotSatisfiable, parse_range, serve
from tests.support.http import error_of

BIG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100
NINES = "9" * 5000


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("0", 0), ("007", 7), ("123456789012345678", 123456789012345678), ("", None)],
        *[("1234567890123456789", None), ("²", None), ("٣", None), ("1_0", None), (" 1", None)],
        *[("+1", None), ("-1", None), ("1.0", None), (NINES, None)],
    ],
)
def test_parse_decimal_takes_ascii_digits_of_bounded_length(text: str, value: int | None) -> None:
    assert parse_decimal(text) == value


def test_parse_integer_and_parse_float() -> None:
    assert [parse_integer(t) for t in ("-5", "+5", "5", "--5", "-", "٣")] == [
        -5,
        5,
        5,
        None,
        None,
        None,
    ]
    assert [parse_float(t) for t in ("1", "-0.5", ".5", "2.5e-3", "1e999")] == [
        1.0,
        -0.5,
        0.5,
        0.0025,
        None,
    ]
    assert [parse_float(t) for t in ("nan", "inf", "1_0", "٣", "1" * 65, "")] == [None] * 6


def test_parse_position_and_parse_range_refuse_what_int_would_raise_on() -> None:
    assert parse_position("tok:12") == ("tok", 12)
    assert parse_position("tok:²") is None
    assert parse_position("tok:" + NINES) is None
    assert parse_range(f"bytes={NINES}-", 10) is None  # ignored: the whole output
    assert parse_range(f"bytes=-{NINES}", 10) is None
    assert parse_range("bytes=²-", 10) is None
    assert parse_range("bytes=0-" + NINES, 10) is None


def test_a_suffix_range_of_an_empty_output_is_not_satisfiable() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)


def _deployment() -> LocalDeployment:
    deployment = LocalDeployment()

    @deployment.task
    def outputs() -> list[bytes]:
        return [BIG]

    return deployment


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(
        _deployment(),
        rate_limit=None,
        inline_output_limit=0,
        parameters={"n": int},
        resume_window=60,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(
            Starlette(routes=[Mount("/api", app=app)]), raise_server_exceptions=False
        ) as c:
            yield c


@pytest.fixture(scope="module")
def output_url(client: TestClient) -> str:
    response = client.get("/api/run")
    assert response.status_code == 200
    return "/api/" + process_readable_stream_sync([response.content]).get_output(0).url


@pytest.fixture(scope="module")
def run_token(client: TestClient) -> str:
    response = client.get("/api/run", headers={"Accept": "text/event-stream"})
    ids = [line[4:] for line in response.text.splitlines() if line.startswith("id: ")]
    return ids[-1].rpartition(":")[0]


def test_the_reported_500s_are_4xx(client: TestClient, output_url: str, run_token: str) -> None:
    token = output_url.split("/")[3]
    assert error_of(client.get(f"/api/outputs/{token}/%C2%B2")) == (
        404,
        "not_found",
        "no such output",
    )
    assert client.get(output_url, headers={"Range": f"bytes={NINES}-"}).status_code == 200
    assert client.get(output_url, headers={"Range": f"bytes=-{NINES}"}).status_code == 200
    refused = (400, "invalid_parameter", "Last-Event-ID is not a resume position")
    assert (
        error_of(client.get("/api/run", headers={"Last-Event-ID": f"{run_token}:{NINES}"}))
        == refused
    )
    assert error_of(client.get(f"/api/run?last_event_id={run_token}:%C2%B2")) == refused
    assert error_of(client.get("/api/run?n=%C2%B2"))[:2] == (400, "invalid_parameter")
    assert error_of(client.get(f"/api/run?n={NINES}"))[:2] == (400, "invalid_parameter")


def test_a_suffix_range_on_an_empty_output_is_a_416() -> None:
    store = OutputStore(60)
    token = store.put([InlineBody(b"", "application/octet-stream")])
    status, headers, _ = serve(store, f"/outputs/{token}/0", "GET", None)
    assert (status, headers["Content-Length"]) == (200, "0")
    with pytest.raises(HTTPError) as refused:
        serve(store, f"/outputs/{token}/0", "GET", "bytes=-5")
    assert (refused.value.status, refused.value.code, refused.value.message) == (
        416,
        "range_not_satisfiable",
        "the range is outside the output (0 bytes)",
    )
    assert refused.value.headers == {"Content-Range": "bytes */0"}


_NUMBERS = st.one_of(
    st.sampled_from(["²", "٣", NINES, "-1", "1_0", "0x10", " 7", "9" * 19, "", "+", "1e5"]),
    st.text(alphabet="0123456789²³٣₀-+ _,.=", max_size=30),
    st.text(max_size=20),
)
_HEADER_SAFE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(number=_NUMBERS, header=_HEADER_SAFE)
def test_any_header_or_path_value_is_never_a_5xx(
    client: TestClient, output_url: str, run_token: str, number: str, header: str
) -> None:
    from urllib.parse import quote

    token = output_url.split("/")[3]
    ascii_number = number.encode("ascii", "replace").decode()
    answers = [
        client.get(f"/api/outputs/{token}/{quote(number, safe='')}"),
        client.get(output_url, headers={"Range": f"bytes={ascii_number}-{header[:5]}"}),
        client.get(output_url, headers={"Range": f"bytes=-{ascii_number}"}),
        client.get(output_url, headers={"Range": header}),
        client.get("/api/run", headers={"Last-Event-ID": f"{run_token}:{ascii_number}"}),
        client.get(f"/api/run?last_event_id={quote(run_token + ':' + number)}"),
        client.get(f"/api/run?n={quote(number)}"),
        client.post("/api/run", content=b"{}", headers={"Content-Length": header or "x"}),
        client.get("/api/run", headers={"Last-Event-ID": header or "x"}),
        client.get("/api/run", headers={"Accept": header, "X-Request-Id": header}),
        client.post("/api/run", content=b"n=1", headers={"Content-Type": header}),
        client.get(f"/api/outputs/{quote(header, safe='')}/{quote(ascii_number, safe='')}"),
    ]
    assert [r.status_code for r in answers if r.status_code >= 500] == []
