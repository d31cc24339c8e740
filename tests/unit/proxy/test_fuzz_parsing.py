"""Request parsing fuzzed: any body, any content type, any query gives a RunSpec or an HTTPError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ikproxy.policy import HTTPError, Param, Policy
from ikproxy.proxy.parsing import ProxyRequest, parse_run_request
from tests.support.images import HOSTILE_IMAGES, png

POLICY = Policy(
    parameters={"prompt": Param(str, required=True), "steps": int, "hd": bool},
    max_inputs=2,
    max_image_pixels=10_000,
)

_BOUNDARY = "xyz"
_PIECES = st.sampled_from(
    [
        b"--xyz\r\n",
        b"--xyz--\r\n",
        b"--xyz",
        b"\r\n",
        b'Content-Disposition: form-data; name="prompt"\r\n\r\n',
        b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n',
        b'Content-Disposition: form-data; name="\xff"\r\n\r\n',
        b"Content-Type: image/png\r\n",
        b"a cat",
        b"\xff\xfe",
        png(),
        *[data for data, _ in HOSTILE_IMAGES.values()],
        b'{"prompt": "a"}',
        b'{"prompt": "a", "image": "aGVsbG8="}',
        b'"image": "data:image/png;base64,',
        b"[" * 3000,
        b"9" * 5000,
        b"prompt=a&steps=3",
        b"%ff",
        b"%",
        b"&&==",
    ]
)
bodies = st.lists(st.one_of(_PIECES, st.binary(max_size=16)), max_size=10).map(b"".join)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        f"multipart/form-data; boundary={_BOUNDARY}",
        "multipart/form-data",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "b" * 300,
        "application/x-www-form-urlencoded",
        "text/plain",
        "\x00",
    ]
)
queries = st.one_of(
    st.sampled_from(["", "prompt=a", "prompt=%ff", "format=ndjson", "prompt=a&prompt=b"]),
    st.binary(max_size=24).map(lambda b: b.decode("latin-1")),
)


@given(
    method=st.sampled_from(["GET", "POST"]),
    query=queries,
    content_type=content_types,
    body=bodies,
    accept=st.sampled_from([None, "application/x-ndjson", "*/*", "\xff"]),
)
def test_parsing_gives_a_run_or_an_http_error(
    method: str, query: str, content_type: str | None, body: bytes, accept: str | None
) -> None:
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if accept is not None:
        headers["accept"] = accept
    request = ProxyRequest(method, "/run", query, headers)
    try:
        spec = parse_run_request(request, body, POLICY, "rid")
    except HTTPError as exc:
        refusal: HTTPError | None = exc
    else:
        refusal = None
    if refusal is not None:
        assert 400 <= refusal.status < 500
        assert refusal.message
        return
    assert set(spec.parameters) <= {"prompt", "steps", "hd"}
    assert len(spec.inputs) <= POLICY.max_inputs
