"""Catalog rules: what a valid product is, and the card the read path hydrates recommendations from.

Pure: every entry point (the api, the batch actor, the file import) validates through
`parse_item`, so a product refused by one is refused by all, with the same messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from domain import cursors
from domain.errors import FieldError, ValidationFailed
from domain.text import is_unicode_text

MAX_PRODUCT_ID_CHARS = 256
MAX_NAME_CHARS = 500
MAX_CATEGORY_CHARS = 200
MAX_URL_CHARS = 2048
MAX_ATTRIBUTES_BYTES = 8 * 1024
MAX_DESCRIPTION_BYTES = 10 * 1024
MAX_PRICE_DECIMALS = 4
# numeric(14, 4) holds at most ten integer digits.
MAX_PRICE = Decimal("9999999999.9999")
DEFAULT_CURRENCY = "USD"
MAX_BATCH_ITEMS = 1000

FIELDS = (
    "productId",
    "name",
    "category",
    "price",
    "currency",
    "imageUrl",
    "url",
    "description",
    "attributes",
    "available",
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# PostgreSQL text and jsonb cannot hold NUL; other C0 controls have no place in an id or a URL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_SCHEMES = frozenset({"http", "https"})
_UNSTORABLE = "must be valid Unicode text without NUL characters"
# What `_url` accepts, as the OpenAPI document states it: http(s), an optional user part, a host
# name, an optional port, then no blank (str.isspace) nor control character anywhere.
_BLANK_OR_CONTROL = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# The same for the texts (`_text`): a productId has no control character and a name no NUL, and
# neither is blank (str.isspace); a category holds no NUL.
_BLANK = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PRODUCT_ID_PATTERN = rf"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f{_BLANK}][^\x00-\x1f\x7f]*$"
NAME_PATTERN = rf"^[^\x00]*[^\x00{_BLANK}][^\x00]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"
HTTP_URL_PATTERN = (
    rf"^[hH][tT][tT][pP][sS]?://(?:[^{_BLANK_OR_CONTROL}/?#@]*@)?[^{_BLANK_OR_CONTROL}/?#@:\[\]]+"
    rf"(?::[0-9]*)?(?:[/?#][^{_BLANK_OR_CONTROL}]*)?$"
)


@dataclass(frozen=True)
class CatalogItem:
    """A validated product of one tenant's catalog."""

    product_id: str
    name: str
    price: Decimal
    currency: str
    category: str = ""
    image_url: str | None = None
    url: str | None = None
    description: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    available: bool = True


def parse_item(
    data: Any, *, default_currency: str = DEFAULT_CURRENCY, product_id: str | None = None
) -> CatalogItem:
    """`data` (API field names) as a CatalogItem, or ValidationFailed listing every broken rule.

    `product_id`, when given (a PUT's path), fills in the body's or must equal it.
    """
    if not isinstance(data, Mapping):
        raise ValidationFailed(
            "A catalog item must be a JSON object.",
            errors=[FieldError(field="", message="must be a JSON object")],
        )
    errors: list[FieldError] = [
        FieldError(field=str(name), message="is not a catalog field")
        for name in data
        if name not in FIELDS
    ]
    body_id = data.get("productId")
    if product_id is not None:
        if body_id is not None and body_id != product_id:
            errors.append(
                FieldError(field="productId", message="must equal the productId in the path")
            )
        body_id = product_id
    checked_id = _text(errors, "productId", body_id, required=True, max_chars=MAX_PRODUCT_ID_CHARS)
    if checked_id is not None and _CONTROL.search(checked_id):
        errors.append(FieldError(field="productId", message="must not contain control characters"))
    name = _text(errors, "name", data.get("name"), required=True, max_chars=MAX_NAME_CHARS)
    category = _text(errors, "category", data.get("category"), max_chars=MAX_CATEGORY_CHARS)
    description = _description(errors, data.get("description"))
    price = _price(errors, data.get("price"))
    currency = _currency(errors, data.get("currency"), default_currency)
    image_url = _url(errors, "imageUrl", data.get("imageUrl"))
    url = _url(errors, "url", data.get("url"))
    attributes = _attributes(errors, data.get("attributes"))
    available = data.get("available", True)
    if available is None:
        available = True
    if not isinstance(available, bool):
        errors.append(FieldError(field="available", message="must be true or false"))
    if errors:
        raise ValidationFailed("The catalog item is not valid.", errors=errors)
    assert checked_id is not None and name is not None and price is not None
    return CatalogItem(
        product_id=checked_id,
        name=name,
        price=price,
        currency=currency,
        category=category or "",
        image_url=image_url,
        url=url,
        description=description,
        attributes=attributes,
        available=bool(available),
    )


def item_errors(
    data: Any, *, default_currency: str = DEFAULT_CURRENCY
) -> tuple[CatalogItem | None, list[FieldError]]:
    """`parse_item` that answers (item, []) or (None, errors) instead of raising."""
    try:
        return parse_item(data, default_currency=default_currency), []
    except ValidationFailed as failure:
        return None, failure.errors


def tenant_currency(config: Mapping[str, Any] | None) -> str:
    """The tenant's default currency (config `currency`), USD when absent or malformed."""
    value = (config or {}).get("currency")
    if isinstance(value, str) and _CURRENCY.match(value):
        return value
    return DEFAULT_CURRENCY


def to_message(item: CatalogItem) -> dict[str, Any]:
    """The item as JSON primitives in API field names (price as a string, so it stays exact)."""
    return {
        "productId": item.product_id,
        "name": item.name,
        "category": item.category,
        "price": str(item.price),
        "currency": item.currency,
        "imageUrl": item.image_url,
        "url": item.url,
        "description": item.description,
        "attributes": item.attributes,
        "available": item.available,
    }


def from_message(data: Mapping[str, Any]) -> CatalogItem:
    """The item back from `to_message` output, validated again (messages can be replayed)."""
    restored = dict(data)
    if isinstance(restored.get("price"), str):
        try:
            restored["price"] = Decimal(restored["price"])
        except InvalidOperation:
            pass  # parse_item reports the non-number
    currency = restored.get("currency")
    return parse_item(
        restored, default_currency=currency if isinstance(currency, str) else DEFAULT_CURRENCY
    )


def build_card(
    *,
    name: str,
    price: Decimal | float,
    currency: str,
    image_url: str | None,
    url: str | None,
    category: str,
    available: bool,
) -> dict[str, Any]:
    """The card of a product: what a recommendation shows, read in one round trip."""
    return {
        "name": name,
        "price": float(price),
        "currency": currency,
        "imageUrl": image_url,
        "url": url,
        "category": category,
        "available": available,
    }


def _text(
    errors: list[FieldError],
    name: str,
    value: Any,
    *,
    max_chars: int,
    required: bool = False,
) -> str | None:
    if value is None:
        if required:
            errors.append(FieldError(field=name, message="is required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(field=name, message="must be a string"))
        return None
    if required and not value.strip():
        errors.append(FieldError(field=name, message="must not be empty"))
        return None
    if len(value) > max_chars:
        errors.append(FieldError(field=name, message=f"must be at most {max_chars} characters"))
        return None
    if not _storable(value):
        errors.append(FieldError(field=name, message=_UNSTORABLE))
        return None
    return value


def _description(errors: list[FieldError], value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(field="description", message="must be a string"))
        return None
    if not _storable(value):
        errors.append(FieldError(field="description", message=_UNSTORABLE))
        return None
    if len(value.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        errors.append(
            FieldError(
                field="description",
                message=f"must be at most {MAX_DESCRIPTION_BYTES} bytes (10 KB) in UTF-8",
            )
        )
        return None
    return value


def _price(errors: list[FieldError], value: Any) -> Decimal | None:
    if value is None:
        errors.append(FieldError(field="price", message="is required"))
        return None
    # bool is an int in Python, but `true` is no price.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        errors.append(FieldError(field="price", message="must be a number"))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError(field="price", message="must be a finite number"))
        return None
    # repr of a float is its shortest round-tripping form: 19.99, not 19.989999...
    price = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not price.is_finite():
        errors.append(FieldError(field="price", message="must be a finite number"))
        return None
    if price < 0:
        errors.append(FieldError(field="price", message="must be zero or more"))
        return None
    if price > MAX_PRICE:
        errors.append(FieldError(field="price", message=f"must be at most {MAX_PRICE}"))
        return None
    exponent = price.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PRICE_DECIMALS:
        errors.append(
            FieldError(field="price", message=f"must have at most {MAX_PRICE_DECIMALS} decimals")
        )
        return None
    return price


def _currency(errors: list[FieldError], value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not _CURRENCY.match(value):
        errors.append(
            FieldError(field="currency", message="must be an ISO 4217 code of 3 capital letters")
        )
        return default
    return value


def _url(errors: list[FieldError], name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(field=name, message="must be a string"))
        return None
    if len(value) > MAX_URL_CHARS:
        errors.append(FieldError(field=name, message=f"must be at most {MAX_URL_CHARS} characters"))
        return None
    # Browsers drop leading blanks and tabs inside a scheme ("java\tscript:"), so refuse any.
    if not _storable(value) or _CONTROL.search(value) or any(ch.isspace() for ch in value):
        errors.append(
            FieldError(field=name, message="must not contain spaces or control characters")
        )
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        errors.append(FieldError(field=name, message="must be an absolute http(s) URL"))
        return None
    if parts.scheme.lower() not in _URL_SCHEMES or not parts.hostname:
        errors.append(FieldError(field=name, message="must be an absolute http(s) URL"))
        return None
    return value


def _attributes(errors: list[FieldError], value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.append(FieldError(field="attributes", message="must be a JSON object"))
        return {}
    try:
        serialized = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        errors.append(
            FieldError(
                field="attributes", message="must hold only JSON values (no NaN or Infinity)"
            )
        )
        return {}
    if not _storable(serialized) or "\\u0000" in serialized:
        errors.append(FieldError(field="attributes", message=_UNSTORABLE))
        return {}
    if len(serialized.encode("utf-8")) > MAX_ATTRIBUTES_BYTES:
        errors.append(
            FieldError(
                field="attributes",
                message=f"must be at most {MAX_ATTRIBUTES_BYTES} bytes (8 KB) as JSON",
            )
        )
        return {}
    return dict(value)


def _storable(text: str) -> bool:
    # PostgreSQL refuses NUL and lone surrogates (which JSON's \\ud800 escapes can produce).
    return "\x00" not in text and is_unicode_text(text)


CATALOG_CURSOR = "catalog"


def encode_cursor(product_id: str) -> str:
    """An opaque cursor that resumes a listing after `product_id` (keyset, stable under inserts;
    domain.cursors)."""
    return cursors.encode_cursor(CATALOG_CURSOR, product_id)


def decode_cursor(cursor: str) -> str:
    """The product id a cursor resumes after; ValidationFailed for anything not ours (the format
    before domain.cursors is still read: clients may hold one)."""
    found = cursors.decode_cursor(cursor, CATALOG_CURSOR, arity=1)
    after: object = found[0] if found else None
    if found is None:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
            after = data["after"]
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
            after = None
    if not isinstance(after, str) or not after or not _storable(after):
        raise ValidationFailed(
            "The cursor is not valid.",
            errors=[FieldError(field="cursor", message="is not a cursor this api issued")],
        )
    return after
