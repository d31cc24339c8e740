"""The OpenAPI description of the run endpoint, from a policy, for frameworks that publish one.

Plain dicts of OpenAPI 3.1: the query parameters of `GET /run`, the request body
of `POST /run` (JSON, multipart and URL-encoded forms), and the responses. A
parameters model (`ikproxy.params`) is described by its own JSON schema, so
generated clients (openapi-typescript, ...) type the request from it.
"""

from __future__ import annotations

from typing import Any

from ikproxy.policy.config import Policy
from ikproxy.policy.params import ModelParameters, Param
from ikproxy.protocol import NDJSON_MEDIA_TYPE, SSE_MEDIA_TYPE

__all__ = ["ERROR_SCHEMA", "FORMAT_PARAMETER", "STATUS_DOCS", "parameter_schemas", "run_docs"]

_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}

#: The refusals `/run` may answer with, before any stream.
STATUS_DOCS = {
    400: "Invalid parameters or input",
    401: "Authentication required",
    403: "Not allowed",
    413: "Request body too large",
    415: "Unsupported body or image type",
    429: "Rate limited (see Retry-After)",
    502: "The deployment failed or refused the run",
    504: "The deployment did not answer in time",
}
FORMAT_PARAMETER = {
    "name": "format",
    "in": "query",
    "description": "The stream format (default: from Accept, else sse)",
    "schema": {"type": "string", "enum": ["sse", "ndjson"]},
}
#: The JSON error body (`ikproxy.protocol.error_body`).
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def parameter_schemas(policy: Policy) -> tuple[dict[str, Any], list[str]]:
    """The JSON schema of each parameter a browser may set, and the required ones' names."""
    if isinstance(policy.parameters, ModelParameters):
        schema = policy.parameters.json_schema()
        return dict(schema.get("properties", {})), list(schema.get("required", []))
    params: dict[str, Param] = dict(policy.parameters)  # type: ignore[arg-type]
    properties = {name: _param_schema(p) for name, p in params.items()}
    return properties, [name for name, p in params.items() if p.required]


def _param_schema(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _TYPES[param.type]}
    keywords = {
        "maxLength": param.max_length,
        "minLength": param.min_length,
        "minimum": param.minimum,
        "maximum": param.maximum,
        "default": param.default,
        "enum": list(param.choices) if param.choices is not None else None,
    }
    schema.update((key, value) for key, value in keywords.items() if value is not None)
    return schema


def run_docs(policy: Policy) -> tuple[list[dict[str, Any]], dict[str, Any], dict[int, Any]]:
    """The query parameters (`format` last), the request body and the responses of `/run`."""
    properties, required = parameter_schemas(policy)
    query = [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in properties.items()
    ]

    def form(image: dict[str, Any] | None) -> dict[str, Any]:
        fields = {**properties, "image": image} if image and policy.max_inputs else properties
        schema = {"type": "object", "properties": fields}
        return {"schema": {**schema, "required": required} if required else schema}

    text = {
        "type": "string",
        "description": "a data: URL or base64 image, or an http(s) URL where allowed",
    }
    body = {
        "application/json": form({"oneOf": [text, {"type": "array", "items": text}]}),
        "multipart/form-data": form({"type": "string", "format": "binary"}),
        "application/x-www-form-urlencoded": form(None),
    }
    stream = {"schema": {"type": "string"}}
    responses: dict[int, Any] = {
        200: {
            "description": "The run's progress events, then one result or error event",
            "content": {SSE_MEDIA_TYPE: stream, NDJSON_MEDIA_TYPE: stream},
        }
    }
    error = {"application/json": {"schema": ERROR_SCHEMA}}
    for status, description in STATUS_DOCS.items():
        responses[status] = {"description": description, "content": error}
    return [*query, FORMAT_PARAMETER], {"required": True, "content": body}, responses
