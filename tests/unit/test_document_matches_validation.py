"""What the OpenAPI document states about a request is what validation does with it: integral
numbers are integers, blank names are refused, the patterns shared with the domain rules agree
with them, and the fuzzing run's exceptions each name their reason and fields."""

from __future__ import annotations

import re

import pytest
from pydantic import Field

from api.validation import NON_BLANK_PATTERN, ApiModel, NonBlank, validate
from bench.fuzz.config import ALLOWANCES, schemathesis_config, stated_fields
from domain import catalog, usage, widgets
from domain.errors import ValidationFailed


def _matches(pattern: str, value: str) -> bool:
    """A JSON Schema (ECMA-262) match: unanchored, and `$` is the very end of the text."""
    return re.search(pattern.replace("$", r"\Z"), value) is not None


class _Body(ApiModel):
    count: int = Field(ge=0, le=10)
    limit: int | None = None
    ratio: float = 0.5
    name: NonBlank = "x"


def test_an_integral_number_is_an_integer_as_json_schema_says() -> None:
    body = validate({"count": 3.0, "limit": 7.0, "ratio": 1}, _Body)
    assert (body.count, body.limit, body.ratio) == (3, 7, 1.0)
    assert type(body.count) is int


@pytest.mark.parametrize("value", [3.5, True, "3", None])
def test_a_body_is_held_to_its_types_without_conversion(value: object) -> None:
    with pytest.raises(ValidationFailed):
        validate({"count": value}, _Body)


def test_the_non_blank_pattern_is_exactly_what_strip_leaves_something_of() -> None:
    for code in [*range(0x3001), 0xFEFF]:
        char = chr(code)
        assert _matches(NON_BLANK_PATTERN, char) == bool(char.strip()), hex(code)


@pytest.mark.parametrize(
    ("value", "valid"),
    [("home", True), ("a.b_c-1", True), ("-lead", False), ("home\n", False), ("", False)],
)
def test_the_placement_pattern_and_its_check_agree(value: str, valid: bool) -> None:
    assert _matches(widgets.PLACEMENT_ID_PATTERN, value) is valid
    try:
        widgets.check_placement_id(value)
        checked = True
    except ValueError:
        checked = False
    assert checked is valid


@pytest.mark.parametrize(
    "value", ['"Open Sans", Arial, sans-serif', "Arial", "a,,b", "url(x)", "Times New Roman"]
)
def test_the_font_list_pattern_and_its_check_agree(value: str) -> None:
    try:
        widgets.check_font_family(value)
        checked = True
    except ValueError:
        checked = False
    assert _matches(widgets.FONT_FAMILY_PATTERN, value) is checked


@pytest.mark.parametrize(
    "value",
    ["http://a", "HTTPS://shop.example/x?y#z", "http://u@b/", "ftp://a", "http://a b", "http:///x"],
)
def test_the_url_pattern_and_the_catalog_check_agree(value: str) -> None:
    errors: list[object] = []
    catalog._url(errors, "url", value)  # type: ignore[arg-type]
    assert _matches(catalog.HTTP_URL_PATTERN, value) is (not errors)


@pytest.mark.parametrize(
    ("value", "valid"), [("2026-12", True), ("0000-01", False), ("2026-13", False)]
)
def test_a_month_is_the_pattern_the_document_states(value: str, valid: bool) -> None:
    assert _matches(usage.MONTH_PATTERN, value) is valid
    assert (usage.parse_month(value) is not None) is valid


def test_every_exception_of_the_fuzzing_run_states_its_reason_and_is_configured() -> None:
    config = schemathesis_config(tenant_id="t1", second_tenant_id="t2", third_tenant_id="t3")
    for allowance in ALLOWANCES:
        assert len(allowance.reason) > 30 and allowance.operations
        assert all(f'"{operation}"' in config for operation in allowance.operations)
    assert stated_fields("POST /api/v1/users/merge") == ("",)
    assert stated_fields("GET /api/v1/plans") is None


@pytest.mark.parametrize("value", ["sku-1", " a ", "", "   ", "a\tb", "a\x00", "\u3000", "é"])
def test_the_product_id_and_name_patterns_agree_with_the_catalog_checks(value: str) -> None:
    for field, pattern in (
        ("productId", catalog.PRODUCT_ID_PATTERN),
        ("name", catalog.NAME_PATTERN),
    ):
        item = {"productId": "p", "name": "n", "price": 1, field: value}
        refused = any(e.field == field for e in catalog.item_errors(item)[1])
        assert _matches(pattern, value) is not refused, (field, value)
