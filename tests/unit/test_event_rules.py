"""Pure event rules: validation, dedupe digest, last-click attribution."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from hashlib import sha256
from typing import Any

import pytest

from domain.errors import ValidationFailed
from domain.events import (
    Click,
    Purchase,
    attribute,
    batch_items,
    check_event,
    dedupe_digest,
    parse_event,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TENANT = "t-1"


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _raw(**fields: object) -> dict[str, object]:
    return {"eventType": "product_viewed", "userId": "u", "productId": "p", **fields}


def test_a_missing_timestamp_takes_the_server_time() -> None:
    assert parse_event(_raw(), tenant_id=TENANT, now=NOW).occurred_at == NOW


def test_timestamps_are_normalised_to_utc_so_equal_moments_dedupe() -> None:
    a = parse_event(_raw(timestamp="2026-06-01T13:00:00+01:00"), tenant_id=TENANT, now=NOW)
    b = parse_event(_raw(timestamp="2026-06-01T12:00:00Z"), tenant_id=TENANT, now=NOW)
    assert a.digest == b.digest and a.event_id == b.event_id


def test_the_digest_changes_with_each_part_of_the_dedupe_key() -> None:
    base: dict[str, Any] = {
        "user_id": "u",
        "event_type": "purchase",
        "product_id": "p",
        "occurred_at": NOW,
    }
    digests = {dedupe_digest(tenant_id=TENANT, **base)}
    for name, value in [
        ("user_id", "v"),
        ("event_type", "add_to_cart"),
        ("product_id", "q"),
        ("occurred_at", NOW + timedelta(microseconds=1)),
    ]:
        digests.add(dedupe_digest(tenant_id=TENANT, **{**base, name: value}))
    digests.add(dedupe_digest(tenant_id="t-2", **base))
    assert len(digests) == 6


def test_an_event_older_than_a_day_is_flagged_stale() -> None:
    old = (NOW - timedelta(hours=25)).isoformat()
    assert parse_event(_raw(timestamp=old), tenant_id=TENANT, now=NOW).flags == ("stale_timestamp",)
    recent = (NOW - timedelta(hours=23)).isoformat()
    assert parse_event(_raw(timestamp=recent), tenant_id=TENANT, now=NOW).flags == ()


def test_a_little_clock_skew_into_the_future_is_tolerated() -> None:
    soon = (NOW + timedelta(minutes=4)).isoformat()
    assert parse_event(_raw(timestamp=soon), tenant_id=TENANT, now=NOW)
    with pytest.raises(ValidationFailed):
        parse_event(
            _raw(timestamp=(NOW + timedelta(minutes=6)).isoformat()), tenant_id=TENANT, now=NOW
        )


def test_every_broken_rule_is_reported_at_once() -> None:
    _, errors = check_event(
        {"eventType": "purchase", "userId": "", "productId": "p" * 257, "metadata": {}},
        tenant_id=TENANT,
        now=NOW,
    )
    assert {e.field for e in errors} == {"userId", "productId", "metadata.price"}


def test_a_boolean_is_not_a_price_and_metadata_counts_bytes_not_characters() -> None:
    _, errors = check_event(
        _raw(eventType="purchase", metadata={"price": True}), tenant_id=TENANT, now=NOW
    )
    assert [e.field for e in errors] == ["metadata.price"]
    _, errors = check_event(_raw(metadata={"n": "é" * 2100}), tenant_id=TENANT, now=NOW)
    assert [e.field for e in errors] == ["metadata"]


@pytest.mark.parametrize(
    "shape",
    [
        lambda n: {"note": "x" * n},
        lambda n: {"quotes": '"' * (n // 2)},
        lambda n: {f"k{i}": i for i in range(n // 7)},
        lambda n: {"list": [1.5] * (n // 4), "nested": {"a": [None, True, "y"]}},
    ],
)
def test_metadata_is_refused_exactly_past_4096_bytes_of_compact_json(shape: Any) -> None:
    # Find the largest size of this shape that fits, then check one step more is refused.
    fits = [n for n in range(1, 4200) if len(_compact(shape(n))) <= 4096]
    at_limit, over = shape(max(fits)), shape(max(fits) + 8)
    assert len(_compact(over)) > 4096
    assert check_event(_raw(metadata=at_limit), tenant_id=TENANT, now=NOW)[1] == []
    _, errors = check_event(_raw(metadata=over), tenant_id=TENANT, now=NOW)
    assert [e.field for e in errors] == ["metadata"]


def test_metadata_with_nan_or_nul_is_refused_whatever_its_size() -> None:
    for metadata in ({"x": float("nan")}, {"x": [float("inf")]}, {"x\x00": 1}, {"x": "\x00"}):
        _, errors = check_event(_raw(metadata=metadata), tenant_id=TENANT, now=NOW)
        assert [e.field for e in errors] == ["metadata"]


def test_the_queue_message_carries_the_utc_time_the_digest_was_made_of() -> None:
    raw = _raw(timestamp="2026-06-01T14:00:00+02:00")
    event = parse_event(raw, tenant_id=TENANT, now=NOW)
    message = event.to_message()
    assert message["ts"] == "2026-06-01T12:00:00.000000+00:00"
    assert message["id"] == f"ev_{event.digest}"
    assert event.digest == dedupe_digest(
        tenant_id=TENANT,
        user_id="u",
        event_type="product_viewed",
        product_id="p",
        occurred_at=datetime.fromisoformat(message["ts"]),
    )


def test_digests_hash_the_isoformat_text_of_the_time_whatever_seconds_came_before() -> None:
    start = datetime(1970, 1, 1, tzinfo=UTC)
    # Seconds with and without a fraction, across days and past the cache's size, then again.
    moments = [
        start + timedelta(seconds=7919 * n, microseconds=n if n % 2 else 0) for n in range(12_000)
    ]
    moments.append(datetime(2026, 6, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))))
    for moment in moments + moments[:50]:
        expected = moment.astimezone(UTC).isoformat(timespec="microseconds")
        assert (
            dedupe_digest(
                tenant_id=TENANT, user_id="u", event_type="e", product_id="p", occurred_at=moment
            )
            == sha256("\x1f".join((TENANT, "u", "e", "p", expected)).encode()).hexdigest()[:32]
        )


def test_an_event_type_that_is_not_text_is_a_field_error() -> None:
    for value in (["purchase"], {"a": 1}, 3):
        _, errors = check_event(_raw(eventType=value), tenant_id=TENANT, now=NOW)
        assert [e.field for e in errors] == ["eventType"]


def test_nul_characters_are_refused_because_postgresql_cannot_store_them() -> None:
    _, errors = check_event(_raw(userId="a\x00b"), tenant_id=TENANT, now=NOW)
    assert [e.field for e in errors] == ["userId"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"userId": "u\ud800"}, "userId"),
        ({"productId": "\udfffp"}, "productId"),
        ({"sessionId": "s\udc00"}, "sessionId"),
        ({"eventId": "e\ud83d"}, "eventId"),
        ({"metadata": {"note": "\udfff"}}, "metadata"),
        ({"metadata": {"\ud800": 1}}, "metadata"),
    ],
)
def test_text_with_an_unpaired_surrogate_is_refused_because_it_cannot_be_encoded(
    fields: dict[str, Any], field: str
) -> None:
    # json.loads('"\\ud800"') gives such a string; an import file can hold one too.
    _, errors = check_event(_raw(**fields), tenant_id=TENANT, now=NOW)
    assert [e.field for e in errors] == [field]


def test_text_beyond_ascii_and_paired_surrogates_decoded_are_accepted() -> None:
    event = parse_event(
        _raw(userId="Zoë", sessionId=json.loads('"\\ud83d\\ude00"'), metadata={"note": "ü"}),
        tenant_id=TENANT,
        now=NOW,
    )
    assert event.user_id == "Zoë" and event.session_id == "\U0001f600"


def test_a_batch_envelope_needs_one_to_a_hundred_events() -> None:
    assert len(batch_items({"events": [{}] * 100})) == 100
    bodies: list[Any] = [
        {"events": []},
        {"events": [{}] * 101},
        {"events": {}},
        [],
        {"events": [], "x": 1},
    ]
    for body in bodies:
        with pytest.raises(ValidationFailed):
            batch_items(body)


def _click(event_id: str, minutes_before: float, user: str = "u") -> Click:
    return Click(event_id, user, "p", NOW - timedelta(minutes=minutes_before))


def _purchase(event_id: str, minutes_after_noon: float = 0, user: str = "u") -> Purchase:
    return Purchase(event_id, user, "p", NOW + timedelta(minutes=minutes_after_noon))


def test_the_last_click_inside_the_window_wins() -> None:
    pairs = attribute([_purchase("buy")], [_click("early", 20), _click("late", 5)])
    assert [(p.event_id, c.event_id) for p, c in pairs] == [("buy", "late")]


def test_the_window_is_thirty_minutes_inclusive() -> None:
    assert attribute([_purchase("buy")], [_click("edge", 30)])
    assert not attribute([_purchase("buy")], [_click("old", 30.01)])


def test_a_click_after_the_purchase_or_of_another_user_never_counts() -> None:
    assert not attribute([_purchase("buy")], [_click("after", -1), _click("other", 1, user="v")])


def test_one_click_earns_one_purchase_and_the_earlier_purchase_gets_it() -> None:
    pairs = attribute([_purchase("second", 2), _purchase("first", 1)], [_click("only", 5)])
    assert [(p.event_id, c.event_id) for p, c in pairs] == [("first", "only")]


def test_two_purchases_take_the_two_latest_free_clicks() -> None:
    pairs = attribute([_purchase("a", 0), _purchase("b", 1)], [_click("c1", 10), _click("c2", 2)])
    assert {(p.event_id, c.event_id) for p, c in pairs} == {("a", "c2"), ("b", "c1")}
