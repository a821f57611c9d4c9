"""One cursor format for every list: round trips, lists refuse each other's cursors, and the
cursors clients got before the format was shared still resume where they did."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from domain import catalog
from domain.cursors import decode_cursor, encode_cursor
from domain.errors import ValidationFailed
from store import events, experiments, widgets


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_gives_back_the_position_it_was_made_from_and_only_to_its_own_list() -> None:
    cursor = encode_cursor("events", "2026-01-01T00:00:00+00:00", "ev_é/1")
    assert decode_cursor(cursor, "events", arity=2) == ("2026-01-01T00:00:00+00:00", "ev_é/1")
    assert decode_cursor(cursor, "experiments", arity=2) is None
    assert decode_cursor(cursor, "events", arity=1) is None
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


@pytest.mark.parametrize("garbage", ["", "!!!", _b64(b"[1,2]"), _b64(b'{"k":"events","a":[1,2]}')])
def test_anything_else_is_not_a_cursor(garbage: str) -> None:
    assert decode_cursor(garbage, "events", arity=2) is None


def test_every_list_writes_the_shared_format() -> None:
    moment = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    experiment = str(uuid.uuid4())
    made = {
        "events": events.encode_cursor(moment, "ev_1"),
        "experiments": experiments.encode_experiment_cursor(
            "2026-03-01T12:30:00.000000+0000", experiment
        ),
        "widgets": widgets._encode_cursor("home"),
        "catalog": catalog.encode_cursor("sku-1"),
    }
    for kind, cursor in made.items():
        assert decode_cursor(cursor, kind, arity=2 if kind in ("events", "experiments") else 1)
    assert events.decode_cursor(made["events"]) == (moment, "ev_1")
    assert experiments.decode_experiment_cursor(made["experiments"]) == (
        moment,
        uuid.UUID(experiment),
    )
    assert widgets.decode_widget_cursor(made["widgets"]) == "home"
    assert catalog.decode_cursor(made["catalog"]) == "sku-1"
    # One list's cursor is not another's.
    assert events.decode_cursor(made["experiments"]) is None
    assert experiments.decode_experiment_cursor(made["events"]) is None
    with pytest.raises(ValidationFailed):
        catalog.decode_cursor(made["widgets"])


def test_cursors_of_the_formats_before_still_resume_their_lists() -> None:
    moment = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    experiment = uuid.uuid4()
    old_event = _b64(json.dumps([moment.isoformat(), "ev_1"]).encode())
    old_experiment = base64.urlsafe_b64encode(
        f"2026-03-01T12:30:00.000000+0000|{experiment}".encode()
    ).decode()
    old_widget = _b64(b"home")
    old_catalog = _b64(json.dumps({"after": "sku-1"}).encode())
    assert events.decode_cursor(old_event) == (moment, "ev_1")
    assert experiments.decode_experiment_cursor(old_experiment) == (moment, experiment)
    assert widgets.decode_widget_cursor(old_widget) == "home"
    assert catalog.decode_cursor(old_catalog) == "sku-1"
