"""Parameters declared as a pydantic model or a dataclass, through the proxy (400 JSON bodies)."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ikproxy.asgi import create_app
from ikproxy.policy import Param, Policy
from ikproxy.policy.params import ModelParameters
from tests.support.deployments import ScriptedDeployment
from tests.support.http import error_of


class Generate(BaseModel):
    prompt: str = Field(max_length=20)
    steps: int | None = Field(None, ge=1, le=50)
    strength: float | None = None
    hd: bool | None = None


@dataclasses.dataclass
class GenerateData:
    prompt: str
    steps: int | None = None
    strength: float | None = None
    hd: bool = False


@pytest.fixture(params=["pydantic", "dataclass", "dataclass-no-pydantic"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "dataclass-no-pydantic":
        monkeypatch.setitem(sys.modules, "pydantic", None)  # `import pydantic` fails
    return str(request.param)


@pytest.fixture
def deployment() -> ScriptedDeployment:
    return ScriptedDeployment()


@pytest.fixture
def client(kind: str, deployment: ScriptedDeployment) -> Iterator[TestClient]:
    model = Generate if kind == "pydantic" else GenerateData
    app = create_app(deployment, parameters=model, rate_limit=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(Starlette(routes=[Mount("/api", app=app)])) as client:
            yield client


def test_the_policy_holds_the_model_or_its_params(kind: str) -> None:
    policy = Policy(parameters=Generate if kind == "pydantic" else GenerateData)
    if kind == "dataclass-no-pydantic":
        assert policy.parameters == {
            "prompt": Param(str, required=True),
            "steps": Param(int),
            "strength": Param(float),
            "hd": Param(bool, default=False),
        }
    else:
        assert isinstance(policy.parameters, ModelParameters)
        assert policy.parameters.names == ("prompt", "steps", "strength", "hd")


def test_valid_text_values_are_coerced(
    client: TestClient, deployment: ScriptedDeployment, kind: str
) -> None:
    response = client.get("/api/run", params={"prompt": "a cat", "steps": "3", "hd": "true"})
    assert response.status_code == 200, response.text
    assert deployment.calls[0]["parameters"] == {"prompt": "a cat", "steps": 3, "hd": True}


def test_a_form_is_text_too(client: TestClient, deployment: ScriptedDeployment) -> None:
    response = client.post("/api/run", data={"prompt": "x", "strength": "2.5", "hd": "false"})
    assert response.status_code == 200, response.text
    assert deployment.calls[0]["parameters"] == {"prompt": "x", "strength": 2.5, "hd": False}


def test_json_values_keep_their_types(client: TestClient, deployment: ScriptedDeployment) -> None:
    response = client.post("/api/run", json={"prompt": "x", "strength": 2, "steps": 4})
    assert response.status_code == 200, response.text
    call = deployment.calls[0]["parameters"]
    assert call["strength"] == 2.0
    assert isinstance(call["strength"], float)
    assert {k: call[k] for k in ("prompt", "steps")} == {"prompt": "x", "steps": 4}


def test_model_defaults_are_sent(
    client: TestClient, deployment: ScriptedDeployment, kind: str
) -> None:
    response = client.get("/api/run", params={"prompt": "x"})
    assert response.status_code == 200, response.text
    sent = deployment.calls[0]["parameters"]
    assert sent == ({"prompt": "x"} if kind == "pydantic" else {"prompt": "x", "hd": False})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing required parameter 'prompt'"),
        ({"steps": "3"}, "missing required parameter 'prompt'"),
        (
            {"prompt": "x", "seed": "1"},
            "unknown parameter 'seed' (allowed: hd, prompt, steps, strength)",
        ),
        ({"prompt": "x", "steps": "many"}, "parameter 'steps' must be an integer"),
        ({"prompt": "x", "strength": "strong"}, "parameter 'strength' must be a number"),
        ({"prompt": "x", "hd": "maybe"}, "parameter 'hd' must be a boolean"),
    ],
)
def test_bad_query_parameters_get_400_naming_them(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    assert error_of(client.get("/api/run", params=params), exact=True) == (
        400,
        "invalid_parameter",
        message,
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": 5}, "parameter 'prompt' must be a string"),
        ({"prompt": "x", "steps": True}, "parameter 'steps' must be an integer"),
        ({"prompt": "x", "steps": "3"}, "parameter 'steps' must be an integer"),
        ({"prompt": "x", "hd": "true"}, "parameter 'hd' must be a boolean"),
        (
            {"prompt": "x", "other": 1},
            "unknown parameter 'other' (allowed: hd, prompt, steps, strength)",
        ),
    ],
)
def test_bad_json_values_get_400_naming_them(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    assert error_of(client.post("/api/run", json=body), exact=True) == (
        400,
        "invalid_parameter",
        message,
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompt": "x" * 21}, "parameter 'prompt' is longer than 20 characters"),
        ({"prompt": "x", "steps": "0"}, "parameter 'steps' must be at least 1"),
        ({"prompt": "x", "steps": "51"}, "parameter 'steps' must be at most 50"),
    ],
)
def test_a_pydantic_models_constraints_are_the_params_bounds(
    deployment: ScriptedDeployment, params: dict[str, str], message: str
) -> None:
    app = create_app(deployment, parameters=Generate, rate_limit=None)
    with TestClient(Starlette(routes=[Mount("/api", app=app)])) as client:
        response = client.get("/api/run", params=params)
    assert error_of(response, exact=True) == (400, "invalid_parameter", message)
    assert deployment.calls == []


def test_a_model_field_cannot_also_be_fixed() -> None:
    with pytest.raises(ValueError, match="parameters both allowed and fixed: prompt"):
        Policy(parameters=Generate, fixed_parameters={"prompt": "x"})


def test_without_pydantic_a_dataclass_needs_simple_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class Sizes:
        sizes: list[int]

    monkeypatch.setitem(sys.modules, "pydantic", None)
    with pytest.raises(TypeError, match="install ikproxy\\[pydantic\\]"):
        Policy(parameters=Sizes)


# -- the model in the OpenAPI schema --------------------------------------------------


def _run_operations(paths: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    run = paths["/api/run"]
    return run["get"], run["post"]


def _check_run_schema(paths: dict[str, Any]) -> None:
    get, post = _run_operations(paths)
    query = {p["name"]: p for p in get["parameters"]}
    assert query["prompt"]["required"] is True
    assert query["prompt"]["schema"]["maxLength"] == 20
    assert query["steps"]["required"] is False
    assert query["steps"]["schema"]["anyOf"][0] == {"maximum": 50, "minimum": 1, "type": "integer"}
    assert set(query) == {"prompt", "steps", "strength", "hd", "format"}
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["prompt"]
    assert set(body["properties"]) == {"prompt", "steps", "strength", "hd", "image"}
    assert post["responses"]["400"]["description"] == "Invalid parameters or input"


def test_fastapi_publishes_the_model_in_its_openapi_schema(deployment: ScriptedDeployment) -> None:
    from fastapi import FastAPI

    from ikproxy.adapters.starlette import fastapi_router

    app = FastAPI()
    app.include_router(fastapi_router(deployment, prefix="/api", parameters=Generate))
    _check_run_schema(app.openapi()["paths"])


def test_litestar_publishes_the_model_in_its_openapi_schema(deployment: ScriptedDeployment) -> None:
    from litestar import Litestar
    from litestar.testing import TestClient as LitestarClient

    from ikproxy.adapters.litestar import router

    app = Litestar(route_handlers=[router(deployment, path="/api", parameters=Generate)])
    with LitestarClient(app) as client:
        _check_run_schema(client.get("/schema/openapi.json").json()["paths"])
        refused = client.get("/api/run", params={"prompt": "x", "steps": "0"})
        assert error_of(refused, exact=True) == (
            400,
            "invalid_parameter",
            "parameter 'steps' must be at least 1",
        )
        assert client.get("/api/run", params={"prompt": "x"}).status_code == 200
