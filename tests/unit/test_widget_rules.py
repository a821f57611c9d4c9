"""Widget configuration rules, without any I/O."""

from __future__ import annotations

import pytest

from domain import widgets as rules


@pytest.mark.parametrize("placement", ["home", "pdp-1", "cart_sidebar", "a", "x" * 128, "v1.2"])
def test_plain_placement_ids_are_accepted(placement: str) -> None:
    assert rules.check_placement_id(placement) == placement


@pytest.mark.parametrize("placement", ["", "-home", "home page", "a:b", "x" * 129, "é", "a/b"])
def test_placement_ids_outside_the_plain_alphabet_are_refused(placement: str) -> None:
    with pytest.raises(ValueError):
        rules.check_placement_id(placement)


@pytest.mark.parametrize("colour", ["#2563EB", "#000000", "#ffffff", "#AbCdEf"])
def test_hex_colours_are_accepted_and_upper_cased(colour: str) -> None:
    assert rules.check_primary_color(colour) == colour.upper()


@pytest.mark.parametrize("colour", ["2563EB", "#2563E", "#2563EBFF", "#GGGGGG", "red", "#fff"])
def test_anything_but_hash_and_six_hex_digits_is_not_a_colour(colour: str) -> None:
    with pytest.raises(ValueError):
        rules.check_primary_color(colour)


def test_cta_text_is_trimmed() -> None:
    assert rules.check_cta_text("  Buy now  ") == "Buy now"


def test_cta_text_of_exactly_40_characters_is_accepted() -> None:
    assert rules.check_cta_text("x" * 40) == "x" * 40


@pytest.mark.parametrize(
    "text", ["", "   ", "x" * 41, "<b>Buy</b>", "Buy >", "Buy\nnow", "Buy\u200bnow", "a\x00"]
)
def test_cta_text_must_be_1_to_40_characters_of_plain_text(text: str) -> None:
    with pytest.raises(ValueError):
        rules.check_cta_text(text)


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("Arial", "Arial"),
        ("Arial, sans-serif", "Arial, sans-serif"),
        ('"Open Sans",Arial , sans-serif', '"Open Sans", Arial, sans-serif'),
        ("Times New Roman, serif", "Times New Roman, serif"),
        ("'Fira Code', monospace", "'Fira Code', monospace"),
    ],
)
def test_safe_font_lists_are_accepted_and_normalised(given: str, normalised: str) -> None:
    assert rules.check_font_family(given) == normalised


@pytest.mark.parametrize(
    "font",
    [
        "url(https://evil.example/font.woff)",
        "Arial; background: red",
        "Arial} body {color: red",
        "Arial<script>",
        "Arial, ",
        ",Arial",
        '"Open Sans',
        "expression(alert(1))",
        "Arial\\9",
        "1Font",
        "x" * 201,
    ],
)
def test_font_lists_that_could_break_out_of_css_are_refused(font: str) -> None:
    with pytest.raises(ValueError):
        rules.check_font_family(font)


def test_defaults_are_the_product_specs() -> None:
    assert rules.default_widget_config(placement_id="home") == {
        "placementId": "home",
        "layout": "grid",
        "columns": 4,
        "showPrice": True,
        "showRating": False,
        "ctaText": "View Product",
        "maxItems": 8,
        "theme": {"primaryColor": "#2563EB", "fontFamily": None},
        "strategy": None,
    }


def test_equal_configs_have_equal_etags_and_any_change_changes_it() -> None:
    config = rules.default_widget_config(placement_id="home")
    same = dict(reversed(list(config.items())))
    changed = {**config, "columns": 5}
    assert rules.config_etag(config) == rules.config_etag(same)
    assert rules.config_etag(config) != rules.config_etag(changed)
    assert rules.config_etag(config).startswith('"') and rules.config_etag(config).endswith('"')


def test_if_none_match_matches_the_tag_in_a_list_weakly_or_by_star() -> None:
    etag = '"abc"'
    assert rules.etag_matches(if_none_match='"abc"', etag=etag)
    assert rules.etag_matches(if_none_match='"x", W/"abc"', etag=etag)
    assert rules.etag_matches(if_none_match="*", etag=etag)
    assert not rules.etag_matches(if_none_match='"abd"', etag=etag)
    assert not rules.etag_matches(if_none_match=None, etag=etag)
