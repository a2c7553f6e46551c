"""Wire types declared once: each request and response body is a frozen dataclass annotated for
pydantic, and that one declaration gives the validation of requests (with a 400 naming the field),
the JSON of responses, the client's parsing and the OpenAPI schemas.

Conventions every wire type follows:

- Requests (``REQUEST`` config) ignore fields they do not know, because generated clients send
  extra ones; responses (``RESPONSE`` config) forbid them in their schema, so a field added on one
  side only fails the suite's schema checks.
- A response field typed ``Absent[X]`` with the default ``None`` is left out of the body when
  it is None, and its schema is ``X`` (not nullable, not required); a field typed ``X | None`` is
  sent as ``null``. Every other response field is required.
- Names on the wire are the field names unless a field declares an alias (``jobId``).

The schemas are generated as JSON Schema 2020-12 by pydantic and rewritten to OpenAPI 3.0's
dialect (``nullable``, boolean ``exclusiveMinimum``, no ``const`` or ``title``), which is what
Cochl's and most generated clients read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.json_schema import SkipJsonSchema

from protocol.errors import BadRequest

__all__ = [
    "REQUEST",
    "RESPONSE",
    "Absent",
    "Named",
    "Schema",
    "WireType",
    "from_wire",
    "parse",
    "parse_query",
    "query_parameters",
    "reworded",
    "schema_ref",
    "schemas",
    "to_wire",
]

Schema = dict[str, Any]
Mode = Literal["validation", "serialization"]

REQUEST = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)
RESPONSE = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)
T = TypeVar("T")


def _is_none(value: Any) -> bool:
    return value is None


# A response field left out of the body when None, documented as neither nullable nor required:
# ``next_token: Absent[str] = None``.
Absent = Annotated[T | SkipJsonSchema[None], Field(exclude_if=_is_none)]

_REF_TEMPLATE = "#/components/schemas/{model}"
_MAX_ERRORS_SHOWN = 3


_NAME_KEY = "x-tympan-schema-name"


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def reworded(message: str, out_of_range: str | None = None) -> WrapValidator:
    """Annotated metadata: whatever the inner constraints refuse is refused with ``message``
    (read after the field's name; ``out_of_range`` for a value of the right type outside its
    bounds), while the schema keeps the constraints themselves."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if out_of_range is not None and exc.errors()[0]["type"] in _RANGE_ERRORS:
                raise ValueError(out_of_range) from None
            raise ValueError(message) from None

    return WrapValidator(validate)


@dataclasses.dataclass(frozen=True)
class Named:
    """Annotated metadata that documents a plain type (a constrained string, an object) as a
    schema of its own, e.g. Cochl's ``AudioContentType``: ``Annotated[str, ..., Named("X")]``."""

    name: str

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> Schema:
        # Marked here, moved to a component of its own by ``schemas``.
        return {**handler(core_schema), _NAME_KEY: self.name}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    return _cached_adapter(kind)


@cache
def _cached_adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union", "nullable", "union[")):
            continue  # pydantic's names of validator steps, not fields
        else:
            path += f".{part}" if path else str(part)
    return path


_OBJECT_ERRORS = {"dict_type", "dataclass_type", "dataclass_exact_type", "model_type"}
_CHOICE_ERRORS = {"literal_error", "enum"}


def _message(exc: ValidationError, where: str) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:_MAX_ERRORS_SHOWN]:
        path = _path(tuple(error["loc"])) or where
        kind, ctx = error["type"], error.get("ctx") or {}
        if kind == "missing":
            parts.append(f"{path} is required")
        elif kind == "value_error":
            # Our own validators' messages read after the field's name.
            parts.append(f"{path} {ctx['error']}")
        elif kind in _OBJECT_ERRORS:
            parts.append(f"{path} must be an object")
        elif kind in _CHOICE_ERRORS:
            parts.append(f"{path} must be {ctx['expected']}")
        else:
            parts.append(f"{path}: {error['msg'][0].lower()}{error['msg'][1:]}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _check_unicode(value: Any, path: str) -> None:
    """JSON may escape a lone surrogate (``"\\udc88"``), which no UTF-8 text holds: refused
    here, as what was accepted must read back the same once stored or carried in a token."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(
                    f"{path or 'a value'} is not valid Unicode (a lone surrogate)"
                ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, f"a key of {path}" if path else "a key")
            _check_unicode(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_unicode(item, f"{path}[{index}]")


def parse(kind: type[T], body: Any, where: str = "the body") -> T:
    """``body`` (a decoded JSON or msgpack value) as ``kind``, or ``BadRequest`` naming what is
    wrong."""
    if not isinstance(body, dict):
        raise BadRequest(f"{where} must be a JSON object")
    _check_unicode(body, "")
    try:
        return _adapter(kind).validate_python(body)
    except ValidationError as exc:
        raise BadRequest(_message(exc, where)) from None


def parse_query(kind: type[T], query: Mapping[str, str]) -> T:
    """Query parameters (the first value of each; an empty one counts as absent) as ``kind``,
    whose fields' lax validation reads the numbers out of the text."""
    names = [field.name for field in dataclasses.fields(kind)]  # type: ignore[arg-type]
    body = {name: query[name] for name in names if query.get(name)}
    return parse(kind, body, "the query")


def query_parameters(kind: type[Any]) -> list[Schema]:
    """OpenAPI parameter objects for the fields of ``kind``, a query type for ``parse_query``."""
    schema = _openapi30(_adapter(kind).json_schema(mode="validation", ref_template=_REF_TEMPLATE))
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = dict(field_schema)
        description = field_schema.pop("description", None)
        field_schema.pop("nullable", None)
        parameter: Schema = {"name": name, "in": "query", "schema": field_schema}
        if description:
            parameter["description"] = description
        if name in required:
            parameter["required"] = True
        parameters.append(parameter)
    return parameters


def from_wire(kind: type[T], data: Any) -> T:
    """A response body as ``kind`` (a client's parsing); ``ValueError`` when it does not fit."""
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as exc:
        raise ValueError(f"not a {kind.__name__}: {_message(exc, 'the body')}") from None


def to_wire(value: Any) -> Any:
    """A wire dataclass (or a list of them) as the JSON-ready value a response carries."""
    kind: Any = type(value)
    if isinstance(value, list | tuple) and value and dataclasses.is_dataclass(value[0]):
        kind = list[type(value[0])]  # type: ignore[misc]
    return _adapter(kind).dump_python(value, mode="json", by_alias=True)


class WireType:
    """Base of the wire dataclasses that callers turn into a body by a method."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = to_wire(self)
        return body


def schema_ref(kind: type[Any]) -> Schema:
    return {"$ref": _REF_TEMPLATE.format(model=kind.__name__)}


def schemas(requests: Iterable[type[Any]], responses: Iterable[type[Any]]) -> dict[str, Schema]:
    """The OpenAPI 3.0 component schemas of these types and of every type they refer to, by
    class name: requests as they are validated, responses as they are written."""
    inputs: list[tuple[Any, Mode, TypeAdapter[Any]]] = [
        ((kind, "validation"), "validation", _adapter(kind)) for kind in requests
    ]
    inputs += [((kind, "serialization"), "serialization", _adapter(kind)) for kind in responses]
    top, definitions = TypeAdapter.json_schemas(inputs, ref_template=_REF_TEMPLATE)
    found: dict[str, Schema] = dict(definitions.get("$defs", {}))
    for (kind, _mode), schema in top.items():
        if "$ref" not in schema:
            found[kind.__name__] = schema
    converted = {name: _openapi30(schema) for name, schema in found.items()}
    named: dict[str, Schema] = {}
    converted = {name: _hoist_named(schema, named) for name, schema in converted.items()}
    return dict(sorted({**converted, **named}.items()))


def _hoist_named(schema: Any, named: dict[str, Schema]) -> Any:
    """Each schema marked by ``Named`` as a component, referred to where it was."""
    if isinstance(schema, list):
        return [_hoist_named(item, named) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _hoist_named(value, named) for key, value in schema.items()}
    name = out.pop(_NAME_KEY, None)
    if name is None:
        return out
    named[name] = out
    return {"$ref": _REF_TEMPLATE.format(model=name)}


def _openapi30(schema: Any) -> Any:
    """JSON Schema 2020-12 as OpenAPI 3.0.3 reads it."""
    if isinstance(schema, list):
        return [_openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: Schema = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _openapi30(item) for name, item in value.items()}
        else:
            out[key] = _openapi30(value)
    variants = out.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [item for item in variants if item != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        else:
            out["anyOf" if len(rest) > 1 else "allOf"] = rest
        out["nullable"] = True
    if isinstance(out.get("examples"), list) and out["examples"]:
        out["example"] = out.pop("examples")[0]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            out[inclusive] = out[bound]
            out[bound] = True
    if out.get("type") == "integer" and out.get("maximum", 2**31) > 2**31 - 1:
        out.setdefault("format", "int64")  # so generated clients do not use 32-bit integers
    if "$ref" in out and len(out) > 1:
        # OpenAPI 3.0 ignores a $ref's siblings: keep them on an allOf wrapper.
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out
