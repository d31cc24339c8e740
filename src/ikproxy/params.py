"""Parameters declared as a model: a pydantic model class or a dataclass.

`Policy(parameters=Model)` validates a browser's parameters with the model
instead of a `Param` mapping, with the same 400 errors naming the field:

    class Generate(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prompt: str = Field(max_length=500)
        steps: int = Field(20, ge=1, le=50)

A pydantic model (or a dataclass, when pydantic is installed) validates with
pydantic: values from a query string or a form arrive as text and are coerced
("3" to 3, "true" to True); values from a JSON body must already have their type,
as with `Param`. Without pydantic, a dataclass of `str`, `int`, `float` and `bool`
fields becomes the equivalent `Param` mapping. Unknown parameters are refused.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from .policy import HTTPError, Param

__all__ = ["ModelParameters", "is_model", "model_parameters"]

#: pydantic's error types, as the words of `Param`'s messages.
_TYPE_ERRORS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "string_type": "a string",
}
_LENGTHS = {
    "string_too_long": ("max_length", "longer"),
    "string_too_short": ("min_length", "shorter"),
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "less_than_equal": ("le", "at most"),
    "greater_than": ("gt", "more than"),
    "less_than": ("lt", "less than"),
}
_SIMPLE = (str, int, float, bool)


def is_model(spec: object) -> bool:
    """Whether `spec` is a parameters model: a pydantic model class or a dataclass."""
    if not isinstance(spec, type):
        return False
    return dataclasses.is_dataclass(spec) or hasattr(spec, "model_validate")


def model_parameters(model: type[Any]) -> ModelParameters | dict[str, Param]:
    """The validator of `model`: pydantic when installed, else the dataclass's `Param`s."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        if dataclasses.is_dataclass(model):
            return _dataclass_params(model)
        raise
    return ModelParameters(model)


class ModelParameters:
    """A parameters model validated with pydantic, giving `Param`'s 400 errors."""

    def __init__(self, model: type[Any]) -> None:
        from pydantic import TypeAdapter

        self.model = model
        self.adapter: TypeAdapter[Any] = TypeAdapter(model)
        schema = self.adapter.json_schema()
        self.names: tuple[str, ...] = tuple(schema.get("properties", {}))
        self.required: tuple[str, ...] = tuple(schema.get("required", ()))

    def json_schema(self) -> dict[str, Any]:
        """The model's JSON schema, self-contained (its `$defs` inlined) for OpenAPI."""
        schema = self.adapter.json_schema()
        inlined: dict[str, Any] = _inline(schema, schema.pop("$defs", {}))
        return inlined

    def validate(self, raw: Mapping[str, Any], *, from_text: bool) -> dict[str, Any]:
        """`raw` checked by the model, as JSON values; `HTTPError(400)` naming the field."""
        from pydantic import ValidationError

        unknown = sorted(set(raw) - set(self.names))
        if unknown:
            names = ", ".join(sorted(self.names)) or "none"
            raise _invalid(f"unknown parameter '{unknown[0]}' (allowed: {names})")
        try:
            if from_text:
                value = self.adapter.validate_python(dict(raw))
            else:
                # JSON mode, strict: a JSON body's values must have their type already.
                value = self.adapter.validate_json(json.dumps(dict(raw)), strict=True)
        except ValidationError as exc:
            raise _from_error(exc.errors(include_url=False)[0]) from None
        dumped: dict[str, Any] = self.adapter.dump_python(value, mode="json", by_alias=True)
        return {k: v for k, v in dumped.items() if k in raw or v is not None}


def _inline(schema: Any, defs: Mapping[str, Any]) -> Any:
    """`schema` with each `{"$ref": "#/$defs/X"}` replaced by X's schema."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _from_error(error: Any) -> HTTPError:
    """The first pydantic error as `Param`'s message for the same mistake."""
    name = str(error["loc"][0]) if error["loc"] else "?"
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind == "missing":
        return _invalid(f"missing required parameter '{name}'")
    if kind == "extra_forbidden":
        return _invalid(f"unknown parameter '{name}'")
    if kind in _LENGTHS:
        key, word = _LENGTHS[kind]
        return _invalid(f"parameter '{name}' is {word} than {ctx[key]} characters")
    if kind in _BOUNDS:
        key, word = _BOUNDS[kind]
        return _invalid(f"parameter '{name}' must be {word} {ctx[key]:g}")
    if kind in _TYPE_ERRORS and len(error["loc"]) == 1:
        return _invalid(f"parameter '{name}' must be {_TYPE_ERRORS[kind]}")
    message = str(error["msg"])
    return _invalid(f"parameter '{name}': {message[:1].lower()}{message[1:]}")


def _dataclass_params(model: type[Any]) -> dict[str, Param]:
    """A dataclass of simple fields as the `Param` mapping that validates the same way."""
    hints = typing.get_type_hints(model)
    params: dict[str, Param] = {}
    for field in dataclasses.fields(model):
        kind, optional = _simple_type(hints[field.name])
        if kind is None:
            raise TypeError(
                f"parameter {field.name!r}: without pydantic, a dataclass field must be "
                "str, int, float or bool (install ikproxy[pydantic] for other types)"
            )
        default: Any = None
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        required = field.default is dataclasses.MISSING and (
            field.default_factory is dataclasses.MISSING
        )
        params[field.name] = Param(kind, required=required and not optional, default=default)
    return params


def _simple_type(hint: Any) -> tuple[Any, bool]:
    """`(str|int|float|bool, optional)` for a simple annotation, else `(None, False)`."""
    if hint in _SIMPLE:
        return hint, False
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in _SIMPLE:
            return args[0], True
    return None, False


def _invalid(message: str) -> HTTPError:
    return HTTPError(400, "invalid_parameter", message)
