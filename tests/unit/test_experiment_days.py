"""Cumulative per-variant experiment figures per day."""

from __future__ import annotations

from datetime import date

import pytest

from domain.experiment_days import DayIncrement, cumulative_days


def test_each_day_carries_the_totals_up_to_its_end_with_ratios() -> None:
    days = cumulative_days(
        first_day=date(2026, 1, 1),
        last_day=date(2026, 1, 3),
        increments=[
            DayIncrement("control", date(2026, 1, 1), new_users=2, impressions=10, clicks=1),
            DayIncrement("control", date(2026, 1, 3), new_users=1, impressions=10, clicks=3),
            DayIncrement(
                "variant",
                date(2026, 1, 2),
                new_users=1,
                impressions=4,
                clicks=2,
                new_buyers=1,
                purchases=2,
                revenue=30.0,
            ),
        ],
    )
    assert [d["date"] for d in days] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert days[1]["control"]["impressions"] == 10
    assert days[2]["control"] == {
        "users": 3,
        "impressions": 20,
        "clicks": 4,
        "ctr": pytest.approx(0.2),
        "buyers": 0,
        "purchases": 0,
        "conversionRate": 0.0,
        "revenue": 0.0,
        "revenuePerVisitor": 0.0,
    }
    assert days[0]["variant"]["ctr"] is None
    assert days[2]["variant"]["revenuePerVisitor"] == pytest.approx(30.0)
    assert days[2]["variant"]["conversionRate"] == pytest.approx(1.0)


def test_days_before_the_first_shown_still_count_and_unknown_variants_do_not() -> None:
    days = cumulative_days(
        first_day=date(2026, 1, 5),
        last_day=date(2026, 1, 5),
        increments=[
            DayIncrement("control", date(2026, 1, 1), new_users=4, impressions=8),
            DayIncrement("holdout", date(2026, 1, 5), new_users=9, impressions=9),
        ],
    )
    assert days == [
        {
            "date": "2026-01-05",
            "control": {
                "users": 4,
                "impressions": 8,
                "clicks": 0,
                "ctr": 0.0,
                "buyers": 0,
                "purchases": 0,
                "conversionRate": 0.0,
                "revenue": 0.0,
                "revenuePerVisitor": 0.0,
            },
            "variant": {
                "users": 0,
                "impressions": 0,
                "clicks": 0,
                "ctr": None,
                "buyers": 0,
                "purchases": 0,
                "conversionRate": None,
                "revenue": 0.0,
                "revenuePerVisitor": None,
            },
        }
    ]
