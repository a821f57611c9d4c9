"""The catalog's validation rules, cursors and cards, without I/O."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from domain import catalog as rules
from domain.errors import ValidationFailed


def valid(**changes: Any) -> dict[str, Any]:
    """A valid item with `changes` applied (a value of ... removes the field)."""
    item: dict[str, Any] = {
        "productId": "sku-1",
        "name": "Blue mug",
        "category": "kitchen",
        "price": 12.5,
        "currency": "EUR",
        "imageUrl": "https://cdn.example.com/mug.png",
        "url": "https://shop.example.com/mug",
        "description": "A mug.",
        "attributes": {"color": "blue"},
        "available": True,
    }
    for name, value in changes.items():
        if value is ...:
            item.pop(name, None)
        else:
            item[name] = value
    return item


def failing_fields(data: Any, **kwargs: Any) -> set[str]:
    """The fields that `parse_item` reports as broken."""
    with pytest.raises(ValidationFailed) as caught:
        rules.parse_item(data, **kwargs)
    return {error.field for error in caught.value.errors}


def test_a_complete_item_parses_with_exact_price() -> None:
    item = rules.parse_item(valid(price=19.99))
    assert item.product_id == "sku-1"
    assert item.price == Decimal("19.99")
    assert item.attributes == {"color": "blue"}


def test_optional_fields_take_their_defaults() -> None:
    item = rules.parse_item({"productId": "p", "name": "n", "price": 0}, default_currency="GBP")
    assert (item.category, item.currency, item.available, item.attributes) == ("", "GBP", True, {})
    assert item.image_url is None and item.url is None and item.description is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"productId": "x" * 257}, "productId"),
        ({"productId": ""}, "productId"),
        ({"productId": ...}, "productId"),
        ({"productId": 42}, "productId"),
        ({"productId": "a\nb"}, "productId"),
        ({"name": ...}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 501}, "name"),
        ({"category": "c" * 201}, "category"),
        ({"price": -0.01}, "price"),
        ({"price": ...}, "price"),
        ({"price": "12"}, "price"),
        ({"price": True}, "price"),
        ({"price": float("inf")}, "price"),
        ({"price": 1.23456}, "price"),
        ({"price": 1e11}, "price"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "data:text/html,hi"}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "/relative/path"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": " https://example.com"}, "url"),
        ({"url": "https://example.com/" + "a" * 2048}, "url"),
        ({"imageUrl": "javascript:alert(1)"}, "imageUrl"),
        ({"imageUrl": "java\tscript:alert(1)"}, "imageUrl"),
        ({"imageUrl": "file:///etc/passwd"}, "imageUrl"),
        ({"attributes": {"blob": "x" * 9 * 1024}}, "attributes"),
        ({"attributes": ["not", "an", "object"]}, "attributes"),
        ({"attributes": "color=blue"}, "attributes"),
        ({"attributes": {"bad": "nul\x00"}}, "attributes"),
        ({"description": "d" * 11 * 1024}, "description"),
        ({"description": "é" * 5200}, "description"),
        ({"description": "lone \ud800 surrogate"}, "description"),
        ({"available": "yes"}, "available"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_each_rule_refuses_its_bad_value(changes: dict[str, Any], field: str) -> None:
    assert failing_fields(valid(**changes)) == {field}


def test_limits_themselves_are_allowed() -> None:
    big_attributes = {"blob": "x" * (rules.MAX_ATTRIBUTES_BYTES - len('{"blob":""}'))}
    item = rules.parse_item(
        valid(
            productId="p" * 256,
            name="n" * 500,
            category="c" * 200,
            price=9999999999.9999,
            description="d" * rules.MAX_DESCRIPTION_BYTES,
            attributes=big_attributes,
            url="http://example.com/" + "a" * (2048 - len("http://example.com/")),
        )
    )
    assert len(json.dumps(item.attributes, separators=(",", ":"))) == rules.MAX_ATTRIBUTES_BYTES


def test_every_broken_field_is_reported_at_once() -> None:
    fields = failing_fields({"productId": "", "price": -1, "url": "javascript:x"})
    assert fields == {"productId", "name", "price", "url"}


def test_a_non_object_item_is_refused() -> None:
    assert failing_fields(["not", "an", "item"]) == {""}


def test_a_put_body_must_name_the_path_product_or_none() -> None:
    item = rules.parse_item(valid(productId=...), product_id="from-path")
    assert item.product_id == "from-path"
    assert failing_fields(valid(productId="other"), product_id="from-path") == {"productId"}


def test_tenant_currency_comes_from_config_else_usd() -> None:
    assert rules.tenant_currency({"currency": "JPY"}) == "JPY"
    assert rules.tenant_currency({"currency": "nope"}) == "USD"
    assert rules.tenant_currency(None) == "USD"


def test_a_message_round_trip_keeps_the_item() -> None:
    item = rules.parse_item(valid(price=0.1, currency=...), default_currency="CHF")
    assert rules.from_message(json.loads(json.dumps(rules.to_message(item)))) == item


def test_cursor_round_trips_any_product_id() -> None:
    for product_id in ["a", "sku/with/slashes", "ünïcødé ☕", "x" * 256]:
        assert rules.decode_cursor(rules.encode_cursor(product_id)) == product_id


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", "eyJ4IjoxfQ", "eyJhZnRlciI6MX0"])
def test_a_forged_or_broken_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        rules.decode_cursor(cursor)
    assert caught.value.errors[0].field == "cursor"


def test_a_card_carries_what_a_recommendation_shows() -> None:
    card = rules.build_card(
        name="Mug",
        price=Decimal("12.50"),
        currency="EUR",
        image_url=None,
        url="https://shop.example.com/mug",
        category="kitchen",
        available=False,
    )
    assert card == {
        "name": "Mug",
        "price": 12.5,
        "currency": "EUR",
        "imageUrl": None,
        "url": "https://shop.example.com/mug",
        "category": "kitchen",
        "available": False,
    }
