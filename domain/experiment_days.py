"""Cumulative per-variant experiment figures per day, from per-day increments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

VARIANTS = ("control", "variant")


@dataclass(frozen=True)
class DayIncrement:
    """What one variant gained on one day: new users and buyers, impressions, clicks,
    purchases and revenue."""

    variant: str
    day: date
    new_users: int = 0
    impressions: int = 0
    clicks: int = 0
    new_buyers: int = 0
    purchases: int = 0
    revenue: float = 0.0


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def cumulative_days(
    *, first_day: date, last_day: date, increments: Iterable[DayIncrement]
) -> list[dict[str, Any]]:
    """One entry per day from `first_day` to `last_day` (inclusive) with each variant's totals
    up to the end of that day, and their ctr, conversion rate and revenue per visitor."""
    by_key: dict[tuple[str, date], DayIncrement] = {}
    for inc in increments:
        if inc.variant in VARIANTS:
            by_key[(inc.variant, inc.day)] = inc
    totals: dict[str, dict[str, float]] = {
        v: {"users": 0, "impressions": 0, "clicks": 0, "buyers": 0, "purchases": 0, "revenue": 0.0}
        for v in VARIANTS
    }
    # Days before the first one shown still count towards the totals.
    for (variant, earlier), gained in by_key.items():
        if earlier < first_day:
            _add(totals[variant], gained)
    days: list[dict[str, Any]] = []
    day = first_day
    while day <= last_day:
        entry: dict[str, Any] = {"date": day.isoformat()}
        for variant in VARIANTS:
            today = by_key.get((variant, day))
            if today is not None:
                _add(totals[variant], today)
            entry[variant] = _figures(totals[variant])
        days.append(entry)
        day += timedelta(days=1)
    return days


def _add(t: dict[str, float], inc: DayIncrement) -> None:
    t["users"] += inc.new_users
    t["impressions"] += inc.impressions
    t["clicks"] += inc.clicks
    t["buyers"] += inc.new_buyers
    t["purchases"] += inc.purchases
    t["revenue"] += inc.revenue


def _figures(t: Mapping[str, float]) -> dict[str, Any]:
    return {
        "users": int(t["users"]),
        "impressions": int(t["impressions"]),
        "clicks": int(t["clicks"]),
        "ctr": _ratio(t["clicks"], t["impressions"]),
        "buyers": int(t["buyers"]),
        "purchases": int(t["purchases"]),
        "conversionRate": _ratio(t["buyers"], t["users"]),
        "revenue": round(float(t["revenue"]), 4),
        "revenuePerVisitor": _ratio(float(t["revenue"]), t["users"]),
    }
