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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ikproxy.decimals import parse_float, parse_integer
from ikproxy.errors import HTTPError

__all__ = [
    "PARAM_TYPES",
    "ModelParameters",
    "Param",
    "ParamType",
    "invalid_parameter",
    "is_model",
    "model_parameters",
]

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

#: The types a `Param` may have.
PARAM_TYPES: frozenset[type] = frozenset(_TYPE_NAMES)

ParamType = Union[type[str], type[int], type[float], type[bool]]


@dataclass(frozen=True)
class Param:
    """One parameter a browser may set: its type, whether it is required, and its bounds.

    Values from a query string or a form arrive as text and are converted to
    `type`; values from a JSON body must already have that type (an integer
    is accepted where a float is wanted).
    """

    type: ParamType = str
    required: bool = False
    default: Any = None
    max_length: int | None = None
    min_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES:
            raise TypeError("Param.type must be one of str, int, float or bool")
        if self.required and self.default is not None:
            raise ValueError("a required Param cannot have a default")

    def convert(self, name: str, raw: Any, *, from_text: bool) -> Any:
        """`raw` as a checked value of this parameter; `HTTPError(400)` otherwise."""
        value = self._coerce(name, raw, from_text)
        if isinstance(value, str):
            if self.max_length is not None and len(value) > self.max_length:
                raise invalid_parameter(
                    f"parameter '{name}' is longer than {self.max_length} characters"
                )
            if self.min_length is not None and len(value) < self.min_length:
                raise invalid_parameter(
                    f"parameter '{name}' is shorter than {self.min_length} characters"
                )
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise invalid_parameter(f"parameter '{name}' must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise invalid_parameter(f"parameter '{name}' must be at most {self.maximum:g}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise invalid_parameter(f"parameter '{name}' must be one of: {allowed}")
        return value

    def _coerce(self, name: str, raw: Any, from_text: bool) -> Any:
        want = self.type
        wrong = invalid_parameter(f"parameter '{name}' must be {_TYPE_NAMES[want]}")
        if from_text:
            if not isinstance(raw, str):
                raise wrong
            if want is str:
                return raw
            text = raw.strip().lower()
            if want is bool:
                if text in _TRUE:
                    return True
                if text in _FALSE:
                    return False
                raise wrong
            number = parse_integer(text) if want is int else parse_float(text)
            if number is None:
                raise wrong
            return number
        if want is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if want is int and isinstance(raw, bool):
            raise wrong
        if not isinstance(raw, want):
            raise wrong
        return raw


def invalid_parameter(message: str) -> HTTPError:
    """The 400 `invalid_parameter` refusal, with a message that names the parameter."""
    return HTTPError(400, "invalid_parameter", message)


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
            raise invalid_parameter(f"unknown parameter '{unknown[0]}' (allowed: {names})")
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
        return invalid_parameter(f"missing required parameter '{name}'")
    if kind == "extra_forbidden":
        return invalid_parameter(f"unknown parameter '{name}'")
    if kind in _LENGTHS:
        key, word = _LENGTHS[kind]
        return invalid_parameter(f"parameter '{name}' is {word} than {ctx[key]} characters")
    if kind in _BOUNDS:
        key, word = _BOUNDS[kind]
        return invalid_parameter(f"parameter '{name}' must be {word} {ctx[key]:g}")
    if kind in _TYPE_ERRORS and len(error["loc"]) == 1:
        return invalid_parameter(f"parameter '{name}' must be {_TYPE_ERRORS[kind]}")
    message = str(error["msg"])
    return invalid_parameter(f"parameter '{name}': {message[:1].lower()}{message[1:]}")


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
