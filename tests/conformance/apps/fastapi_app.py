"""The conformance app for FastAPI, served by uvicorn.

    uvicorn tests.conformance.apps.fastapi_app:app --port 8000

The hooks are FastAPI dependencies here, the idiomatic FastAPI form, so the
conformance suite also checks that a refusal by a dependency looks exactly
like a refusal by a plain hook.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from ikproxy.adapters.starlette import fastapi_router

from . import _config


def authorize(request: Request) -> None:
    _config.authorize(request)


def client_key(request: Request) -> str:
    return _config.rate_limit_key(request)


options = _config.policy()
options.update(authorize=Depends(authorize), rate_limit_key=Depends(client_key))

app = FastAPI()
app.include_router(fastapi_router(_config.deployment(), prefix=_config.PREFIX, **options))
