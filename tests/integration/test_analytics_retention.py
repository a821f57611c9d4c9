"""Retention on the real PostgreSQL: raw events past 90 days are summarised into the daily
aggregates before their partition is dropped (or their default-partition rows deleted), and the
aggregates past a year are deleted; the analytics answers stay the same."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from domain.analytics import Period, day_start
from scheduler.schedule import JOBS
from store.analytics import refresh_tenant_days, tenant_overview
from workers import runtime
from workers.actors.analytics import apply_analytics_retention

retain = apply_analytics_retention.fn.__wrapped__  # type: ignore[attr-defined]


@pytest.fixture
def actors(db: asyncpg.Pool, redis: Redis) -> Iterator[None]:
    """The actors' per-process pool and Redis client pointed at the test servers."""
    saved = runtime._pool, runtime._redis
    runtime._pool, runtime._redis = db, redis
    yield
    runtime._pool, runtime._redis = saved


async def _insert(
    db: asyncpg.Pool, tenant_id: str, day: date, count: int, *, users: int, tag: str
) -> None:
    """`count` events on `day`: every fifth a purchase of 2.5, the others impressions."""
    await db.execute(
        """INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, price,
                               placement_id, occurred_at)
           SELECT $1, $4 || i,
                  CASE WHEN i % 5 = 0 THEN 'purchase' ELSE 'recommendation_impressed' END,
                  $4 || 'user' || (i % $3), 'p' || (i % 4),
                  CASE WHEN i % 5 = 0 THEN 2.5 END, 'home',
                  $2::timestamptz + make_interval(mins => i)
           FROM generate_series(1, $5) i""",
        tenant_id,
        day_start(day),
        users,
        tag,
        count,
    )


async def _daily(db: asyncpg.Pool, tenant_id: str, day: date) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT events, conversions, revenue::float8 AS revenue, active_users,
                  attributed_revenue::float8 AS attributed_revenue
           FROM analytics_daily WHERE tenant_id = $1 AND day = $2 AND placement_id = ''""",
        tenant_id,
        day,
    )


def _overview(
    client: httpx.Client, tenant: TenantContext, first: date, last: date
) -> httpx.Response:
    return client.get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics/overview",
        params={"from": str(first), "to": str(last)},
        headers=tenant.admin_headers,
    )


def _month_start(day: date) -> date:
    return day.replace(day=1)


async def test_old_partitions_are_summarised_then_dropped_and_the_figures_stay(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, client: httpx.Client
) -> None:
    today = datetime.now(UTC).date()
    month = _month_start(today - timedelta(days=160))
    name = f"events_{month:%Y_%m}"
    await db.execute("SELECT ensure_event_partitions($1, 1)", month)
    assert await db.fetchval("SELECT to_regclass($1)", name) is not None
    t = tenant.tenant_id
    first, second = month + timedelta(days=3), month + timedelta(days=4)
    await _insert(db, t, first, 40, users=7, tag="a")
    await _insert(db, t, second, 25, users=9, tag="b")
    await db.execute(
        """INSERT INTO revenue_attributions (tenant_id, user_id, product_id, click_event_id,
               purchase_event_id, revenue, clicked_at, purchased_at)
           VALUES ($1, 'auser5', 'p1', 'click-1', 'a5', 2.5, $2::timestamptz,
                   $2::timestamptz + interval '5 minutes')""",
        t,
        day_start(first),
    )
    period = Period(day_start(first), day_start(second + timedelta(days=1)))
    before = await tenant_overview(db, redis, tenant_id=t, period=period, now=datetime.now(UTC))
    assert before["events"] == 65 and before["activeUsers"] == 16

    outcome = await retain()

    assert name in outcome["partitionsDropped"]
    assert await db.fetchval("SELECT to_regclass($1)", name) is None
    assert await db.fetchval("SELECT to_regclass('events_default')") is not None
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", t) == 0
    summary = await _daily(db, t, first)
    assert summary is not None
    assert (summary["events"], summary["conversions"], summary["active_users"]) == (40, 8, 7)
    assert summary["revenue"] == 20 and summary["attributed_revenue"] == 2.5
    assert await _daily(db, t, second) is not None
    after = await tenant_overview(db, redis, tenant_id=t, period=period, now=datetime.now(UTC))
    assert after == before
    response = _overview(client, tenant, first, second)
    # Nothing recounts a day whose raw events are gone: the summary would be lost.
    assert await refresh_tenant_days(db, tenant_id=t, days=[first]) == 0
    assert (await _daily(db, t, first))["events"] == 40  # type: ignore[index]
    assert {k: v for k, v in response.json().items() if k != "period"} == before


async def test_old_default_partition_rows_are_folded_into_the_summaries_then_deleted(
    actors: None, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    today = datetime.now(UTC).date()
    day = today - timedelta(days=300)
    if await db.fetchval("SELECT to_regclass($1)", f"events_{day:%Y_%m}") is not None:
        pytest.skip("a monthly partition exists for that month in this database")
    t = tenant.tenant_id
    recent = today - timedelta(days=10)
    await _insert(db, t, day, 10, users=3, tag="old")
    await _insert(db, t, recent, 4, users=2, tag="new")

    await retain()

    assert (await _daily(db, t, day))["events"] == 10  # type: ignore[index]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events_default WHERE tenant_id = $1 AND occurred_at < $2",
            t,
            day_start(today - timedelta(days=90)),
        )
        == 0
    )
    # Late arrivals for that day: added to what the summary held, users counted once
    # (olduser0-2 were active before, olduser3-4 are new).
    await _insert(db, t, day, 5, users=5, tag="old")
    await retain()
    folded = await _daily(db, t, day)
    assert folded is not None
    assert folded["events"] == 15 and folded["active_users"] == 5
    kept = await db.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND occurred_at >= $2",
        t,
        day_start(recent),
    )
    assert kept == 4


async def test_daily_aggregates_older_than_a_year_are_deleted(
    actors: None, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    today = datetime.now(UTC).date()
    t = tenant.tenant_id
    for back in (366, 364):
        day = today - timedelta(days=back)
        await db.execute(
            "INSERT INTO analytics_daily (tenant_id, day, events) VALUES ($1, $2, 1)", t, day
        )
        await db.execute(
            "INSERT INTO analytics_daily_users (tenant_id, day, users) VALUES ($1, $2, '\\x01')",
            t,
            day,
        )
    await retain()
    days = await db.fetch("SELECT day FROM analytics_daily WHERE tenant_id = $1 ORDER BY day", t)
    assert [row["day"] for row in days] == [today - timedelta(days=364)]
    users = await db.fetch("SELECT day FROM analytics_daily_users WHERE tenant_id = $1", t)
    assert [row["day"] for row in users] == [today - timedelta(days=364)]


def test_the_refresh_retention_and_tenant_purge_jobs_are_scheduled() -> None:
    scheduled = {job.name: job for job in JOBS}
    assert scheduled["refresh-analytics"].actor == "refresh_analytics"
    assert scheduled["refresh-analytics"].trigger_args == {"minute": "*/5"}
    assert scheduled["refresh-analytics-nightly"].kwargs["lookback_minutes"] >= 24 * 60
    assert scheduled["apply-analytics-retention"].actor == "apply_analytics_retention"
    assert scheduled["purge-deleted-tenants"].actor == "purge_deleted_tenants"
