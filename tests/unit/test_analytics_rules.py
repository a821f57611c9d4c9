"""Analytics rules without I/O: periods, the aggregated/raw split, KPIs, user bitmaps."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta

import pytest

from domain import analytics as rules
from domain.analytics import Period, PeriodError

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_the_default_period_is_the_last_30_utc_days_including_today() -> None:
    period = rules.resolve_period(from_raw=None, to_raw=None, now=NOW)
    assert period.start == _at("2026-10-30T00:00:00+00:00")
    assert period.end == _at("2026-11-29T00:00:00+00:00")
    assert len(rules.whole_days(period)) == 30


def test_a_date_to_includes_its_whole_day_and_a_date_time_is_an_exclusive_instant() -> None:
    by_date = rules.resolve_period(from_raw="2026-11-01", to_raw="2026-11-01", now=NOW)
    assert by_date == Period(_at("2026-11-01T00:00:00+00:00"), _at("2026-11-02T00:00:00+00:00"))
    by_moment = rules.resolve_period(
        from_raw="2026-11-01T10:00:00+02:00", to_raw="2026-11-01T12:00:00Z", now=NOW
    )
    assert by_moment == Period(_at("2026-11-01T08:00:00+00:00"), _at("2026-11-01T12:00:00+00:00"))


@pytest.mark.parametrize(
    ("from_raw", "to_raw", "field"),
    [
        ("2026-11-10", "2026-11-09", "from"),
        ("2025-01-01", "2026-11-01", "to"),
        ("yesterday", None, "from"),
        ("2026-02-30", None, "from"),
        (None, "2026-11-01T10:00:00", "to"),
        ("0001-01-01", "0001-01-02", "from"),
    ],
    ids=["from after to", "over 400 days", "not a date", "no such day", "no zone", "year 1"],
)
def test_a_bad_period_names_the_offending_parameter(
    from_raw: str | None, to_raw: str | None, field: str
) -> None:
    with pytest.raises(PeriodError) as caught:
        rules.resolve_period(from_raw=from_raw, to_raw=to_raw, now=NOW)
    assert caught.value.field == field


def test_hourly_series_need_a_period_of_at_most_seven_days() -> None:
    week = Period(_at("2026-11-01T00:00:00+00:00"), _at("2026-11-08T00:00:00+00:00"))
    rules.check_interval(week, "hour")
    with pytest.raises(PeriodError):
        rules.check_interval(Period(week.start, week.end + timedelta(seconds=1)), "hour")
    rules.check_interval(Period(week.start, week.end + timedelta(days=300)), "day")


def test_whole_days_leave_out_the_partial_edges() -> None:
    period = Period(_at("2026-11-01T06:00:00+00:00"), _at("2026-11-04T18:00:00+00:00"))
    assert rules.whole_days(period) == [date(2026, 11, 2), date(2026, 11, 3)]


def test_raw_ranges_are_what_the_aggregated_days_do_not_cover_merged() -> None:
    period = Period(_at("2026-11-01T06:00:00+00:00"), _at("2026-11-06T18:00:00+00:00"))
    ranges = rules.raw_ranges(period, [date(2026, 11, 2), date(2026, 11, 4)])
    assert ranges == [
        Period(period.start, _at("2026-11-02T00:00:00+00:00")),
        Period(_at("2026-11-03T00:00:00+00:00"), _at("2026-11-04T00:00:00+00:00")),
        Period(_at("2026-11-05T00:00:00+00:00"), period.end),
    ]
    assert rules.raw_ranges(period, []) == [period]


def test_raw_ranges_plus_aggregated_days_tile_the_period_exactly() -> None:
    generator = random.Random(7)
    for _ in range(200):
        start = _at("2026-01-01T00:00:00+00:00") + timedelta(minutes=generator.randrange(10**5))
        end = start + timedelta(minutes=generator.randrange(20 * 1440))
        period = Period(start, end)
        days = [d for d in rules.whole_days(period) if generator.random() < 0.6]
        pieces = rules.raw_ranges(period, days) + [
            Period(rules.day_start(d), rules.day_start(d) + rules.ONE_DAY) for d in days
        ]
        pieces.sort(key=lambda p: p.start)
        assert sum((p.length for p in pieces), timedelta()) == period.length
        assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
        if pieces:
            assert pieces[0].start == start and pieces[-1].end == end


def test_a_day_is_served_from_aggregates_only_once_refreshed_after_it_ended() -> None:
    day, today = date(2026, 11, 20), date(2026, 11, 28)
    ended = rules.day_start(day + rules.ONE_DAY)
    assert rules.servable_days([day], {day: ended}, today=today) == [day]
    assert rules.servable_days([day], {day: ended - timedelta(seconds=1)}, today=today) == []
    assert rules.servable_days([day], {}, today=today) == []
    assert rules.servable_days([today], {today: NOW + timedelta(days=2)}, today=today) == []


def test_the_overview_formulas() -> None:
    figures = {
        "impressions": 200,
        "clicks": 10,
        "conversions": 3,
        "revenue": 59.97,
        "attributed_revenue": 19.99,
        "events": 400,
    }
    found = rules.overview(figures, active_users=12)
    assert found["ctr"] == pytest.approx(10 / 200)
    assert found["conversionRate"] == pytest.approx(3 / 12)
    assert found["revenue"] == 59.97 and found["attributedRevenue"] == 19.99
    nothing = rules.overview(rules.empty_figures(), active_users=0)
    assert nothing["ctr"] is None and nothing["conversionRate"] is None


def test_a_union_of_user_bitmaps_counts_each_user_once() -> None:
    generator = random.Random(3)
    days = [generator.sample(range(5000), 700) for _ in range(10)]
    extra = generator.sample(range(6000), 300)
    expected = len(set().union(*days, extra))
    assert rules.union_count([rules.bitmap_of(d) for d in days], extra) == expected
    assert rules.bitmap_count(rules.bitmap_of(days[0])) == 700
    assert rules.union_count([]) == 0 and rules.bitmap_of([]) == b""


def test_hourly_buckets_start_at_the_period_start_then_on_full_hours() -> None:
    period = Period(_at("2026-11-01T10:30:00+00:00"), _at("2026-11-01T13:00:00+00:00"))
    assert rules.bucket_starts(period, "hour") == [
        period.start,
        _at("2026-11-01T11:00:00+00:00"),
        _at("2026-11-01T12:00:00+00:00"),
    ]
    assert len(rules.bucket_starts(Period(NOW, NOW + timedelta(days=3)), "day")) == 4


def test_retention_keeps_raw_events_90_days_and_aggregates_a_year() -> None:
    cutoffs = rules.retention_cutoffs(NOW)
    assert cutoffs["events"] == date(2026, 8, 30)
    assert cutoffs["daily"] == date(2025, 11, 28)


def test_only_monthly_partitions_have_bounds_never_the_default_one() -> None:
    assert rules.partition_bounds("events_2026_12") == (date(2026, 12, 1), date(2027, 1, 1))
    assert rules.partition_bounds("events_default") is None
    assert rules.partition_bounds("events_2026_13") is None
