"""Request parsing with pydantic: malformed JSON is a 400, rule breaks a 422 with field errors."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
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


# A name a person types: surrounding spaces dropped, nothing but spaces refused.
NonBlank = Annotated[str, AfterValidator(_not_blank)]


class ApiModel(BaseModel):
    """Base of request and response bodies: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=False
    )


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
