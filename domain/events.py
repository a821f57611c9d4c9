"""Event rules: validation, the dedupe key, trending weights and last-click revenue attribution."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.errors import FieldError, ValidationFailed
from domain.event_message import MessageEvent
from domain.interactions import EVENT_WEIGHTS
from domain.text import is_unicode_text

EVENT_TYPES = (
    "product_viewed",
    "product_clicked",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "recommendation_clicked",
    "recommendation_impressed",
)
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
RECOMMENDATION_TYPES = frozenset({"recommendation_clicked", "recommendation_impressed"})
MAX_ID_LENGTH = 256
MAX_CLIENT_EVENT_ID_LENGTH = 128
MAX_PLACEMENT_ID_LENGTH = 128
MAX_METADATA_BYTES = 4096
MAX_BATCH_EVENTS = 100
# Clocks of merchant servers drift; a little future is tolerated, more is a client bug.
FUTURE_TOLERANCE = timedelta(minutes=5)
STALE_AFTER = timedelta(hours=24)
ATTRIBUTION_WINDOW = timedelta(minutes=30)
# numeric(14, 4) in the events table.
MAX_PRICE = 10**10 - 1

WARNING_UNKNOWN_PRODUCT = "unknown_product"
WARNING_STALE_TIMESTAMP = "stale_timestamp"
# Not a warning: an event sent with a test key (rk_test_), stored flagged so that analytics and
# training leave it out; never shown to the client as a warning.
FLAG_TEST = "test"


def warnings_of(flags: Iterable[str]) -> list[str]:
    """The flags of an accepted event that its answer reports as warnings."""
    return [flag for flag in flags if flag != FLAG_TEST]


# How much one event of each type adds to a product's live trending score: the interaction
# weights, without the negative ones (a removal lowers one user's affinity, not a trend).
TRENDING_WEIGHTS: Mapping[str, float] = {
    event_type: weight for event_type, weight in EVENT_WEIGHTS.items() if weight > 0
}

_FIELDS = frozenset(
    {"eventType", "userId", "productId", "timestamp", "sessionId", "metadata", "eventId"}
)


@dataclass(frozen=True)
class Event:
    """One valid event, normalised (UTC time, derived id and dedupe digest)."""

    event_id: str
    client_event_id: bool
    digest: str
    event_type: str
    user_id: str
    product_id: str
    occurred_at: datetime
    session_id: str | None
    metadata: dict[str, Any]
    price: float | None
    placement_id: str | None
    recommendation_id: str | None
    flags: tuple[str, ...] = field(default=())
    # occurred_at as the ISO 8601 text the dedupe digest hashed (made once per event).
    occurred_at_text: str = ""

    def to_message(self) -> MessageEvent:
        """The JSON-primitive form carried in a queue message: optional fields only when set
        (a quarter less to encode, hold in Redis while a backlog waits, and decode), flags
        always and last (the ingest pre-check script adds a warning to the end of the encoded
        form)."""
        # flags come last, below
        message: MessageEvent = {  # type: ignore[typeddict-item]
            "id": self.event_id,
            "type": self.event_type,
            "user": self.user_id,
            "product": self.product_id,
            "ts": self.occurred_at_text or _moment_text(self.occurred_at),
        }
        if self.client_event_id:
            message["client"] = True
        if self.session_id is not None:
            message["session"] = self.session_id
        if self.metadata:
            message["meta"] = self.metadata
        if self.price is not None:
            message["price"] = self.price
        if self.placement_id is not None:
            message["placement"] = self.placement_id
        if self.recommendation_id is not None:
            message["rec"] = self.recommendation_id
        message["flags"] = list(self.flags)
        return message


# The text of each second, cached: the events of a batch, and most events of a busy second,
# share theirs, and isoformat costs twice the lookup and the fraction together (this runs for
# every event the api accepts). The text must stay byte for byte isoformat's: digests hash it.
_SECOND_TEXTS: dict[int, str] = {}
_MAX_SECOND_TEXTS = 4096


def _moment_text(moment: datetime) -> str:
    if moment.tzinfo is not UTC:  # validated timestamps are in UTC already
        moment = moment.astimezone(UTC)
    second = ((moment.toordinal() * 24 + moment.hour) * 60 + moment.minute) * 60 + moment.second
    head = _SECOND_TEXTS.get(second)
    if head is None:
        if len(_SECOND_TEXTS) >= _MAX_SECOND_TEXTS:
            _SECOND_TEXTS.clear()
        head = _SECOND_TEXTS[second] = moment.replace(tzinfo=None).isoformat(timespec="seconds")
    return f"{head}.{moment.microsecond:06d}+00:00"


def _digest(tenant_id: str, user_id: str, event_type: str, product_id: str, moment: str) -> str:
    material = "\x1f".join((tenant_id, user_id, event_type, product_id, moment))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def dedupe_digest(
    *, tenant_id: str, user_id: str, event_type: str, product_id: str, occurred_at: datetime
) -> str:
    """32 hex chars identifying (tenant, user, type, product, time): equal events, equal digest."""
    return _digest(tenant_id, user_id, event_type, product_id, _moment_text(occurred_at))


DERIVED_ID_PREFIX = "ev_"


def derived_event_id(digest: str) -> str:
    """The event id of an event that came without a client eventId."""
    return f"{DERIVED_ID_PREFIX}{digest}"


UNPAIRED_SURROGATE = "Must be Unicode text (a UTF-16 surrogate without its pair is not)"


def _text(
    raw: Mapping[str, Any],
    name: str,
    errors: list[FieldError],
    *,
    required: bool,
    max_length: int,
    prefix: str,
) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            errors.append(FieldError(f"{prefix}{name}", "Field required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(f"{prefix}{name}", "Must be a string"))
        return None
    if not 1 <= len(value) <= max_length:
        errors.append(FieldError(f"{prefix}{name}", f"Must be 1 to {max_length} characters"))
        return None
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refusing here keeps it out of the queue.
        errors.append(FieldError(f"{prefix}{name}", "Must not contain NUL characters"))
        return None
    if not value.isascii() and not is_unicode_text(value):
        errors.append(FieldError(f"{prefix}{name}", UNPAIRED_SURROGATE))
        return None
    return value


def _timestamp(
    raw: Mapping[str, Any], errors: list[FieldError], *, now: datetime, prefix: str
) -> datetime:
    value = raw.get("timestamp")
    if value is None:
        return now
    if not isinstance(value, str):
        errors.append(FieldError(f"{prefix}timestamp", "Must be an ISO 8601 string"))
        return now
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        errors.append(FieldError(f"{prefix}timestamp", "Must be an ISO 8601 date-time"))
        return now
    if moment.tzinfo is None:
        errors.append(FieldError(f"{prefix}timestamp", "Must include a time zone offset"))
        return now
    moment = moment.astimezone(UTC)
    if moment > now + FUTURE_TOLERANCE:
        errors.append(FieldError(f"{prefix}timestamp", "Must not be in the future"))
    if moment.year < 1970:
        errors.append(FieldError(f"{prefix}timestamp", "Must not be before 1970"))
    return moment


def _json_size_bound(value: Any) -> int | None:
    """An upper bound of the UTF-8 bytes of `value` as compact JSON, or None when only encoding
    can tell (NaN or Infinity, NUL characters, text needing escapes, unusual types)."""
    kind = type(value)
    if kind is str:
        # Printable ASCII escapes only quotes and backslashes, one extra byte each.
        if value.isascii() and value.isprintable():
            return len(value) + 2 + value.count('"') + value.count("\\")
        return None
    if kind is dict:
        total = 2 + 2 * len(value)  # braces, a colon and a comma per member
        for key, member in value.items():
            key_size = _json_size_bound(key)
            member_size = _json_size_bound(member)
            if key_size is None or member_size is None:
                return None
            total += key_size + member_size
        return total
    if kind is list:
        total = 1 + max(1, len(value))
        for member in value:
            member_size = _json_size_bound(member)
            if member_size is None:
                return None
            total += member_size
        return total
    if kind is bool or value is None:
        return 5
    if kind is int:
        return len(str(value))
    if kind is float:
        return 24 if math.isfinite(value) else None  # repr is at most 24 characters
    return None


def _metadata(raw: Mapping[str, Any], errors: list[FieldError], *, prefix: str) -> dict[str, Any]:
    value = raw.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(f"{prefix}metadata", "Must be a JSON object"))
        return {}
    # Most metadata is a few short plain fields: bounding its size is cheaper than encoding it.
    bound = _json_size_bound(value)
    if bound is not None and bound <= MAX_METADATA_BYTES:
        return value
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        errors.append(FieldError(f"{prefix}metadata", "Must not contain NaN or Infinity"))
        return {}
    if not is_unicode_text(encoded):
        errors.append(FieldError(f"{prefix}metadata", UNPAIRED_SURROGATE))
        return {}
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        errors.append(
            FieldError(f"{prefix}metadata", f"Must be at most {MAX_METADATA_BYTES} bytes")
        )
        return {}
    if "\\u0000" in encoded or "\x00" in encoded:
        errors.append(FieldError(f"{prefix}metadata", "Must not contain NUL characters"))
        return {}
    return value


def _price(metadata: Mapping[str, Any], errors: list[FieldError], *, prefix: str) -> float | None:
    value = metadata.get("price")
    if value is None:
        errors.append(FieldError(f"{prefix}metadata.price", "Required for a purchase"))
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.append(FieldError(f"{prefix}metadata.price", "Must be a number"))
        return None
    if not 0 <= value <= MAX_PRICE:
        errors.append(FieldError(f"{prefix}metadata.price", f"Must be between 0 and {MAX_PRICE}"))
        return None
    return float(value)


def _placement(
    metadata: Mapping[str, Any], errors: list[FieldError], *, required: bool, prefix: str
) -> str | None:
    return _text(
        metadata,
        "placementId",
        errors,
        required=required,
        max_length=MAX_PLACEMENT_ID_LENGTH,
        prefix=f"{prefix}metadata.",
    )


def check_event(
    raw: Any, *, tenant_id: str, now: datetime, prefix: str = ""
) -> tuple[Event | None, list[FieldError]]:
    """The normalised event and no errors, or None and every broken rule of `raw`."""
    if not isinstance(raw, dict):
        return None, [FieldError(prefix.rstrip(".") or "body", "Must be a JSON object")]
    errors: list[FieldError] = (
        []
        if raw.keys() <= _FIELDS
        else [FieldError(f"{prefix}{name}", "Unknown field") for name in sorted(set(raw) - _FIELDS)]
    )
    event_type = raw.get("eventType")
    if event_type is None:
        errors.append(FieldError(f"{prefix}eventType", "Field required"))
    elif type(event_type) is not str or event_type not in _EVENT_TYPE_SET:
        errors.append(FieldError(f"{prefix}eventType", f"Must be one of {', '.join(EVENT_TYPES)}"))
    user_id = _text(raw, "userId", errors, required=True, max_length=MAX_ID_LENGTH, prefix=prefix)
    product_id = _text(
        raw, "productId", errors, required=True, max_length=MAX_ID_LENGTH, prefix=prefix
    )
    session_id = _text(
        raw, "sessionId", errors, required=False, max_length=MAX_ID_LENGTH, prefix=prefix
    )
    client_id = _text(
        raw, "eventId", errors, required=False, max_length=MAX_CLIENT_EVENT_ID_LENGTH, prefix=prefix
    )
    occurred_at = _timestamp(raw, errors, now=now, prefix=prefix)
    metadata = _metadata(raw, errors, prefix=prefix)
    price = _price(metadata, errors, prefix=prefix) if event_type == "purchase" else None
    placement_id = _placement(
        metadata,
        errors,
        required=type(event_type) is str and event_type in RECOMMENDATION_TYPES,
        prefix=prefix,
    )
    recommendation_id = metadata.get("recommendationId")
    if errors or user_id is None or product_id is None or not isinstance(event_type, str):
        return None, errors
    # Made once: the digest hashes it and the queue message carries it.
    moment = _moment_text(occurred_at)
    digest = _digest(tenant_id, user_id, event_type, product_id, moment)
    flags = (WARNING_STALE_TIMESTAMP,) if occurred_at < now - STALE_AFTER else ()
    event = Event(
        event_id=client_id or derived_event_id(digest),
        client_event_id=client_id is not None,
        digest=digest,
        event_type=event_type,
        user_id=user_id,
        product_id=product_id,
        occurred_at=occurred_at,
        session_id=session_id,
        metadata=metadata,
        price=price,
        placement_id=placement_id,
        recommendation_id=str(recommendation_id)[:MAX_ID_LENGTH]
        if isinstance(recommendation_id, str | int)
        else None,
        flags=flags,
        occurred_at_text=moment,
    )
    return event, []


def parse_event(raw: Any, *, tenant_id: str, now: datetime) -> Event:
    """The normalised event, or ValidationFailed listing every broken rule."""
    event, errors = check_event(raw, tenant_id=tenant_id, now=now)
    if event is None:
        raise ValidationFailed("The event breaks the ingestion rules.", errors=errors)
    return event


def batch_items(raw: Any) -> list[Any]:
    """The events of a batch body, or ValidationFailed when the envelope itself is wrong."""
    if not isinstance(raw, dict) or set(raw) != {"events"}:
        raise ValidationFailed(
            "A batch is an object with one field, events.",
            errors=[FieldError("events", "Field required; no other fields are allowed")],
        )
    items = raw["events"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_EVENTS:
        raise ValidationFailed(
            f"A batch holds 1 to {MAX_BATCH_EVENTS} events.",
            errors=[FieldError("events", f"Must be a list of 1 to {MAX_BATCH_EVENTS} events")],
        )
    return items


@dataclass(frozen=True)
class Click:
    """A recommendation click that may earn a purchase's revenue."""

    event_id: str
    user_id: str
    product_id: str
    clicked_at: datetime


@dataclass(frozen=True)
class Purchase:
    """A purchase waiting for attribution."""

    event_id: str
    user_id: str
    product_id: str
    purchased_at: datetime


def attribute(
    purchases: Iterable[Purchase], clicks: Iterable[Click]
) -> list[tuple[Purchase, Click]]:
    """Last-click attribution: each purchase to the latest free click of the same user and
    product in the 30 minutes before it; a click earns at most one purchase."""
    by_pair: dict[tuple[str, str], list[Click]] = {}
    for click in clicks:
        by_pair.setdefault((click.user_id, click.product_id), []).append(click)
    for pair_clicks in by_pair.values():
        pair_clicks.sort(key=lambda c: (c.clicked_at, c.event_id))
    taken: set[str] = set()
    found = []
    # Earlier purchases choose first, so a later purchase never steals the click an earlier one
    # was made from.
    for purchase in sorted(purchases, key=lambda p: (p.purchased_at, p.event_id)):
        window_start = purchase.purchased_at - ATTRIBUTION_WINDOW
        for click in reversed(by_pair.get((purchase.user_id, purchase.product_id), [])):
            if click.event_id in taken or click.clicked_at > purchase.purchased_at:
                continue
            if click.clicked_at < window_start:
                break
            taken.add(click.event_id)
            found.append((purchase, click))
            break
    return found
