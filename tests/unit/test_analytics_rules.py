"""Analytics rules without I/O: periods, the aggregated/raw split, KPIs, user bitmaps."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

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


def test_a_day_aggregated_with_pending_notes_is_served_whenever_it_was_refreshed() -> None:
    day, today = date(2026, 11, 20), date(2026, 11, 28)
    during = rules.day_start(day) + timedelta(hours=5)
    assert rules.servable_days([day], {day: during}, today=today) == []
    assert rules.servable_days([day], {day: during}, today=today, with_pending=[day]) == [day]
    assert rules.servable_days([today], {today: NOW}, today=today, with_pending=[today]) == [today]
    assert rules.servable_days([day], {}, today=today, with_pending=[day]) == []


def test_the_overview_formulas() -> None:
    figures = {
        "impressions": 200,
        "clicks": 10,
        "conversions": 3,
        "revenue": 59.97,
        "attributed_revenue": 19.99,
        "events": 400,
    }
    found = rules.overview(figures, active_users=12, buyers=2)
    assert found["ctr"] == pytest.approx(10 / 200)
    assert found["conversionRate"] == pytest.approx(2 / 12)
    assert found["purchasesPerUser"] == pytest.approx(3 / 12)
    assert found["revenuePerVisitor"] == pytest.approx(59.97 / 12)
    assert found["revenue"] == 59.97 and found["attributedRevenue"] == 19.99
    nothing = rules.overview(rules.empty_figures(), active_users=0, buyers=0)
    assert nothing["ctr"] is None and nothing["conversionRate"] is None
    assert nothing["purchasesPerUser"] is None and nothing["revenuePerVisitor"] is None


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


def test_the_counters_answer_today_only_when_the_period_covers_it_from_midnight_to_now() -> None:
    midnight, tomorrow = _at("2026-11-28T00:00:00+00:00"), _at("2026-11-29T00:00:00+00:00")
    default = rules.resolve_period(from_raw=None, to_raw=None, now=NOW)
    assert rules.counted_span(default, now=NOW) == Period(midnight, tomorrow)
    crossing = Period(_at("2026-11-27T12:00:00+00:00"), NOW + timedelta(minutes=5))
    assert rules.counted_span(crossing, now=NOW) == Period(midnight, NOW + timedelta(minutes=5))
    # An event may be stamped up to 5 minutes ahead: an end before that may miss some.
    assert rules.counted_span(Period(midnight, NOW + timedelta(minutes=4)), now=NOW) is None
    assert rules.counted_span(Period(midnight + timedelta(seconds=1), tomorrow), now=NOW) is None
    assert rules.counted_span(Period(midnight - timedelta(days=2), midnight), now=NOW) is None
    late = datetime(2026, 11, 28, 23, 58, tzinfo=UTC)
    assert rules.counted_span(Period(midnight, tomorrow), now=late) == Period(midnight, tomorrow)


def test_cutting_todays_span_out_of_raw_ranges_keeps_what_lies_around_it() -> None:
    today = Period(_at("2026-11-28T00:00:00+00:00"), _at("2026-11-29T00:00:00+00:00"))
    ranges = [
        Period(_at("2026-11-20T06:00:00+00:00"), _at("2026-11-21T00:00:00+00:00")),
        Period(_at("2026-11-27T00:00:00+00:00"), _at("2026-11-30T00:00:00+00:00")),
    ]
    assert rules.without(ranges, today) == [
        ranges[0],
        Period(_at("2026-11-27T00:00:00+00:00"), today.start),
        Period(today.end, _at("2026-11-30T00:00:00+00:00")),
    ]
    assert rules.without([today], today) == []
    assert rules.without(ranges, None) == ranges


COUNTERS = {
    "events": 9.0,
    "type|recommendation_impressed": 4.0,
    "type|recommendation_clicked": 2.0,
    "type|purchase": 1.0,
    "type|product_viewed": 2.0,
    "revenue": 19.99,
    "attributed_revenue": 19.99,
    "attributed_conversions": 1.0,
    "impressions|home|trending": 3.0,
    "impressions|pdp|trending": 1.0,
    "clicks|home|trending": 2.0,
    "conversions|home|trending": 1.0,
    "revenue|home|trending": 19.99,
    "exp|e1|control|impressions": 3.0,
}


def test_a_days_counters_give_the_overview_figures_whole_or_of_one_placement() -> None:
    assert rules.counter_figures(COUNTERS) == {
        "impressions": 4,
        "clicks": 2,
        "conversions": 1,
        "revenue": Decimal("19.99"),
        "attributed_revenue": Decimal("19.99"),
        "events": 9,
    }
    assert rules.counter_figures(COUNTERS, placement_id="home") == {
        "impressions": 3,
        "clicks": 2,
        "conversions": 1,
        "revenue": Decimal("19.99"),
        "attributed_revenue": Decimal("19.99"),
        "events": 5,
    }
    pdp = rules.counter_figures(COUNTERS, placement_id="pdp", strategy="trending")
    assert pdp is not None and (pdp["impressions"], pdp["events"], pdp["revenue"]) == (1, 1, 0)
    assert rules.counter_figures({}, strategy="trending") == {
        "impressions": 0,
        "clicks": 0,
        "conversions": 0,
        "revenue": 0,
        "attributed_revenue": 0,
        "events": 0,
    }


def test_a_placement_holding_the_separator_sends_a_scoped_overview_to_the_raw_events() -> None:
    ambiguous = {**COUNTERS, "impressions|a|b|trending": 1.0}
    assert rules.counter_figures(ambiguous, placement_id="home") is None
    assert rules.counter_figures(ambiguous) is not None


def test_per_product_counters_are_used_only_when_they_add_up_to_the_day() -> None:
    products = {"i|p0": 3.0, "i|p|1": 1.0, "c|p0": 2.0, "v|p0": 1.0, "r|p0": 19.99}
    assert rules.product_figures(products, COUNTERS) == {
        "p0": {"impressions": 3.0, "clicks": 2.0, "conversions": 1.0, "revenue": 19.99},
        "p|1": {"impressions": 1.0, "clicks": 0.0, "conversions": 0.0, "revenue": 0.0},
    }
    # A day whose first events were counted before the per-product counters existed.
    assert (
        rules.product_figures({k: v for k, v in products.items() if k != "i|p|1"}, COUNTERS) is None
    )
    assert rules.product_figures({}, {"events": 2.0, "type|product_viewed": 2.0}) == {}


def test_funnel_steps_nest_bitmaps_and_users_outside_them() -> None:
    viewed = rules.bitmap_of([0, 1, 2, 3, 9])
    clicked = rules.bitmap_of([1, 2, 3, 20])
    carted = rules.bitmap_of([2, 3])
    bought = rules.bitmap_of([3, 9])
    outside = [[True, True, False, True], [True, False, False, False]]
    assert rules.nested_counts([viewed, clicked, carted, bought], outside) == [7, 4, 2, 1]
    steps = rules.funnel([10, 4, 2, 1])
    assert [s["step"] for s in steps] == [
        "viewed",
        "clickedRecommendation",
        "addedToCart",
        "purchased",
    ]
    assert steps[1]["rateFromPrevious"] == 0.4 and steps[3]["rateFromFirst"] == 0.1
    assert rules.funnel([0, 0, 0, 0])[1]["rateFromPrevious"] is None


@pytest.mark.parametrize(
    ("from_raw", "to_raw"),
    [
        (None, "0001-01-01"),
        (None, "9999-12-31"),
        ("0001-01-01T00:00:00+05:00", None),
        ("9999-12-31T23:59:59-05:00", None),
    ],
)
def test_a_bound_at_the_edge_of_the_calendar_is_a_period_error_not_an_overflow(
    from_raw: str | None, to_raw: str | None
) -> None:
    with pytest.raises(PeriodError):
        rules.resolve_period(
            from_raw=from_raw, to_raw=to_raw, now=datetime(2026, 12, 5, tzinfo=UTC)
        )
