"""Analytics over real HTTP, PostgreSQL, Redis and a real worker: every figure equals a direct
count over the raw events, for aggregated days, raw edges and today alike."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext
from redis.asyncio import Redis

from cli.localservices import free_port
from domain.analytics import day_start, resolve_period
from store import analytics as analytics_store
from store import keys
from store.counters import decode_fields, read_counters
from store.settings import Settings
from store.tenants import create_tenant

TYPES = ["product_viewed", "add_to_cart", "recommendation_impressed", "recommendation_clicked"]
PLACEMENTS = ["home", "pdp"]
STRATEGIES = ["trending", "collaborative"]


@pytest.fixture
def worker(worker_process: Process) -> Process:
    """The session worker: ingestion and the refresh actor run in it."""
    return worker_process


def _enqueue(settings: Settings, actor_name: str, **kwargs: Any) -> None:
    """Send one message to the real broker, as the scheduler does."""
    import dramatiq

    from workers.broker import build_broker

    broker = build_broker(settings.broker_url)
    try:
        broker.declare_queue("maintenance")
        broker.enqueue(
            dramatiq.Message(
                queue_name="maintenance", actor_name=actor_name, args=(), kwargs=kwargs, options={}
            )
        )
    finally:
        broker.close()


def _event(kind: str, user: str, product: str, moment: datetime, **metadata: Any) -> dict:
    if kind in ("recommendation_impressed", "recommendation_clicked"):
        metadata.setdefault("placementId", "home")
        metadata.setdefault("strategy", "trending")
    else:
        metadata.pop("placementId", None)
        metadata.pop("strategy", None)
    return {
        "eventType": kind,
        "userId": user,
        "productId": product,
        "timestamp": moment.isoformat(),
        "metadata": metadata,
    }


def _story(seed: int, now: datetime) -> list[dict]:
    """Events over the last five UTC days and today, with clicks followed by purchases."""
    generator = random.Random(seed)
    today = now.date()
    events, used = [], set()
    for back in range(5, -1, -1):
        for _ in range(24):
            if back == 0:
                moment = now - timedelta(seconds=generator.randrange(60, 3600))
            else:
                moment = day_start(today - timedelta(days=back)) + timedelta(
                    seconds=generator.randrange(86_400 - 1800)
                )
            user = f"u{generator.randrange(9)}"
            product = f"p{generator.randrange(5)}"
            kind = generator.choice(TYPES)
            if (user, kind, product, moment) in used:
                continue
            used.add((user, kind, product, moment))
            placement = {"placementId": generator.choice(PLACEMENTS)}
            placement["strategy"] = generator.choice(STRATEGIES)
            events.append(_event(kind, user, product, moment, **placement))
            if kind == "recommendation_clicked" and generator.random() < 0.5:
                later = moment + timedelta(minutes=generator.randrange(1, 25))
                if later < now:
                    price = generator.choice([9.99, 25.5, 100.0])
                    events.append(_event("purchase", user, product, later, price=price))
        unattributed = day_start(today - timedelta(days=back)) + timedelta(hours=1)
        if back:
            events.append(_event("purchase", f"u{back}", "p9", unattributed, price=3.25))
    return events


async def _rows(db: asyncpg.Pool, tenant_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id))


def _get(client: httpx.Client, url: str, tenant: TenantContext, **params: str) -> httpx.Response:
    """A GET as the tenant's admin (sync helper: the api is a real subprocess)."""
    return client.get(url, params=params, headers=tenant.admin_headers)


def _post_batches(client: httpx.Client, tenant: TenantContext, events: list[dict]) -> None:
    for first in range(0, len(events), 100):
        response = client.post(
            "/api/v1/events/batch",
            json={"events": events[first : first + 100]},
            headers=tenant.write_headers,
        )
        assert response.status_code == 202, response.text
        assert response.json()["rejected"] == 0, response.text


async def _counted_today(db: asyncpg.Pool, redis: Redis, tenant_id: str) -> bool:
    """Whether today's counters hold every stored event and attribution of today: the ingest
    actor bumps them just after its PostgreSQL commit."""
    midnight = day_start(datetime.now(UTC).date())
    stored = await db.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND occurred_at >= $2",
        tenant_id,
        midnight,
    )
    attributed = await db.fetchval(
        """SELECT coalesce(sum(revenue), 0)::float8 FROM revenue_attributions
           WHERE tenant_id = $1 AND purchased_at >= $2""",
        tenant_id,
        midnight,
    )
    fields = await redis.hmget(
        keys.realtime_counters(tenant_id, f"{midnight:%Y%m%d}"), ["events", "attributed_revenue"]
    )
    counted, counted_revenue = (float(value or 0) for value in fields)
    return counted == stored and abs(counted_revenue - attributed) < 1e-6


async def _ingest(
    client: httpx.Client,
    db: asyncpg.Pool,
    redis: Redis,
    tenant: TenantContext,
    events: list[dict],
) -> None:
    before = await _rows(db, tenant.tenant_id)
    _post_batches(client, tenant, events)
    for _ in range(300):
        if await _rows(db, tenant.tenant_id) >= before + len(events) and await _counted_today(
            db, redis, tenant.tenant_id
        ):
            break
        await asyncio.sleep(0.1)
    assert await _rows(db, tenant.tenant_id) == before + len(events)
    assert await _counted_today(db, redis, tenant.tenant_id)


async def _refresh(db: asyncpg.Pool, settings: Settings, tenant_id: str, days: list[date]) -> None:
    """Run the scheduled refresh in the worker and wait until it closed every one of `days`."""
    asked = datetime.now(UTC)
    _enqueue(settings, "refresh_analytics")
    for _ in range(300):
        done = await db.fetchval(
            """SELECT count(*) FROM analytics_daily WHERE tenant_id = $1 AND placement_id = ''
               AND strategy = '' AND day = ANY($2) AND refreshed_at >= $3""",
            tenant_id,
            days,
            asked,
        )
        if done == len(days):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the refresh did not run")


async def _truth(db: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime) -> dict:
    """The overview computed straight from the raw events and attributions."""
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS impressions,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
                  count(*) FILTER (WHERE event_type = 'purchase') AS conversions,
                  coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::float8 AS revenue,
                  count(*) AS events, count(DISTINCT user_id) AS users,
                  count(DISTINCT user_id) FILTER (WHERE event_type = 'purchase') AS buyers
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3""",
        tenant_id,
        start,
        end,
    )
    attributed = await db.fetchval(
        """SELECT coalesce(sum(revenue), 0)::float8 FROM revenue_attributions
           WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3""",
        tenant_id,
        start,
        end,
    )
    return {
        "impressions": row["impressions"],
        "clicks": row["clicks"],
        "ctr": row["clicks"] / row["impressions"] if row["impressions"] else None,
        "conversions": row["conversions"],
        "conversionRate": row["buyers"] / row["users"] if row["users"] else None,
        "purchasesPerUser": row["conversions"] / row["users"] if row["users"] else None,
        "revenuePerVisitor": row["revenue"] / row["users"] if row["users"] else None,
        "revenue": round(row["revenue"], 4),
        "attributedRevenue": round(attributed, 4),
        "events": row["events"],
        "activeUsers": row["users"],
        "buyers": row["buyers"],
    }


async def _scoped_truth(
    db: asyncpg.Pool,
    tenant_id: str,
    start: datetime,
    end: datetime,
    placement: str | None,
    strategy: str | None,
) -> dict:
    """The overview of one placement and/or strategy, straight from the raw events."""
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS impressions,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
                  count(*) AS events, count(DISTINCT user_id) AS users
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
             AND event_type IN ('recommendation_impressed', 'recommendation_clicked')
             AND ($4::text IS NULL OR placement_id = $4)
             AND ($5::text IS NULL OR metadata->>'strategy' = $5)""",
        tenant_id,
        start,
        end,
        placement,
        strategy,
    )
    bought = await db.fetchrow(
        """SELECT count(*) AS n, coalesce(sum(revenue), 0)::float8 AS revenue,
                  count(DISTINCT user_id) AS buyers
           FROM revenue_attributions
           WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
             AND ($4::text IS NULL OR placement_id = $4) AND ($5::text IS NULL OR strategy = $5)""",
        tenant_id,
        start,
        end,
        placement,
        strategy,
    )
    return {
        "impressions": row["impressions"],
        "clicks": row["clicks"],
        "ctr": row["clicks"] / row["impressions"] if row["impressions"] else None,
        "conversions": bought["n"],
        "conversionRate": bought["buyers"] / row["users"] if row["users"] else None,
        "purchasesPerUser": bought["n"] / row["users"] if row["users"] else None,
        "revenuePerVisitor": bought["revenue"] / row["users"] if row["users"] else None,
        "revenue": round(bought["revenue"], 4),
        "attributedRevenue": round(bought["revenue"], 4),
        "events": row["events"],
        "activeUsers": row["users"],
        "buyers": bought["buyers"],
    }


def _overview(client: httpx.Client, tenant: TenantContext, **params: str) -> dict:
    response = client.get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics/overview",
        params=params,
        headers=tenant.admin_headers,
    )
    assert response.status_code == 200, response.text
    return {k: v for k, v in response.json().items() if k != "period"}


def _approx(figures: dict) -> dict:
    return {k: pytest.approx(v) if isinstance(v, float) else v for k, v in figures.items()}


async def test_analytics_figures_equal_a_direct_count_over_the_raw_events(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, redis, tenant, _story(11, now))
    past = [today - timedelta(days=n) for n in range(1, 6)]
    await _refresh(db, migrated, tenant.tenant_id, past)
    t = tenant.tenant_id
    assert await db.fetchval("SELECT count(*) FROM revenue_attributions WHERE tenant_id = $1", t), (
        "the story must contain attributed purchases"
    )

    # Partial days at both edges, aggregated days between, and today from the raw events.
    start = day_start(today - timedelta(days=5)) + timedelta(hours=7, minutes=13)
    end = now + timedelta(minutes=6)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    expected = await _truth(db, t, start, end)
    assert expected["attributedRevenue"] > 0 and expected["conversions"] > 0
    assert _overview(client, tenant, **params) == _approx(expected)
    # Whole days by date, and the default period (the last 30 days).
    by_date = {"from": str(today - timedelta(days=4)), "to": str(today - timedelta(days=1))}
    assert _overview(client, tenant, **by_date) == _approx(
        await _truth(db, t, day_start(today - timedelta(days=4)), day_start(today))
    )
    assert _overview(client, tenant) == _approx(
        await _truth(db, t, day_start(today - timedelta(days=29)), day_start(today) + timedelta(1))
    )

    for metric, name in [
        ("impressions", "impressions"),
        ("clicks", "clicks"),
        ("conversions", "conversions"),
        ("revenue", "revenue"),
        ("attributedRevenue", "attributedRevenue"),
        ("events", "events"),
    ]:
        series = _get(
            client, f"/api/v1/tenants/{t}/analytics/timeseries", tenant, **params, metric=metric
        ).json()
        assert len(series["points"]) == 6
        assert sum(p["value"] for p in series["points"]) == pytest.approx(expected[name])
    daily_users = _get(
        client, f"/api/v1/tenants/{t}/analytics/timeseries", tenant, **params, metric="activeUsers"
    ).json()["points"]
    for point in daily_users[1:]:
        point_start = datetime.fromisoformat(point["start"])
        truth = await _truth(db, t, point_start, min(end, point_start + timedelta(days=1)))
        assert point["value"] == truth["activeUsers"]
    # Ratios per bucket: the first (partial, raw) bucket, aggregated days and today.
    for metric in ("conversionRate", "purchasesPerUser", "revenuePerVisitor", "buyers"):
        points = _get(
            client, f"/api/v1/tenants/{t}/analytics/timeseries", tenant, **params, metric=metric
        ).json()["points"]
        for point in points:
            point_start = max(start, datetime.fromisoformat(point["start"]))
            truth = await _truth(
                db, t, point_start, min(end, day_start(point_start.date() + timedelta(1)))
            )
            assert point["value"] == pytest.approx(truth[metric]), (metric, point)
    assert 0 < expected["conversionRate"] <= 1

    products = await db.fetch(
        """SELECT product_id, count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                  count(*) FILTER (WHERE event_type = 'purchase') AS v,
                  count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
           GROUP BY product_id""",
        t,
        start,
        end,
    )
    top = _get(
        client,
        f"/api/v1/tenants/{t}/analytics/top-products",
        tenant,
        **params,
        sort="clicks",
        limit="3",
    ).json()["data"]
    ranked = sorted((p for p in products if p["c"]), key=lambda p: (-p["c"], p["product_id"]))
    # Every figure of a ranked product, also of days it had no click.
    assert [(p["productId"], p["clicks"], p["impressions"], p["conversions"]) for p in top] == [
        (p["product_id"], p["c"], p["i"], p["v"]) for p in ranked[:3]
    ]
    by_attributed = _get(
        client,
        f"/api/v1/tenants/{t}/analytics/top-products",
        tenant,
        **params,
        sort="attributedRevenue",
        limit="100",
    ).json()["data"]
    assert sum(p["attributedRevenue"] for p in by_attributed) == pytest.approx(
        expected["attributedRevenue"]
    )
    assert sum(p["conversions"] for p in by_attributed) <= expected["conversions"]


async def test_the_overview_of_one_placement_or_strategy_equals_a_direct_count(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, redis, tenant, _story(17, now))
    await _refresh(db, migrated, tenant.tenant_id, [today - timedelta(days=n) for n in (1, 2, 3)])
    start = day_start(today - timedelta(days=4)) + timedelta(hours=9)
    end = now + timedelta(minutes=6)
    period = {"from": start.isoformat(), "to": end.isoformat()}
    scopes = [("home", None), (None, "collaborative"), ("pdp", "trending"), ("nowhere", None)]
    for placement, strategy in scopes:
        params = dict(period)
        if placement:
            params["placementId"] = placement
        if strategy:
            params["strategy"] = strategy
        truth = await _scoped_truth(db, tenant.tenant_id, start, end, placement, strategy)
        assert _overview(client, tenant, **params) == _approx(truth), (placement, strategy)
    home = await _scoped_truth(db, tenant.tenant_id, start, end, "home", None)
    assert home["impressions"] > 0 and home["activeUsers"] > 0


async def test_past_days_are_read_from_the_aggregates_and_a_late_event_counts_at_once(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, redis, tenant, _story(23, now))
    past = [today - timedelta(days=n) for n in range(1, 6)]
    await _refresh(db, migrated, tenant.tenant_id, past)
    params = {"from": str(past[-1]), "to": str(past[0])}
    before = _overview(client, tenant, **params)
    late = _event("purchase", "late-user", "p1", day_start(past[2]) + timedelta(hours=5), price=7)
    await _ingest(client, db, redis, tenant, [late])
    # The late arrival is pending beside its day's aggregate until the next refresh counts it.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM analytics_pending WHERE tenant_id = $1", tenant.tenant_id
        )
        >= 1
    )
    truth = await _truth(db, tenant.tenant_id, day_start(past[-1]), day_start(today))
    for _ in ("pending", "refreshed"):
        after = _overview(client, tenant, **params)
        assert after["events"] == before["events"] + 1
        assert after["activeUsers"] == before["activeUsers"] + 1
        assert after["revenue"] == pytest.approx(before["revenue"] + 7)
        assert after == _approx(truth)
        await _refresh(db, migrated, tenant.tenant_id, [past[2]])
    assert not await db.fetchval(
        "SELECT count(*) FROM analytics_pending WHERE tenant_id = $1 AND day = $2",
        tenant.tenant_id,
        past[2],
    )


async def test_days_aggregated_before_buyers_were_counted_are_read_raw_until_refreshed(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, redis, tenant, _story(29, now))
    past = [today - timedelta(days=n) for n in range(1, 6)]
    await _refresh(db, migrated, tenant.tenant_id, past)
    # As the aggregates stood before migration 0013.
    await db.execute(
        "UPDATE analytics_daily SET buyers = NULL WHERE tenant_id = $1", tenant.tenant_id
    )
    await db.execute(
        "UPDATE analytics_daily_users SET buyers = NULL WHERE tenant_id = $1", tenant.tenant_id
    )
    params = {"from": str(past[-1]), "to": str(past[0])}
    truth = await _truth(db, tenant.tenant_id, day_start(past[-1]), day_start(today))
    assert truth["buyers"] > 0
    assert _overview(client, tenant, **params) == _approx(truth)
    due = await analytics_store.days_due(db, now=now, late_since=now)
    # Read after the due list: a refresh still running for another test may fill some already.
    unfilled = await db.fetch(
        """SELECT day FROM analytics_daily WHERE tenant_id = $1 AND buyers IS NULL
           AND placement_id = '' AND strategy = ''""",
        tenant.tenant_id,
    )
    assert {day for t, day in due if t == tenant.tenant_id} >= {row["day"] for row in unfilled}
    await _refresh(db, migrated, tenant.tenant_id, past)
    # Only the past days: today's row, refreshed last by the same run, may still be on its way.
    assert not await db.fetchval(
        """SELECT count(*) FROM analytics_daily WHERE tenant_id = $1 AND buyers IS NULL
           AND placement_id = '' AND strategy = '' AND day = ANY($2)""",
        tenant.tenant_id,
        past,
    )
    assert _overview(client, tenant, **params) == _approx(truth)


async def test_todays_figures_include_events_ingested_seconds_ago(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, worker: Process
) -> None:
    now = datetime.now(UTC)
    assert _overview(client, tenant)["events"] == 0
    fresh = [
        _event("recommendation_impressed", f"fresh-{i}", "p1", now - timedelta(seconds=i + 1))
        for i in range(5)
    ]
    fresh.append(_event("purchase", "fresh-0", "p1", now - timedelta(seconds=1), price=12.5))
    await _ingest(client, db, redis, tenant, fresh)
    found = _overview(client, tenant)
    assert found["impressions"] == 5 and found["conversions"] == 1
    assert found["events"] == 6 and found["activeUsers"] == 5 and found["revenue"] == 12.5


async def test_the_all_tenants_overview_sums_only_the_callers_tenants(
    client: httpx.Client,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    second = await create_tenant(db, owner_id=tenant.admin_id, name="Second Shop")
    second_id = str(second["id"])
    # Rows written straight to PostgreSQL: the second shop has no counters for today, so its
    # today is counted from the raw events.
    await db.execute(
        """INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, occurred_at)
           SELECT $1, 'e' || i, 'recommendation_clicked', 'v' || (i % 3), 'p1',
                  $2::timestamptz - make_interval(secs => i)
           FROM generate_series(1, 7) i""",
        second_id,
        now,
    )
    await _ingest(client, db, redis, tenant, _story(5, now)[:40])
    await _ingest(client, db, redis, other_tenant, _story(6, now)[:30])
    response = _get(client, "/api/v1/analytics/overview", tenant)
    assert response.status_code == 200, response.text
    body = response.json()
    mine = [
        await _truth(db, t, day_start(now.date() - timedelta(days=29)), now + timedelta(hours=1))
        for t in (tenant.tenant_id, second_id)
    ]
    assert {t["tenantId"] for t in body["tenants"]} == {tenant.tenant_id, second_id}
    for name in ("impressions", "clicks", "conversions", "events", "activeUsers", "buyers"):
        assert body[name] == mine[0][name] + mine[1][name]
    assert body["revenue"] == pytest.approx(mine[0]["revenue"] + mine[1]["revenue"])
    users = mine[0]["activeUsers"] + mine[1]["activeUsers"]
    assert body["conversionRate"] == pytest.approx((mine[0]["buyers"] + mine[1]["buyers"]) / users)
    assert body["purchasesPerUser"] == pytest.approx(
        (mine[0]["conversions"] + mine[1]["conversions"]) / users
    )
    assert body["revenuePerVisitor"] == pytest.approx(
        (mine[0]["revenue"] + mine[1]["revenue"]) / users
    )
    for figures in body["tenants"]:
        truth = mine[0] if figures["tenantId"] == tenant.tenant_id else mine[1]
        assert figures["conversionRate"] == pytest.approx(truth["conversionRate"])


def test_another_admins_tenant_is_a_404_on_every_analytics_route(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    for route in ("overview", "timeseries", "top-products", "export", "breakdown", "funnel"):
        for tenant_id in (other_tenant.tenant_id, str(uuid.uuid4()), "not-a-uuid"):
            response = client.get(
                f"/api/v1/tenants/{tenant_id}/analytics/{route}", headers=tenant.admin_headers
            )
            assert response.status_code == 404, (route, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        anonymous = client.get(f"/api/v1/tenants/{tenant.tenant_id}/analytics/{route}")
        assert anonymous.status_code == 401
        # A merchant backend's key reaches its own tenant's analytics only.
        with_key = client.get(
            f"/api/v1/tenants/{other_tenant.tenant_id}/analytics/{route}",
            headers=tenant.read_headers,
        )
        assert with_key.status_code == 404


BAD_PARAMETERS = {
    "from not a date": ("overview", {"from": "last tuesday"}),
    "to without a zone": ("overview", {"to": "2026-01-01T10:00:00"}),
    "from after to": ("overview", {"from": "2026-03-02", "to": "2026-03-01"}),
    "over 400 days": ("overview", {"from": "2024-01-01", "to": "2026-01-01"}),
    "unknown parameter": ("overview", {"tenant": "x"}),
    "unknown metric": ("timeseries", {"metric": "bounces"}),
    "unknown interval": ("timeseries", {"interval": "week"}),
    "hourly over 30 days": ("timeseries", {"interval": "hour"}),
    "unknown sort": ("top-products", {"sort": "views"}),
    "limit 0": ("top-products", {"limit": "0"}),
    "limit 101": ("top-products", {"limit": "101"}),
    "limit not a number": ("top-products", {"limit": "ten"}),
    "placementId over 128 chars": ("overview", {"placementId": "p" * 129}),
    "format json": ("export", {"format": "json"}),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMETERS))
def test_bad_parameters_are_a_422_problem(
    case: str, client: httpx.Client, tenant: TenantContext
) -> None:
    route, params = BAD_PARAMETERS[case]
    response = client.get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics/{route}",
        params=params,
        headers=tenant.admin_headers,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"]
    if route == "overview":
        everyone = client.get(
            "/api/v1/analytics/overview", params=params, headers=tenant.admin_headers
        )
        assert everyone.status_code == 422


def _export(client: httpx.Client, tenant: TenantContext, params: dict[str, str]) -> str:
    """The export's body, after checking that it came as a chunked stream of CSV."""
    with client.stream(
        "GET",
        f"/api/v1/tenants/{tenant.tenant_id}/analytics/export",
        params=params,
        headers=tenant.admin_headers,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        return "".join(response.iter_text())


async def test_the_csv_export_is_streamed_with_a_header_and_one_row_per_day(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, worker: Process
) -> None:
    now = datetime.now(UTC)
    await _ingest(client, db, redis, tenant, _story(31, now))
    first = now.date() - timedelta(days=40)
    params = {"from": str(first), "to": str(now.date()), "format": "csv"}
    text = _export(client, tenant, params)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "day",
        "impressions",
        "clicks",
        "ctr",
        "conversions",
        "conversionRate",
        "revenue",
        "attributedRevenue",
        "events",
        "activeUsers",
        "buyers",
        "purchasesPerUser",
        "revenuePerVisitor",
    ]
    assert [r["day"] for r in rows] == [str(first + timedelta(days=i)) for i in range(41)]
    for row in rows[-6:]:
        day = date.fromisoformat(row["day"])
        truth = await _truth(db, tenant.tenant_id, day_start(day), day_start(day) + timedelta(1))
        assert int(row["events"]) == truth["events"]
        assert int(row["activeUsers"]) == truth["activeUsers"]
        assert float(row["attributedRevenue"]) == pytest.approx(truth["attributedRevenue"])
        assert int(row["buyers"]) == truth["buyers"]
        for ratio in ("conversionRate", "purchasesPerUser", "revenuePerVisitor"):
            assert (float(row[ratio]) if row[ratio] else None) == (
                None if truth[ratio] is None else pytest.approx(truth[ratio])
            ), ratio


def test_hourly_series_cover_a_week_at_most_and_match_the_daily_total(
    client: httpx.Client, tenant: TenantContext
) -> None:
    today = datetime.now(UTC).date()
    params = {"from": str(today - timedelta(days=6)), "to": str(today), "metric": "events"}
    url = f"/api/v1/tenants/{tenant.tenant_id}/analytics/timeseries"
    hourly = client.get(url, params={**params, "interval": "hour"}, headers=tenant.admin_headers)
    assert hourly.status_code == 200, hourly.text
    assert len(hourly.json()["points"]) == 7 * 24
    daily = client.get(url, params=params, headers=tenant.admin_headers).json()["points"]
    assert len(daily) == 7
    assert sum(p["value"] for p in hourly.json()["points"]) == sum(p["value"] for p in daily)


async def test_real_time_counters_expire_within_seven_days(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, worker: Process
) -> None:
    now = datetime.now(UTC)
    await _ingest(
        client, db, redis, tenant, [_event("recommendation_impressed", "ttl-user", "p1", now)]
    )
    day = now.strftime("%Y%m%d")
    for key in (
        keys.realtime_counters(tenant.tenant_id, day),
        keys.realtime_product_counters(tenant.tenant_id, day),
        keys.active_users(tenant.tenant_id, day),
    ):
        for _ in range(50):
            if await redis.exists(key):
                break
            await asyncio.sleep(0.1)
        ttl = await redis.ttl(key)
        assert 0 < ttl <= 7 * 24 * 3600, (key, ttl)


def _today_story(now: datetime) -> list[dict]:
    """Minutes-old events of today: impressions and clicks on two placements and strategies,
    purchases after two of the clicks (attributed) and one after none, and a view."""
    start = max(day_start(now.date()), now - timedelta(minutes=20))
    steps = [start + (now - start) * k / 13 for k in range(1, 13)]
    home, pdp = {"placementId": "home"}, {"placementId": "pdp"}
    return [
        _event("recommendation_impressed", "u0", "p0", steps[0], **home, strategy="trending"),
        _event("recommendation_impressed", "u1", "p0", steps[1], **home, strategy="collaborative"),
        _event("recommendation_impressed", "u2", "p1", steps[2], **pdp, strategy="trending"),
        _event("recommendation_impressed", "u3", "p2", steps[3], **home, strategy="trending"),
        _event("recommendation_clicked", "u0", "p0", steps[4], **home, strategy="trending"),
        _event("recommendation_clicked", "u2", "p1", steps[5], **pdp, strategy="trending"),
        _event("recommendation_clicked", "u3", "p2", steps[6], **home, strategy="trending"),
        _event("purchase", "u0", "p0", steps[7], price=19.99),
        _event("purchase", "u2", "p1", steps[8], price=5.25),
        _event("purchase", "u4", "p3", steps[9], price=7.5),
        _event("product_viewed", "u5", "p2", steps[10]),
    ]


async def _product_truth(
    db: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime
) -> dict[str, dict]:
    """Per product, the top-products figures straight from the raw events and attributions."""
    rows = await db.fetch(
        """SELECT product_id,
                  count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS impressions,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
                  count(*) FILTER (WHERE event_type = 'purchase') AS conversions,
                  coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::float8
                      AS revenue
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
           GROUP BY product_id""",
        tenant_id,
        start,
        end,
    )
    found = {row["product_id"]: {**dict(row), "attributedRevenue": 0.0} for row in rows}
    for row in await db.fetch(
        """SELECT product_id, sum(revenue)::float8 AS revenue FROM revenue_attributions
           WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
           GROUP BY product_id""",
        tenant_id,
        start,
        end,
    ):
        found[row["product_id"]]["attributedRevenue"] = row["revenue"]
    return found


async def test_todays_counters_hold_what_ingestion_counted_and_answer_as_a_direct_count(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, worker: Process
) -> None:
    now = datetime.now(UTC)
    midnight, tomorrow = day_start(now.date()), day_start(now.date() + timedelta(days=1))
    await _ingest(client, db, redis, tenant, _today_story(now))
    t = tenant.tenant_id
    truth = await _truth(db, t, midnight, tomorrow)
    assert truth["attributedRevenue"] == pytest.approx(25.24)

    counted = await read_counters(redis, tenant_id=t, day=f"{midnight:%Y%m%d}")
    for name, field in [
        ("impressions", "impressions"),
        ("clicks", "clicks"),
        ("conversions", "conversions"),
        ("revenue", "revenue"),
        ("attributedRevenue", "attributed_revenue"),
        ("events", "events"),
    ]:
        assert counted[field] == pytest.approx(truth[name]), name
    products = await _product_truth(db, t, midnight, tomorrow)
    per_product = await redis.hgetall(keys.realtime_product_counters(t, f"{midnight:%Y%m%d}"))
    assert decode_fields(per_product) == pytest.approx(
        {
            f"{code}|{product}": figures[name]
            for product, figures in products.items()
            for code, name in [("i", "impressions"), ("c", "clicks"), ("v", "conversions")]
            + ([("r", "revenue")] if figures["revenue"] else [])
            if figures[name]
        }
    )

    today = {"from": str(now.date())}
    assert _overview(client, tenant, **today) == _approx(truth)
    for placement, strategy in [("home", "trending"), ("pdp", None), (None, "collaborative")]:
        params = dict(today)
        if placement:
            params["placementId"] = placement
        if strategy:
            params["strategy"] = strategy
        expected = await _scoped_truth(db, t, midnight, tomorrow, placement, strategy)
        assert _overview(client, tenant, **params) == _approx(expected), (placement, strategy)
    for sort, name in [
        ("impressions", "impressions"),
        ("clicks", "clicks"),
        ("conversions", "conversions"),
        ("revenue", "revenue"),
        ("attributedRevenue", "attributedRevenue"),
    ]:
        top = _get(
            client, f"/api/v1/tenants/{t}/analytics/top-products", tenant, **today, sort=sort
        ).json()["data"]
        ranked = sorted(
            (p for p in products.items() if p[1][name]), key=lambda p: (-p[1][name], p[0])
        )
        assert [(p["productId"], pytest.approx(p[sort])) for p in top] == [
            (product, figures[name]) for product, figures in ranked
        ], sort
    series = _get(
        client, f"/api/v1/tenants/{t}/analytics/timeseries", tenant, metric="activeUsers"
    ).json()["points"]
    assert series[-1] == {"start": midnight.isoformat(), "value": truth["activeUsers"]}


async def _bump(redis: Redis, tenant_id: str, day: str, amount: int) -> None:
    """Counters that no stored event backs: an answer that shows them read the counters."""
    counters = keys.realtime_counters(tenant_id, day)
    for field in ("events", "type|recommendation_impressed", "impressions|home|trending"):
        await redis.hincrby(counters, field, amount)
    await redis.hincrbyfloat(counters, "attributed_revenue", amount / 100)
    await redis.hincrby(keys.realtime_product_counters(tenant_id, day), "i|p0", amount)


async def test_todays_figures_follow_the_counters_and_a_window_inside_today_the_raw_events(
    client: httpx.Client,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    midnight, tomorrow = day_start(now.date()), day_start(now.date() + timedelta(days=1))
    t = tenant.tenant_id
    await _ingest(client, db, redis, tenant, _today_story(now))
    await _ingest(client, db, redis, other_tenant, _today_story(now))
    await _bump(redis, t, f"{midnight:%Y%m%d}", 1000)
    await _bump(redis, other_tenant.tenant_id, f"{midnight:%Y%m%d}", 500)
    truth = await _truth(db, t, midnight, tomorrow)
    # Attributed revenue is read from the attributions themselves, never from the counters.
    shown = {
        **truth,
        "impressions": truth["impressions"] + 1000,
        "events": truth["events"] + 1000,
        "ctr": truth["clicks"] / (truth["impressions"] + 1000),
    }

    # Today from midnight on, alone, in the default period, or from yesterday noon.
    yesterday_noon = midnight - timedelta(hours=12)
    for params in [
        {"from": str(now.date())},
        {},
        {"from": yesterday_noon.isoformat(), "to": (now + timedelta(minutes=6)).isoformat()},
    ]:
        assert _overview(client, tenant, **params) == _approx(shown), params
    # Active users stay an exact distinct count over the raw events.
    assert _overview(client, tenant)["activeUsers"] == truth["activeUsers"]
    scoped = await _scoped_truth(db, t, midnight, tomorrow, "home", "trending")
    assert _overview(client, tenant, placementId="home", strategy="trending")["impressions"] == (
        scoped["impressions"] + 1000
    )
    daily = _get(client, f"/api/v1/tenants/{t}/analytics/timeseries", tenant).json()["points"]
    assert daily[-1]["value"] == truth["impressions"] + 1000
    top = _get(
        client, f"/api/v1/tenants/{t}/analytics/top-products", tenant, sort="impressions"
    ).json()["data"]
    assert top[0]["productId"] == "p0" and top[0]["impressions"] == 1002

    # A window that starts or ends inside today is counted from the raw events.
    for start, end in [
        (midnight, now + timedelta(minutes=1)),
        (midnight + timedelta(seconds=1), tomorrow),
    ]:
        params = {"from": start.isoformat(), "to": end.isoformat()}
        assert _overview(client, tenant, **params) == _approx(await _truth(db, t, start, end))
    hourly = _get(
        client,
        f"/api/v1/tenants/{t}/analytics/timeseries",
        tenant,
        **{"from": str(now.date())},
        interval="hour",
    ).json()["points"]
    assert sum(point["value"] for point in hourly) == truth["impressions"]


async def test_with_redis_unreachable_today_is_counted_from_the_raw_events(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    worker: Process,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC)
    midnight, tomorrow = day_start(now.date()), day_start(now.date() + timedelta(days=1))
    t = tenant.tenant_id
    await _ingest(client, db, redis, tenant, _today_story(now))
    await _bump(redis, t, f"{midnight:%Y%m%d}", 1000)
    truth = await _truth(db, t, midnight, tomorrow)
    period = resolve_period(from_raw=str(now.date()), to_raw=None, now=now)
    live = await analytics_store.tenant_overview(db, redis, tenant_id=t, period=period, now=now)
    assert live["impressions"] == truth["impressions"] + 1000

    # A real client on a port where nothing listens: every call fails to connect.
    dead = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1, socket_connect_timeout=1
    )
    try:
        with caplog.at_level(logging.WARNING, logger="store.analytics"):
            found = await analytics_store.tenant_overview(
                db, dead, tenant_id=t, period=period, now=now
            )
            everyone = await analytics_store.owner_overview(
                db, dead, owner_id=tenant.admin_id, period=period, now=now
            )
            points = await analytics_store.series(
                db, dead, tenant_id=t, period=period, interval="day", now=now
            )
            top = await analytics_store.top_products(
                db, dead, tenant_id=t, period=period, sort="impressions", limit=10, now=now
            )
    finally:
        await dead.aclose()
    assert found == _approx(truth)
    assert {k: v for k, v in everyone.items() if k != "tenants"} == _approx(truth)
    assert [{k: v for k, v in p.items() if k != "start"} for p in points] == [_approx(truth)]
    products = await _product_truth(db, t, midnight, tomorrow)
    assert {p["productId"]: p["impressions"] for p in top} == {
        product: figures["impressions"]
        for product, figures in products.items()
        if figures["impressions"]
    }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and all("counted from raw" in r.getMessage() for r in warnings)


async def _breakdown_truth(
    db: asyncpg.Pool, tenant_id: str, start: datetime, end: datetime, by: str
) -> list[dict]:
    """Per placement or strategy, straight from the raw events and attributions."""
    key = (
        "coalesce(placement_id, '')" if by == "placement" else "coalesce(metadata->>'strategy', '')"
    )
    shown = await db.fetch(
        f"""SELECT {key} AS key,
                   count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                   count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c
            FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
              AND event_type IN ('recommendation_impressed', 'recommendation_clicked')
            GROUP BY 1""",
        tenant_id,
        start,
        end,
    )
    column = "placement_id" if by == "placement" else "strategy"
    bought = await db.fetch(
        f"""SELECT coalesce({column}, '') AS key, count(*) AS v, sum(revenue)::float8 AS r
            FROM revenue_attributions
            WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3 GROUP BY 1""",
        tenant_id,
        start,
        end,
    )
    rows: dict[str, dict] = {}
    for row in shown:
        rows[row["key"]] = {"i": row["i"], "c": row["c"], "v": 0, "r": 0.0}
    for row in bought:
        rows.setdefault(row["key"], {"i": 0, "c": 0, "v": 0, "r": 0.0}).update(
            v=row["v"], r=row["r"]
        )
    return sorted(
        (
            {
                "key": k,
                "impressions": f["i"],
                "clicks": f["c"],
                "ctr": f["c"] / f["i"] if f["i"] else None,
                "conversions": f["v"],
                "attributedRevenue": pytest.approx(round(f["r"], 4)),
            }
            for k, f in rows.items()
        ),
        key=lambda row: (-row["impressions"], -row["clicks"], row["key"]),
    )


async def test_breakdowns_per_placement_and_strategy_equal_a_direct_count(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, redis, tenant, _story(37, now))
    await _refresh(db, migrated, tenant.tenant_id, [today - timedelta(days=n) for n in (1, 2, 3)])
    url = f"/api/v1/tenants/{tenant.tenant_id}/analytics/breakdown"
    # A raw edge, aggregated days, and today from the counters; then a window inside today
    # (raw), and whole days only (aggregates).
    periods = [
        (day_start(today - timedelta(days=5)) + timedelta(hours=9), now + timedelta(minutes=6)),
        # (just after midnight the window is the day's first second)
        (
            day_start(today),
            max(now - timedelta(minutes=20), day_start(today) + timedelta(seconds=1)),
        ),
        (day_start(today - timedelta(days=3)), day_start(today)),
    ]
    for start, end in periods:
        for by in ("placement", "strategy"):
            response = _get(
                client, url, tenant, by=by, **{"from": start.isoformat(), "to": end.isoformat()}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            truth = await _breakdown_truth(db, tenant.tenant_id, start, end, by)
            assert body["by"] == by
            assert body["data"] == truth, (by, start, end)
    everything = _get(client, url, tenant, by="placement").json()["data"]
    assert {row["key"] for row in everything} == set(PLACEMENTS)
    assert sum(row["conversions"] for row in everything) > 0
    assert _get(client, url, tenant, by="country").status_code == 422


async def test_the_funnel_counts_users_who_reached_each_step_as_a_direct_count(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    story = _story(41, now)
    # A shopper who bought without clicking a recommendation stops at the first step; one
    # who viewed on one day and clicked, added and bought on later days goes all the way.
    story.append(_event("product_viewed", "direct", "p3", now - timedelta(minutes=3)))
    story.append(_event("purchase", "direct", "p3", now - timedelta(minutes=2), price=5))
    for back, kind in enumerate(["purchase", "add_to_cart", "recommendation_clicked"]):
        moment = day_start(today - timedelta(days=back)) + timedelta(minutes=1)
        story.append(_event(kind, "patient", "p4", min(moment, now), price=8))
    story.append(_event("product_viewed", "patient", "p4", day_start(today - timedelta(3))))
    await _ingest(client, db, redis, tenant, story)
    await _refresh(db, migrated, tenant.tenant_id, [today - timedelta(days=n) for n in (1, 2, 3)])
    order = ["product_viewed", "recommendation_clicked", "add_to_cart", "purchase"]
    names = ["viewed", "clickedRecommendation", "addedToCart", "purchased"]
    url = f"/api/v1/tenants/{tenant.tenant_id}/analytics/funnel"
    # A raw edge, aggregated days and today raw; whole aggregated days only; today only.
    periods = [
        (day_start(today - timedelta(days=5)) + timedelta(hours=3), now + timedelta(minutes=6)),
        (day_start(today - timedelta(days=3)), day_start(today)),
        (day_start(today), now + timedelta(minutes=6)),
    ]
    for start, end in periods:
        rows = await db.fetch(
            """SELECT user_id, array_agg(DISTINCT event_type) AS types FROM events
               WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
               GROUP BY user_id""",
            tenant.tenant_id,
            start,
            end,
        )
        expected = [
            sum(1 for row in rows if set(order[: k + 1]) <= set(row["types"])) for k in range(4)
        ]
        response = _get(client, url, tenant, **{"from": start.isoformat(), "to": end.isoformat()})
        assert response.status_code == 200, response.text
        steps = response.json()["steps"]
        assert [s["step"] for s in steps] == names
        assert [s["users"] for s in steps] == expected, (start, end)
        if expected[1]:
            assert steps[2]["rateFromPrevious"] == pytest.approx(expected[2] / expected[1])
    first = periods[0]
    whole = _get(client, url, tenant, **{"from": first[0].isoformat(), "to": first[1].isoformat()})
    steps = whole.json()["steps"]
    assert steps[0]["users"] > steps[-1]["users"] > 0
    assert steps[0]["rateFromPrevious"] is None
    assert steps[3]["rateFromFirst"] == pytest.approx(steps[3]["users"] / steps[0]["users"])
