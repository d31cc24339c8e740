"""`ikproxy.proxy.openapi`: the OpenAPI 3.1 description of `/run`, from a policy."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ikproxy.policy import Param, Policy
from ikproxy.protocol import NDJSON_MEDIA_TYPE, SSE_MEDIA_TYPE
from ikproxy.proxy.openapi import (
    ERROR_SCHEMA,
    FORMAT_PARAMETER,
    STATUS_DOCS,
    parameter_schemas,
    run_docs,
)

POLICY = Policy(
    parameters={
        "prompt": Param(str, required=True, max_length=200, min_length=1),
        "steps": Param(int, minimum=1, maximum=50, default=20),
        "style": Param(str, choices=("photo", "sketch")),
        "hd": bool,
        "strength": float,
    },
    fixed_parameters={"seed": 7},
)


def test_each_param_becomes_a_json_schema_with_its_limits() -> None:
    properties, required = parameter_schemas(POLICY)
    assert properties == {
        "prompt": {"type": "string", "maxLength": 200, "minLength": 1},
        "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 20},
        "style": {"type": "string", "enum": ["photo", "sketch"]},
        "hd": {"type": "boolean"},
        "strength": {"type": "number"},
    }
    assert required == ["prompt"]  # the fixed `seed` is not the browser's to set


def test_a_model_is_described_by_its_own_json_schema() -> None:
    class Generate(BaseModel):
        prompt: str = Field(max_length=20)
        steps: int = Field(4, ge=1)

    properties, required = parameter_schemas(Policy(parameters=Generate))
    assert properties == {
        "prompt": {"maxLength": 20, "title": "Prompt", "type": "string"},
        "steps": {"default": 4, "minimum": 1, "title": "Steps", "type": "integer"},
    }
    assert required == ["prompt"]


def test_the_query_parameters_end_with_the_format() -> None:
    query, _, _ = run_docs(POLICY)
    assert [(q["name"], q["required"]) for q in query[:-1]] == [
        ("prompt", True),
        ("steps", False),
        ("style", False),
        ("hd", False),
        ("strength", False),
    ]
    assert all(q["in"] == "query" for q in query)
    assert query[0]["schema"] == {"type": "string", "maxLength": 200, "minLength": 1}
    assert query[-1] is FORMAT_PARAMETER
    assert FORMAT_PARAMETER["schema"] == {"type": "string", "enum": ["sse", "ndjson"]}


def test_the_body_takes_json_multipart_and_forms_and_an_image_where_inputs_are_allowed() -> None:
    properties, _ = parameter_schemas(POLICY)
    _, body, _ = run_docs(POLICY)
    assert body["required"] is True
    content = body["content"]
    assert list(content) == [
        "application/json",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ]
    multipart = content["multipart/form-data"]["schema"]
    assert multipart["required"] == ["prompt"]
    assert multipart["properties"]["image"] == {"type": "string", "format": "binary"}
    image = content["application/json"]["schema"]["properties"]["image"]
    assert [alternative["type"] for alternative in image["oneOf"]] == ["string", "array"]
    # A URL-encoded form carries no file: its fields are the parameters alone.
    assert content["application/x-www-form-urlencoded"]["schema"] == {
        "type": "object",
        "properties": properties,
        "required": ["prompt"],
    }


def test_no_image_field_when_no_input_is_allowed_and_no_required_list_when_none_is() -> None:
    _, body, _ = run_docs(Policy(parameters={"steps": int}, max_inputs=0))
    assert body["content"]["multipart/form-data"]["schema"] == {
        "type": "object",
        "properties": {"steps": {"type": "integer"}},
    }


def test_the_responses_are_the_stream_then_every_documented_refusal() -> None:
    _, _, responses = run_docs(POLICY)
    assert list(responses) == [200, 400, 401, 403, 413, 415, 429, 502, 504]
    assert set(responses[200]["content"]) == {SSE_MEDIA_TYPE, NDJSON_MEDIA_TYPE}
    for status, description in STATUS_DOCS.items():
        assert responses[status] == {
            "description": description,
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
    assert ERROR_SCHEMA["required"] == ["error"]
