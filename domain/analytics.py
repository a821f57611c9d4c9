"""Analytics rules: reporting periods, how a period splits into pre-aggregated days, today's
real-time counters and raw slices, KPI formulas, and exact distinct-user unions over per-day
user bitmaps.

Definitions (per tenant, over a half-open period [start, end) of event time `occurred_at`):

- impressions: `recommendation_impressed` events; clicks: `recommendation_clicked` events;
- conversions: `purchase` events; revenue: the sum of their price (`metadata.price`);
- attributedRevenue: the sum of revenue attributions whose purchase lies in the period;
- events: every event; activeUsers: users with at least one event in the period, counted once
  over the whole period (not a sum of daily counts);
- buyers: distinct users with at least one purchase in the period (counted once, like
  activeUsers);
- ctr = clicks / impressions; conversionRate = buyers / activeUsers (a share in [0, 1]);
  purchasesPerUser = conversions / activeUsers; revenuePerVisitor = revenue / activeUsers; a
  ratio is None when its denominator is 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from domain.events import FUTURE_TOLERANCE

MAX_PERIOD = timedelta(days=400)
MAX_HOURLY_PERIOD = timedelta(days=7)
DEFAULT_DAYS = 30
ADDITIVE = ("impressions", "clicks", "conversions", "revenue", "attributed_revenue", "events")
METRICS = {
    "impressions": "impressions",
    "clicks": "clicks",
    "ctr": "ctr",
    "conversions": "conversions",
    "conversionRate": "conversion_rate",
    "revenue": "revenue",
    "attributedRevenue": "attributed_revenue",
    "events": "events",
    "activeUsers": "active_users",
    # Added after the first columns of the export, so existing columns keep their place.
    "buyers": "buyers",
    "purchasesPerUser": "purchases_per_user",
    "revenuePerVisitor": "revenue_per_visitor",
}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ONE_DAY = timedelta(days=1)


class PeriodError(ValueError):
    """A period parameter is malformed or out of bounds; `field` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Period:
    """A half-open UTC interval [start, end) of event time."""

    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        """How long the period is."""
        return self.end - self.start


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def _within_years(year: int, *, field: str) -> None:
    # Checked before any arithmetic: a day added to 9999-12-31, or 30 days taken from
    # 0001-01-01 for a default `from`, would overflow the date type.
    if not 1970 <= year <= 9998:
        raise PeriodError(field, "Must lie between the years 1970 and 9998")


def _parse_bound(raw: str, *, field: str, is_end: bool) -> datetime:
    text = raw.strip()
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            raise PeriodError(field, "Not a valid date") from exc
        _within_years(day.year, field=field)
        # A date as `to` includes that whole UTC day.
        return day_start(day + ONE_DAY) if is_end else day_start(day)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PeriodError(field, "Must be an ISO 8601 date or date-time") from exc
    if moment.tzinfo is None:
        raise PeriodError(field, "A date-time needs a time zone (e.g. Z or +00:00)")
    _within_years(moment.year, field=field)
    return moment.astimezone(UTC)


def resolve_period(
    *, from_raw: str | None, to_raw: str | None, now: datetime, max_length: timedelta = MAX_PERIOD
) -> Period:
    """The period a request names: a date covers its whole UTC day, a date-time is an instant
    (to is exclusive); by default the last 30 UTC days including today."""
    # `from` is read first: when both are wrong, it is the one named.
    given_start = _parse_bound(from_raw, field="from", is_end=False) if from_raw else None
    end = (
        _parse_bound(to_raw, field="to", is_end=True)
        if to_raw
        else day_start(now.astimezone(UTC).date() + ONE_DAY)
    )
    start = (
        given_start
        if given_start is not None
        else day_start(end.date() - timedelta(days=DEFAULT_DAYS))
        if end.time() == time(0)
        else day_start(end.date() - timedelta(days=DEFAULT_DAYS - 1))
    )
    # from <= to as written: a date `to` is compared by its first instant.
    if start > end or (to_raw and start > _parse_bound(to_raw, field="to", is_end=False)):
        raise PeriodError("from", "Must not be after to")
    if end - start > max_length:
        raise PeriodError("to", f"The period may span at most {max_length.days} days")
    return period_checked(Period(start, end))


def period_checked(period: Period) -> Period:
    """The period, refusing bounds outside the years PostgreSQL dates handle sensibly."""
    for field, moment in (("from", period.start), ("to", period.end)):
        if not 1970 <= moment.year <= 9998:
            raise PeriodError(field, "Must lie between the years 1970 and 9998")
    return period


def check_interval(period: Period, interval: str) -> None:
    """Hourly series only for periods of at most 7 days."""
    if interval == "hour" and period.length > MAX_HOURLY_PERIOD:
        raise PeriodError("interval", "interval=hour needs a period of at most 7 days")


def whole_days(period: Period) -> list[date]:
    """The UTC days lying entirely inside the period, in order."""
    first = period.start.date() if period.start.time() == time(0) else period.start.date() + ONE_DAY
    days = []
    day = first
    while day_start(day + ONE_DAY) <= period.end:
        days.append(day)
        day += ONE_DAY
    return days


def raw_ranges(period: Period, aggregated: Iterable[date]) -> list[Period]:
    """What of the period is not covered by the aggregated whole days, as few ranges as
    possible (adjacent pieces merged), in order."""
    covered = sorted(set(aggregated))
    pieces: list[Period] = []
    cursor = period.start
    for day in covered:
        start, end = day_start(day), day_start(day + ONE_DAY)
        if start < period.start or end > period.end:
            raise ValueError(f"{day} is not a whole day of the period")
        if cursor < start:
            pieces.append(Period(cursor, start))
        cursor = max(cursor, end)
    if cursor < period.end:
        pieces.append(Period(cursor, period.end))
    return pieces


def servable_days(
    candidates: Iterable[date],
    refreshed_at: dict[date, datetime],
    *,
    today: date,
    with_pending: Iterable[date] = (),
) -> list[date]:
    """Whole days whose daily aggregate can stand for the raw events: days before today whose
    refresh ran after the day had ended (a refresh during the day misses its later events), and
    any day, today too, whose aggregate was computed `with_pending`: with the events stored
    since then noted as pending, the aggregate plus those is the whole day."""
    exact = set(with_pending)
    return sorted(
        day
        for day in candidates
        if day in refreshed_at
        and (day in exact or (day < today and refreshed_at[day] >= day_start(day + ONE_DAY)))
    )


def counted_span(period: Period, *, now: datetime) -> Period | None:
    """Today's part of the period when the day's real-time counters can stand for it, else None.

    The counters hold every event of the UTC day ingested so far, whatever its time of day, so
    they answer only a period that covers today from midnight to at least `now` plus the
    future tolerance of ingestion (no event stored yet can lie later than that)."""
    midnight = day_start(now.astimezone(UTC).date())
    tomorrow = midnight + ONE_DAY
    if period.start > midnight or period.end < min(tomorrow, now + FUTURE_TOLERANCE):
        return None
    return Period(midnight, min(period.end, tomorrow))


def without(ranges: Iterable[Period], span: Period | None) -> list[Period]:
    """`ranges` with `span` cut out of them, in order."""
    if span is None:
        return list(ranges)
    pieces = []
    for piece in ranges:
        if piece.start < span.start:
            pieces.append(Period(piece.start, min(piece.end, span.start)))
        if piece.end > span.end:
            pieces.append(Period(max(piece.start, span.end), piece.end))
    return pieces


_TYPE_FIELDS = {
    "impressions": "type|recommendation_impressed",
    "clicks": "type|recommendation_clicked",
    "conversions": "type|purchase",
}
_PLACEMENT_METRICS = ("impressions", "clicks", "conversions", "revenue")


def counter_figures(
    fields: Mapping[str, float], *, placement_id: str | None = None, strategy: str | None = None
) -> dict[str, Any] | None:
    """Additive figures of one day from its real-time counter fields (see store.counters).

    With a placement and/or strategy, the figures of the recommendations shown, as for the raw
    events: impressions and clicks of the matching `metric|placement|strategy` fields, the
    purchases attributed to their clicks, events = impressions + clicks. None when a field
    cannot be split unambiguously (a placement or strategy holding '|')."""
    if placement_id is None and strategy is None:
        return {
            **{metric: int(fields.get(field, 0)) for metric, field in _TYPE_FIELDS.items()},
            "revenue": Decimal(str(fields.get("revenue", 0.0))),
            "attributed_revenue": Decimal(str(fields.get("attributed_revenue", 0.0))),
            "events": int(fields.get("events", 0)),
        }
    sums = dict.fromkeys(_PLACEMENT_METRICS, 0.0)
    for name, value in fields.items():
        metric, separator, rest = name.partition("|")
        if not separator or metric not in sums:
            continue
        parts = rest.split("|")
        if len(parts) != 2:
            return None
        if (placement_id is None or parts[0] == placement_id) and (
            strategy is None or parts[1] == strategy
        ):
            sums[metric] += value
    revenue = Decimal(str(sums["revenue"]))
    return {
        "impressions": int(sums["impressions"]),
        "clicks": int(sums["clicks"]),
        "conversions": int(sums["conversions"]),
        "revenue": revenue,
        "attributed_revenue": revenue,
        "events": int(sums["impressions"] + sums["clicks"]),
    }


BREAKDOWNS = ("placement", "strategy")
FUNNEL_STEPS = (
    ("viewed", "product_viewed"),
    ("clickedRecommendation", "recommendation_clicked"),
    ("addedToCart", "add_to_cart"),
    ("purchased", "purchase"),
)


def counter_breakdown(
    fields: Mapping[str, float], *, by: str
) -> dict[str, dict[str, float]] | None:
    """Per placement (or strategy), the day's recommendation impressions and clicks and the
    purchases attributed to their clicks (conversions, revenue) from the counter fields
    `metric|placement|strategy`; None when a field cannot be split unambiguously."""
    if by not in BREAKDOWNS:
        raise ValueError(f"unknown breakdown {by!r}")
    found: dict[str, dict[str, float]] = {}
    for name, value in fields.items():
        metric, separator, rest = name.partition("|")
        if not separator or metric not in _PLACEMENT_METRICS:
            continue
        parts = rest.split("|")
        if len(parts) != 2:
            return None
        key = parts[0] if by == "placement" else parts[1]
        entry = found.setdefault(key, dict.fromkeys(_PLACEMENT_METRICS, 0.0))
        entry[metric] += value
    return found


def breakdown_row(key: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    """One row of a breakdown: the recommendations of one placement or strategy."""
    return {
        "key": key,
        "impressions": int(figures["impressions"]),
        "clicks": int(figures["clicks"]),
        "ctr": ratio(figures["clicks"], figures["impressions"]),
        "conversions": int(figures["conversions"]),
        "attributedRevenue": round(float(figures["revenue"]), 4),
    }


def funnel(counts: Sequence[int]) -> list[dict[str, Any]]:
    """The funnel's steps from the users who reached each (each step counts users who also did
    every earlier step), with the share kept from the previous step and from the first."""
    steps = []
    for index, ((name, event_type), users) in enumerate(zip(FUNNEL_STEPS, counts, strict=True)):
        steps.append(
            {
                "step": name,
                "eventType": event_type,
                "users": int(users),
                "rateFromPrevious": ratio(users, counts[index - 1]) if index else None,
                "rateFromFirst": ratio(users, counts[0]) if index else None,
            }
        )
    return steps


_PRODUCT_METRICS = {"i": "impressions", "c": "clicks", "v": "conversions", "r": "revenue"}


def product_figures(
    fields: Mapping[str, float], day_fields: Mapping[str, float]
) -> dict[str, dict[str, float]] | None:
    """Per product id, the day's impressions, clicks, conversions and revenue from its
    per-product counter fields (`i|`, `c|`, `v|`, `r|` + product id); None when they do not add
    up to the day's own impressions, clicks and conversions (`day_fields`), as for a day whose
    first events were counted before products were."""
    found: dict[str, dict[str, float]] = {}
    totals = dict.fromkeys(_TYPE_FIELDS, 0.0)
    for name, value in fields.items():
        code, _, product_id = name.partition("|")
        metric = _PRODUCT_METRICS.get(code)
        if metric is None:
            continue
        entry = found.setdefault(product_id, dict.fromkeys(_PRODUCT_METRICS.values(), 0.0))
        entry[metric] += value
        if metric in totals:
            totals[metric] += value
    if any(totals[metric] != day_fields.get(field, 0) for metric, field in _TYPE_FIELDS.items()):
        return None
    return found


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when there is nothing to divide by."""
    return None if not denominator else numerator / denominator


def empty_figures() -> dict[str, float]:
    """Additive figures of a period with nothing in it."""
    return dict.fromkeys(ADDITIVE, 0)


def add_figures(total: dict[str, float], part: dict[str, Any]) -> dict[str, float]:
    """Add the additive figures of `part` into `total` (in place) and return it."""
    for name in ADDITIVE:
        total[name] = total[name] + (part.get(name) or 0)
    return total


def overview(figures: dict[str, Any], active_users: int, *, buyers: int) -> dict[str, Any]:
    """The API's overview object from additive figures and the distinct user and buyer counts."""
    revenue = round(float(figures["revenue"]), 4)
    attributed = round(float(figures["attributed_revenue"]), 4)
    return {
        "impressions": int(figures["impressions"]),
        "clicks": int(figures["clicks"]),
        "ctr": ratio(figures["clicks"], figures["impressions"]),
        "conversions": int(figures["conversions"]),
        "conversionRate": ratio(buyers, active_users),
        "purchasesPerUser": ratio(figures["conversions"], active_users),
        "revenuePerVisitor": ratio(float(figures["revenue"]), active_users),
        "revenue": revenue,
        "attributedRevenue": attributed,
        "events": int(figures["events"]),
        "activeUsers": int(active_users),
        "buyers": int(buyers),
    }


def bucket_starts(period: Period, interval: str) -> list[datetime]:
    """Start of each bucket of the series: the period's start, then every UTC midnight (day)
    or full hour (hour) inside the period."""
    if period.start >= period.end:
        return []
    step = ONE_DAY if interval == "day" else timedelta(hours=1)
    first = truncate(period.start, interval)
    starts = [period.start]
    moment = first + step
    while moment < period.end:
        starts.append(moment)
        moment += step
    return starts


def truncate(moment: datetime, interval: str) -> datetime:
    """The start of the UTC day or hour containing `moment`."""
    moment = moment.astimezone(UTC)
    if interval == "day":
        return day_start(moment.date())
    return moment.replace(minute=0, second=0, microsecond=0)


def bitmap_of(indices: Sequence[int] | np.ndarray) -> bytes:
    """A little-endian bitmap with bit i set for each user index i."""
    values = np.asarray(indices, dtype=np.int64)
    if values.size == 0:
        return b""
    if values.min() < 0:
        raise ValueError("user indices must be non-negative")
    bits = np.zeros(int(values.max()) + 1, dtype=bool)
    bits[values] = True
    return np.packbits(bits, bitorder="little").tobytes()


def bitmap_union(bitmaps: Iterable[bytes]) -> bytes:
    """One bitmap holding every user set in any of `bitmaps`."""
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in bitmaps if b]
    if not arrays:
        return b""
    union = np.zeros(max(a.size for a in arrays), dtype=np.uint8)
    for array in arrays:
        union[: array.size] |= array
    return union.tobytes()


def union_count(bitmaps: Iterable[bytes], extra_indices: Iterable[int] = ()) -> int:
    """How many distinct users are set in any bitmap or listed in `extra_indices`."""
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in bitmaps if b]
    extra = np.fromiter(extra_indices, dtype=np.int64)
    if extra.size:
        arrays.append(np.frombuffer(bitmap_of(extra), dtype=np.uint8))
    if not arrays:
        return 0
    width = max(a.size for a in arrays)
    union = np.zeros(width, dtype=np.uint8)
    for array in arrays:
        union[: array.size] |= array
    return int(np.unpackbits(union).sum())


def nested_counts(steps: Sequence[bytes], extra: Sequence[Sequence[bool]] = ()) -> list[int]:
    """Users in the first step's bitmap, in the first two, ... in all of them (in order),
    plus the users of `extra` (one list of per-step flags each, users in no bitmap)."""
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in steps]
    width = max((a.size for a in arrays), default=0)
    running = np.full(width, 255, dtype=np.uint8)
    flags = np.asarray(extra, dtype=bool).reshape(len(extra), len(steps))
    counts = []
    for index, array in enumerate(arrays):
        padded = np.zeros(width, dtype=np.uint8)
        padded[: array.size] = array
        running &= padded
        outside = int(flags[:, : index + 1].all(axis=1).sum())
        counts.append(int(np.unpackbits(running).sum()) + outside)
    return counts


def bitmap_indices(bitmap: bytes) -> set[int]:
    """The user indices set in one bitmap."""
    if not bitmap:
        return set()
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return {int(i) for i in np.flatnonzero(bits)}


def bitmap_count(bitmap: bytes) -> int:
    """How many users one bitmap holds."""
    return int(np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8)).sum()) if bitmap else 0


def retention_cutoffs(now: datetime) -> dict[str, date]:
    """First day kept of each store: raw events 90 days, daily aggregates 1 year (365 days)."""
    today = now.astimezone(UTC).date()
    return {"events": today - timedelta(days=90), "daily": today - timedelta(days=365)}


def partition_bounds(name: str) -> tuple[date, date] | None:
    """The month [first day, first day of next month) of a monthly partition named
    events_YYYY_MM, or None for any other name (the default partition among them)."""
    found = re.fullmatch(r"events_(\d{4})_(\d{2})", name)
    if not found:
        return None
    year, month = int(found.group(1)), int(found.group(2))
    if not 1 <= month <= 12:
        return None
    first = date(year, month, 1)
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return first, following
