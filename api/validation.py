"""Request parsing with pydantic: malformed JSON is a 400, rule breaks a 422 with field errors."""

from __future__ import annotations

import json
import re
import types
from functools import cache
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from sanic import Request
from sanic.exceptions import BadRequest

from domain.errors import FieldError, ValidationFailed
from domain.text import is_unicode_text

ModelT = TypeVar("ModelT", bound=BaseModel)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


# Some character that str.strip() keeps: what "not blank" means, as a JSON Schema pattern (an
# unanchored pattern matches anywhere). The class lists exactly what str.isspace() calls blank.
NON_BLANK_PATTERN = (
    r"[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)

# A name a person types: surrounding spaces dropped, nothing but spaces refused.
NonBlank = Annotated[
    str, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": NON_BLANK_PATTERN})
]


def _is_int(annotation: Any) -> bool:
    """Whether a field's type is int or an optional int."""
    if annotation is int:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(arg is int for arg in get_args(annotation))
    return False


@cache
def _int_fields(model: type[BaseModel]) -> frozenset[str]:
    """The wire names (and Python names) of a model's integer fields."""
    names = set()
    for name, info in model.model_fields.items():
        if _is_int(info.annotation):
            names.update({name, info.alias or name})
    return frozenset(names)


class ApiModel(BaseModel):
    """Base of request and response bodies: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=False
    )

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers_are_integers(cls, data: Any) -> Any:
        # JSON Schema's integer is any number without a fraction (5.0 too), which strict
        # validation would refuse as a float; a float with a fraction still is refused.
        names = _int_fields(cls) if isinstance(data, dict) else frozenset()
        if not names:
            return data
        return {
            key: int(value)
            if key in names and type(value) is float and value.is_integer()
            else value
            for key, value in data.items()
        }


def field_errors(error: ValidationError, *, prefix: str = "") -> list[FieldError]:
    """Pydantic's errors as (dotted field, message) pairs."""
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        found.append(
            FieldError(field=f"{prefix}{path}" if path else prefix.rstrip("."), message=item["msg"])
        )
    return found


# JSON may escape a lone UTF-16 surrogate ("\\ud800"), which decodes into a str that no UTF-8
# encoder (PostgreSQL, Redis, the queue) accepts: such text would fail far from the request.
# Only bodies with a surrogate escape at all (emoji escaped as pairs, mostly) are walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_unpaired_surrogate(value: Any) -> bool:
    """Whether any string of a decoded JSON value holds a surrogate without its pair."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_unicode_text(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def read_json(request: Request) -> Any:
    """The request body as JSON; 400 when it is empty, malformed or not Unicode text."""
    body = request.body
    if not body:
        raise BadRequest("The request body is empty; a JSON body is required.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The body is not valid JSON.") from exc
    except RecursionError as exc:
        raise BadRequest("The body nests arrays or objects too deeply.") from exc
    if _SURROGATE_ESCAPE.search(body) and _has_unpaired_surrogate(data):
        raise BadRequest(
            "The body is not Unicode text: it escapes a UTF-16 surrogate without its pair."
        )
    return data


def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """The JSON body validated into `model`."""
    return validate(read_json(request), model)


def validate(data: Any, model: type[ModelT], *, strict: bool = True) -> ModelT:
    """`data` validated into `model`, or ValidationFailed listing every bad field.

    Strict by default: a JSON body is held to the types its schema states (no `false` for 0,
    no "5" for 5); only query strings, where every value is text, are converted."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise ValidationFailed(
            "The request does not satisfy the schema.", errors=field_errors(exc)
        ) from exc


def parse_query(request: Request, model: type[ModelT]) -> ModelT:
    """The query string validated into `model` (single values; repeated keys take the last).

    A parameter sent empty (`?month=`) is validated as the empty string it is, not dropped."""
    args = request.get_args(keep_blank_values=True)
    data = {name: values[-1] for name, values in args.items()}
    return validate(data, model, strict=False)
