"""Analytics over real HTTP, PostgreSQL, Redis and a real worker: every figure equals a direct
count over the raw events, for aggregated days, raw edges and today alike."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext
from redis.asyncio import Redis

from domain.analytics import day_start
from store import keys
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


async def _ingest(
    client: httpx.Client, db: asyncpg.Pool, tenant: TenantContext, events: list[dict]
) -> None:
    before = await _rows(db, tenant.tenant_id)
    _post_batches(client, tenant, events)
    for _ in range(300):
        if await _rows(db, tenant.tenant_id) >= before + len(events):
            break
        await asyncio.sleep(0.1)
    assert await _rows(db, tenant.tenant_id) == before + len(events)


async def _refresh(db: asyncpg.Pool, settings: Settings, tenant_id: str, days: list[date]) -> None:
    """Run the scheduled refresh in the worker and wait until it closed every one of `days`."""
    asked = datetime.now(UTC)
    _enqueue(settings, "refresh_analytics")
    for _ in range(300):
        done = await db.fetchval(
            """SELECT count(*) FROM analytics_daily WHERE tenant_id = $1 AND placement_id = ''
               AND day = ANY($2) AND refreshed_at >= $3""",
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
                  count(*) AS events, count(DISTINCT user_id) AS users
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
        "conversionRate": row["conversions"] / row["users"] if row["users"] else None,
        "revenue": round(row["revenue"], 4),
        "attributedRevenue": round(attributed, 4),
        "events": row["events"],
        "activeUsers": row["users"],
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
        """SELECT count(*) AS n, coalesce(sum(revenue), 0)::float8 AS revenue
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
        "conversionRate": bought["n"] / row["users"] if row["users"] else None,
        "revenue": round(bought["revenue"], 4),
        "attributedRevenue": round(bought["revenue"], 4),
        "events": row["events"],
        "activeUsers": row["users"],
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
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, tenant, _story(11, now))
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

    products = await db.fetch(
        """SELECT product_id, count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                  count(*) FILTER (WHERE event_type = 'purchase') AS v
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
    assert [(p["productId"], p["clicks"]) for p in top] == [
        (p["product_id"], p["c"]) for p in ranked[:3]
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
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, tenant, _story(17, now))
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


async def test_past_days_are_read_from_the_aggregates_and_a_late_event_counts_after_the_refresh(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    await _ingest(client, db, tenant, _story(23, now))
    past = [today - timedelta(days=n) for n in range(1, 6)]
    await _refresh(db, migrated, tenant.tenant_id, past)
    params = {"from": str(past[-1]), "to": str(past[0])}
    before = _overview(client, tenant, **params)
    late = _event("purchase", "late-user", "p1", day_start(past[2]) + timedelta(hours=5), price=7)
    await _ingest(client, db, tenant, [late])
    # Served from the aggregate until the next refresh picks the late arrival up.
    assert _overview(client, tenant, **params) == before
    await _refresh(db, migrated, tenant.tenant_id, [past[2]])
    after = _overview(client, tenant, **params)
    assert after["events"] == before["events"] + 1
    assert after["activeUsers"] == before["activeUsers"] + 1
    assert after["revenue"] == pytest.approx(before["revenue"] + 7)
    assert after == _approx(
        await _truth(db, tenant.tenant_id, day_start(past[-1]), day_start(today))
    )


async def test_todays_figures_include_events_ingested_seconds_ago(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    now = datetime.now(UTC)
    assert _overview(client, tenant)["events"] == 0
    fresh = [
        _event("recommendation_impressed", f"fresh-{i}", "p1", now - timedelta(seconds=i + 1))
        for i in range(5)
    ]
    fresh.append(_event("purchase", "fresh-0", "p1", now - timedelta(seconds=1), price=12.5))
    await _ingest(client, db, tenant, fresh)
    found = _overview(client, tenant)
    assert found["impressions"] == 5 and found["conversions"] == 1
    assert found["events"] == 6 and found["activeUsers"] == 5 and found["revenue"] == 12.5


async def test_the_all_tenants_overview_sums_only_the_callers_tenants(
    client: httpx.Client,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
    migrated: Settings,
    worker: Process,
) -> None:
    now = datetime.now(UTC)
    second = await create_tenant(db, owner_id=tenant.admin_id, name="Second Shop")
    second_id = str(second["id"])
    await db.execute(
        """INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, occurred_at)
           SELECT $1, 'e' || i, 'recommendation_clicked', 'v' || (i % 3), 'p1',
                  $2::timestamptz - make_interval(secs => i)
           FROM generate_series(1, 7) i""",
        second_id,
        now,
    )
    await _ingest(client, db, tenant, _story(5, now)[:40])
    await _ingest(client, db, other_tenant, _story(6, now)[:30])
    response = _get(client, "/api/v1/analytics/overview", tenant)
    assert response.status_code == 200, response.text
    body = response.json()
    mine = [
        await _truth(db, t, day_start(now.date() - timedelta(days=29)), now + timedelta(hours=1))
        for t in (tenant.tenant_id, second_id)
    ]
    assert {t["tenantId"] for t in body["tenants"]} == {tenant.tenant_id, second_id}
    for name in ("impressions", "clicks", "conversions", "events", "activeUsers"):
        assert body[name] == mine[0][name] + mine[1][name]
    assert body["revenue"] == pytest.approx(mine[0]["revenue"] + mine[1]["revenue"])


def test_another_admins_tenant_is_a_404_on_every_analytics_route(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    for route in ("overview", "timeseries", "top-products", "export"):
        for tenant_id in (other_tenant.tenant_id, str(uuid.uuid4()), "not-a-uuid"):
            response = client.get(
                f"/api/v1/tenants/{tenant_id}/analytics/{route}", headers=tenant.admin_headers
            )
            assert response.status_code == 404, (route, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        anonymous = client.get(f"/api/v1/tenants/{tenant.tenant_id}/analytics/{route}")
        assert anonymous.status_code == 401
        with_key = client.get(
            f"/api/v1/tenants/{tenant.tenant_id}/analytics/{route}", headers=tenant.read_headers
        )
        assert with_key.status_code == 401


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
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    now = datetime.now(UTC)
    await _ingest(client, db, tenant, _story(31, now))
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
    ]
    assert [r["day"] for r in rows] == [str(first + timedelta(days=i)) for i in range(41)]
    for row in rows[-6:]:
        day = date.fromisoformat(row["day"])
        truth = await _truth(db, tenant.tenant_id, day_start(day), day_start(day) + timedelta(1))
        assert int(row["events"]) == truth["events"]
        assert int(row["activeUsers"]) == truth["activeUsers"]
        assert float(row["attributedRevenue"]) == pytest.approx(truth["attributedRevenue"])


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
    await _ingest(client, db, tenant, [_event("product_viewed", "ttl-user", "p1", now)])
    day = now.strftime("%Y%m%d")
    for key in (
        keys.realtime_counters(tenant.tenant_id, day),
        keys.active_users(tenant.tenant_id, day),
    ):
        for _ in range(50):
            if await redis.exists(key):
                break
            await asyncio.sleep(0.1)
        ttl = await redis.ttl(key)
        assert 0 < ttl <= 7 * 24 * 3600, (key, ttl)
