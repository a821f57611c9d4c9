"""Widget configuration rules: defaults, allowed values and the checks on free-text fields."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, Final

LAYOUTS: Final = ("grid", "carousel", "list")
MIN_COLUMNS: Final = 2
MAX_COLUMNS: Final = 6
MIN_ITEMS: Final = 4
MAX_ITEMS: Final = 20
CTA_MAX_CHARS: Final = 40
FONT_FAMILY_MAX_CHARS: Final = 200
PLACEMENT_ID_MAX_CHARS: Final = 128

DEFAULT_LAYOUT: Final = "grid"
DEFAULT_COLUMNS: Final = 4
DEFAULT_SHOW_PRICE: Final = True
DEFAULT_SHOW_RATING: Final = False
DEFAULT_CTA_TEXT: Final = "View Product"
DEFAULT_MAX_ITEMS: Final = 8
DEFAULT_PRIMARY_COLOR: Final = "#2563EB"

# Placement ids end up in Redis keys, URLs and CSS class names of the SDK: keep them plain.
# Whole-string patterns (fullmatch; `$` alone would let a trailing newline through), shared with
# the OpenAPI document so that what it calls valid is exactly what these checks accept.
PLACEMENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PRIMARY_COLOR_PATTERN: Final = r"^#[0-9A-Fa-f]{6}$"
_PLACEMENT_ID = re.compile(PLACEMENT_ID_PATTERN)
_HEX_COLOR = re.compile(PRIMARY_COLOR_PATTERN)
# One family: a quoted name, or one or more CSS identifiers separated by spaces (Times New Roman).
_UNQUOTED = r"[A-Za-z_-][A-Za-z0-9_-]*(?: [A-Za-z_-][A-Za-z0-9_-]*)*"
_QUOTED = r"""(?:"[A-Za-z0-9 _-]+"|'[A-Za-z0-9 _-]+')"""
_UNQUOTED_FAMILY = re.compile(_UNQUOTED)
_QUOTED_FAMILY = re.compile(_QUOTED)
# The whole list as the document states it (check_font_family also takes other blanks than
# spaces around the commas).
FONT_FAMILY_PATTERN: Final = rf"^ *(?:{_UNQUOTED}|{_QUOTED}) *(?:, *(?:{_UNQUOTED}|{_QUOTED}) *)*$"


def check_placement_id(value: str) -> str:
    """Return the placement id if it is 1-128 letters, digits, `_`, `.` or `-`; else ValueError."""
    if not _PLACEMENT_ID.fullmatch(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_primary_color(value: str) -> str:
    """Return the colour upper-cased if it is #RRGGBB; else ValueError."""
    if not _HEX_COLOR.fullmatch(value):
        raise ValueError("must be a hex colour like #2563EB")
    return value.upper()


def check_cta_text(value: str) -> str:
    """Return the call-to-action trimmed if it is 1-40 characters of plain text; else ValueError."""
    text = value.strip()
    if not text:
        raise ValueError("must not be blank")
    if len(text) > CTA_MAX_CHARS:
        raise ValueError(f"must be at most {CTA_MAX_CHARS} characters")
    # The SDK renders it as text, but a storefront theme may not: refuse markup and controls.
    if any(char in "<>" for char in text):
        raise ValueError("must be plain text (no < or >)")
    if any(unicodedata.category(char)[0] == "C" for char in text):
        raise ValueError("must not contain control or invisible characters")
    return text


def check_font_family(value: str) -> str:
    """Return a CSS font-family list (e.g. `"Open Sans", Arial, sans-serif`) if safe; else
    ValueError. It is written into a style attribute, so nothing but family names may pass."""
    if len(value) > FONT_FAMILY_MAX_CHARS:
        raise ValueError(f"must be at most {FONT_FAMILY_MAX_CHARS} characters")
    lowered = value.lower()
    if "url(" in lowered or "expression(" in lowered or any(c in value for c in ";{}<>\\"):
        raise ValueError("must be a plain font list: no url(), expression(), ; { } < > or \\")
    families = [part.strip() for part in value.split(",")]
    if not families or any(not part for part in families):
        raise ValueError("must be a comma-separated list of font family names")
    for family in families:
        if not (_UNQUOTED_FAMILY.fullmatch(family) or _QUOTED_FAMILY.fullmatch(family)):
            raise ValueError(
                f"{family!r} is not a font family name (letters, digits, spaces, '-' or '_', "
                "optionally in quotes)"
            )
    return ", ".join(families)


def default_widget_config(*, placement_id: str) -> dict[str, Any]:
    """The configuration a placement gets for every field left out (the product spec's
    defaults), in the API's camelCase shape."""
    return {
        "placementId": placement_id,
        "layout": DEFAULT_LAYOUT,
        "columns": DEFAULT_COLUMNS,
        "showPrice": DEFAULT_SHOW_PRICE,
        "showRating": DEFAULT_SHOW_RATING,
        "ctaText": DEFAULT_CTA_TEXT,
        "maxItems": DEFAULT_MAX_ITEMS,
        "theme": {"primaryColor": DEFAULT_PRIMARY_COLOR, "fontFamily": None},
        "strategy": None,
    }


def config_etag(config: dict[str, Any]) -> str:
    """A strong entity tag (quoted) of a configuration: equal configs, equal tags."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def etag_matches(*, if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, `*` matches anything)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False
