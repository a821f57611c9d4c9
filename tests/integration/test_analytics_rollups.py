"""The analytics rollups against the raw events, on the real PostgreSQL and Redis: once every
day (today too) has been refreshed, the figures come from the aggregates plus the events noted
as pending since, and still equal a direct count over the raw events after late arrivals, a
redelivered message, an ingestion that died mid-way and a refresh racing an ingestion."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import numpy as np
import pytest
from conftest import make_tenant
from redis.asyncio import Redis

from domain import holdout
from domain.analytics import Period, day_start
from domain.event_message import MessageEvent
from domain.experiments.statistics import UserArrays
from store import analytics as analytics_store
from store import events as events_store
from store import rollups
from store.settings import Settings

KINDS = [
    "product_viewed",
    "product_viewed",
    "recommendation_impressed",
    "recommendation_impressed",
    "recommendation_clicked",
    "add_to_cart",
    "purchase",
]
STEPS = ["product_viewed", "recommendation_clicked", "add_to_cart", "purchase"]


def _message(
    n: int, kind: str, user: str, product: str, moment: datetime, **extra: Any
) -> MessageEvent:
    """One event in the message form the ingest actor stores."""
    event: MessageEvent = {
        "id": f"ev-{n}",
        "type": kind,
        "user": user,
        "product": product,
        "ts": moment.isoformat(),
        "flags": [],
    }
    if kind in ("recommendation_impressed", "recommendation_clicked"):
        event["placement"] = extra.get("placement", "home")
        event["meta"] = {"strategy": extra.get("strategy", "trending")}
    if kind == "purchase":
        event["price"] = extra.get("price", 10)
    return event


def _story(seed: int, now: datetime, *, first: int, days: int, per_day: int) -> list[MessageEvent]:
    """Events over the last `days` UTC days and today, clicks often followed by a purchase."""
    generator = random.Random(seed)
    events: list[MessageEvent] = []
    n = first
    for back in range(days, -1, -1):
        for _ in range(per_day):
            if back == 0:
                moment = now - timedelta(seconds=generator.randrange(120, 3600))
            else:
                moment = day_start(now.date() - timedelta(days=back)) + timedelta(
                    seconds=generator.randrange(86_400 - 3600)
                )
            user, product = f"u{generator.randrange(40)}", f"p{generator.randrange(12)}"
            kind = generator.choice(KINDS)
            placement = generator.choice(["home", "pdp"])
            strategy = generator.choice(["trending", "collaborative"])
            price = generator.choice([4.5, 19.99, 120])
            events.append(
                _message(
                    n,
                    kind,
                    user,
                    product,
                    moment,
                    placement=placement,
                    strategy=strategy,
                    price=price,
                )
            )
            n += 1
            if kind == "recommendation_clicked" and generator.random() < 0.6:
                later = min(moment + timedelta(minutes=5), now - timedelta(seconds=30))
                events.append(_message(n, "purchase", user, product, later, price=price))
                n += 1
    return events


async def _store(db: asyncpg.Pool, tenant_id: str, events: list[MessageEvent]) -> int:
    """Store messages of 50 events as the ingest actor does; how many rows were new."""
    stored = 0
    for first in range(0, len(events), 50):
        outcome = await events_store.insert_events(
            db, tenant_id=tenant_id, events=events[first : first + 50]
        )
        stored += outcome.inserted
    return stored


async def _refresh_all(db: asyncpg.Pool, tenant_id: str, now: datetime, days: int) -> None:
    await analytics_store.refresh_tenant_days(
        db, tenant_id=tenant_id, days=[now.date() - timedelta(days=n) for n in range(days + 1)]
    )


async def _pending(db: asyncpg.Pool, tenant_id: str) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM analytics_pending WHERE tenant_id = $1", tenant_id)
    )


async def _overview_truth(db: asyncpg.Pool, tenant_id: str, period: Period) -> dict:
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS impressions,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
                  count(*) FILTER (WHERE event_type = 'purchase') AS conversions,
                  coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::float8 AS revenue,
                  count(*) AS events, count(DISTINCT user_id) AS users,
                  count(DISTINCT user_id) FILTER (WHERE event_type = 'purchase') AS buyers
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3""",
        tenant_id,
        period.start,
        period.end,
    )
    attributed = await db.fetchval(
        """SELECT coalesce(sum(revenue), 0)::float8 FROM revenue_attributions
           WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3""",
        tenant_id,
        period.start,
        period.end,
    )
    return {
        "impressions": row["impressions"],
        "clicks": row["clicks"],
        "conversions": row["conversions"],
        "revenue": pytest.approx(round(row["revenue"], 4)),
        "attributedRevenue": pytest.approx(round(attributed, 4)),
        "events": row["events"],
        "activeUsers": row["users"],
        "buyers": row["buyers"],
    }


async def _funnel_truth(db: asyncpg.Pool, tenant_id: str, period: Period) -> list[int]:
    rows = await db.fetch(
        """SELECT array_agg(DISTINCT event_type) AS types FROM events
           WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 GROUP BY user_id""",
        tenant_id,
        period.start,
        period.end,
    )
    return [sum(1 for r in rows if set(STEPS[: k + 1]) <= set(r["types"])) for k in range(4)]


async def _products_truth(db: asyncpg.Pool, tenant_id: str, period: Period) -> dict[str, tuple]:
    rows = await db.fetch(
        """SELECT product_id,
                  count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                  count(*) FILTER (WHERE event_type = 'purchase') AS v,
                  coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS r,
                  (SELECT coalesce(sum(revenue), 0) FROM revenue_attributions a
                   WHERE a.tenant_id = $1 AND a.product_id = e.product_id
                     AND a.purchased_at >= $2 AND a.purchased_at < $3) AS a
           FROM events e WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
           GROUP BY product_id""",
        tenant_id,
        period.start,
        period.end,
    )
    return {r["product_id"]: (r["i"], r["c"], r["v"], r["r"], r["a"]) for r in rows}


async def _breakdown_truth(db: asyncpg.Pool, tenant_id: str, period: Period) -> dict[str, tuple]:
    shown = await db.fetch(
        """SELECT placement_id AS key,
                  count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
             AND event_type IN ('recommendation_impressed', 'recommendation_clicked')
           GROUP BY 1""",
        tenant_id,
        period.start,
        period.end,
    )
    bought = await db.fetch(
        """SELECT placement_id AS key, count(*) AS v, sum(revenue) AS r FROM revenue_attributions
           WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3 GROUP BY 1""",
        tenant_id,
        period.start,
        period.end,
    )
    found: dict[str, list] = {}
    for row in shown:
        found.setdefault(row["key"], [0, 0, 0, Decimal(0)])[:2] = [row["i"], row["c"]]
    for row in bought:
        found.setdefault(row["key"], [0, 0, 0, Decimal(0)])[2:] = [row["v"], row["r"]]
    return {key: tuple(figures) for key, figures in found.items()}


async def _holdout_truth(
    db: asyncpg.Pool, tenant_id: str, period: Period, percent: int
) -> dict[bool, UserArrays]:
    rows = await db.fetch(
        """SELECT user_id, count(*) FILTER (WHERE event_type = 'purchase') AS p,
                  coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::float8 AS r
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
           GROUP BY user_id""",
        tenant_id,
        period.start,
        period.end,
    )
    sides: dict[bool, list] = {True: [], False: []}
    for row in rows:
        sides[
            holdout.in_holdout(tenant_id=tenant_id, user_id=row["user_id"], percent=percent)
        ].append(row)
    return {
        side: UserArrays(
            impressions=np.zeros(len(found)),
            clicks=np.zeros(len(found)),
            purchases=np.array([r["p"] for r in found], dtype=float),
            revenue=np.array([r["r"] for r in found], dtype=float),
        )
        for side, found in sides.items()
    }


async def _assert_equal_to_raw(
    db: asyncpg.Pool, redis: Redis, tenant_id: str, now: datetime
) -> None:
    """Every figure of the whole days up to tomorrow and of the past days alone equals the
    direct count, read while no raw range is left (all whole days come from the rollups)."""
    tomorrow = day_start(now.date() + timedelta(days=1))
    periods = [
        Period(day_start(now.date() - timedelta(days=4)), tomorrow),
        Period(day_start(now.date() - timedelta(days=4)), day_start(now.date())),
    ]
    for period in periods:
        overview = await analytics_store.tenant_overview(
            db, redis, tenant_id=tenant_id, period=period, now=now
        )
        truth = await _overview_truth(db, tenant_id, period)
        assert {k: overview[k] for k in truth} == truth, period
        steps = await analytics_store.funnel(db, tenant_id=tenant_id, period=period)
        assert [step["users"] for step in steps] == await _funnel_truth(db, tenant_id, period)
        products = await _products_truth(db, tenant_id, period)
        for sort, index in (("clicks", 1), ("revenue", 3), ("attributedRevenue", 4)):
            top = await analytics_store.top_products(
                db, redis, tenant_id=tenant_id, period=period, sort=sort, limit=5, now=now
            )
            listed = [(-f[index], p, f) for p, f in products.items() if f[index] > 0]
            ranked = [(p, f) for _, p, f in sorted(listed)][:5]
            assert [row["productId"] for row in top] == [p for p, _ in ranked], sort
            for row, (_, (i, c, v, r, a)) in zip(top, ranked, strict=True):
                assert (row["impressions"], row["clicks"], row["conversions"]) == (i, c, v)
                assert row["revenue"] == pytest.approx(float(r))
                assert row["attributedRevenue"] == pytest.approx(float(a))
        rows = await analytics_store.breakdown(
            db, redis, tenant_id=tenant_id, period=period, by="placement", now=now
        )
        expected = await _breakdown_truth(db, tenant_id, period)
        assert {
            row["key"]: (row["impressions"], row["clicks"], row["conversions"]) for row in rows
        } == {key: f[:3] for key, f in expected.items()}
        points = await analytics_store.series(
            db, redis, tenant_id=tenant_id, period=period, interval="day", now=now
        )
        for point in points:
            end = min(point["start"] + timedelta(days=1), period.end)
            day_truth = await _overview_truth(db, tenant_id, Period(point["start"], end))
            assert {k: point[k] for k in day_truth} == day_truth, point["start"]
        held, exposed = await analytics_store.holdout_sums(
            db, tenant_id=tenant_id, period=period, percent=20
        )
        sides = await _holdout_truth(db, tenant_id, period, 20)
        for found, arrays in ((held, sides[True]), (exposed, sides[False])):
            assert found.users == arrays.purchases.size
            assert found.buyers == int((arrays.purchases > 0).sum())
            assert found.sum_purchases == int(arrays.purchases.sum())
            assert found.sum_purchases_sq == int((arrays.purchases**2).sum())
            assert float(found.sum_revenue) == pytest.approx(float(arrays.revenue.sum()))
            assert float(found.sum_revenue_sq) == pytest.approx(float((arrays.revenue**2).sum()))


async def _fully_rolled_up(db: asyncpg.Pool, tenant_id: str, days: list[date]) -> bool:
    return bool(
        await db.fetchval(
            """SELECT bool_and(covers_pending) AND count(*) = $3 FROM analytics_daily
               WHERE tenant_id = $1 AND day = ANY($2) AND placement_id = '' AND strategy = ''""",
            tenant_id,
            days,
            len(days),
        )
    )


async def test_rollup_figures_equal_a_direct_count_after_late_events_and_a_redelivery(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    now = datetime.now(UTC)
    shop = await make_tenant(db, migrated)
    t = shop.tenant_id
    story = _story(7, now, first=0, days=4, per_day=60)
    assert await _store(db, t, story) == len(story)
    await _refresh_all(db, t, now, 4)
    assert await _fully_rolled_up(db, t, [now.date() - timedelta(days=n) for n in range(5)])
    assert await _pending(db, t) == 0
    await _assert_equal_to_raw(db, redis, t, now)

    # Late arrivals on past days and new events of today, one message delivered twice.
    late = [
        _message(90_000 + i, kind, f"late-{i % 3}", f"p{i % 4}", moment, price=7)
        for i, (kind, moment) in enumerate(
            [
                ("purchase", day_start(now.date() - timedelta(days=2)) + timedelta(hours=3)),
                ("product_viewed", day_start(now.date() - timedelta(days=3)) + timedelta(hours=1)),
                ("recommendation_clicked", day_start(now.date() - timedelta(days=1))),
                ("add_to_cart", now - timedelta(minutes=1)),
            ]
        )
    ]
    fresh = _story(8, now, first=50_000, days=0, per_day=30)
    assert await _store(db, t, late + fresh) == len(late) + len(fresh)
    redelivered = await events_store.insert_events(db, tenant_id=t, events=fresh[:50])
    assert redelivered.inserted == 0
    assert await _pending(db, t) == len(late) + len(fresh)
    await _assert_equal_to_raw(db, redis, t, now)

    # The refresh folds the pending events into their days: the same figures, nothing pending.
    await _refresh_all(db, t, now, 4)
    assert await _pending(db, t) == 0
    await _assert_equal_to_raw(db, redis, t, now)


async def test_an_ingestion_that_dies_mid_way_notes_nothing_and_its_retry_counts_once(
    db: asyncpg.Pool, redis: Redis, migrated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    shop = await make_tenant(db, migrated)
    t = shop.tenant_id
    await _store(db, t, _story(11, now, first=0, days=4, per_day=30))
    await _refresh_all(db, t, now, 4)
    batch = _story(12, now, first=70_000, days=2, per_day=8)

    async def dies(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the worker died")

    with monkeypatch.context() as patched:
        patched.setattr(events_store, "_count_for_experiments", dies)
        with pytest.raises(ConnectionError):
            await events_store.insert_events(db, tenant_id=t, events=batch)
    assert await _pending(db, t) == 0
    # The message comes back (redelivered), then once more.
    assert (await events_store.insert_events(db, tenant_id=t, events=batch)).inserted == len(batch)
    assert (await events_store.insert_events(db, tenant_id=t, events=batch)).inserted == 0
    assert await _pending(db, t) == len(batch)
    await _assert_equal_to_raw(db, redis, t, now)


async def test_a_refresh_racing_an_ingestion_neither_loses_nor_doubles_its_events(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    now = datetime.now(UTC)
    shop = await make_tenant(db, migrated)
    t = shop.tenant_id
    await _store(db, t, _story(13, now, first=0, days=4, per_day=30))
    await _refresh_all(db, t, now, 4)
    racing = _story(14, now, first=80_000, days=1, per_day=10)
    connection = await db.acquire()
    try:
        # An ingestion's transaction stays open while the refresh recounts the same days.
        async with connection.transaction():
            inserted = await connection.fetch(
                events_store._INSERT_EVENTS, t, events_store._rows(racing)
            )
            await rollups.note_stored(connection, tenant_id=t, rows=inserted)
            await _refresh_all(db, t, now, 4)
    finally:
        await db.release(connection)
    assert await _pending(db, t) == len(racing)
    await _assert_equal_to_raw(db, redis, t, now)
    await _refresh_all(db, t, now, 4)
    assert await _pending(db, t) == 0
    await _assert_equal_to_raw(db, redis, t, now)
