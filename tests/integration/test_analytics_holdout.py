"""The holdout over real HTTP, PostgreSQL and Redis: the tenant option, the baseline the
recommendations endpoint serves the slice, and the overview's incrementality, equal to the
experiments' statistics over a direct per-user count of the raw events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import pytest
from conftest import TenantContext, make_tenant

from domain import holdout
from domain.experiments.statistics import UserArrays
from store import analytics as analytics_store
from store.settings import Settings


def test_the_holdout_option_is_validated_with_the_tenant_config(
    client: httpx.Client, tenant: TenantContext
) -> None:
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    for bad in (
        {"holdoutPercent": 21},
        {"holdoutPercent": -1},
        {"holdoutPercent": "ten"},
        {"holdoutBaseline": "random"},
    ):
        response = client.patch(url, json={"config": bad}, headers=tenant.admin_headers)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    good = {"holdoutPercent": 20, "holdoutBaseline": "none"}
    response = client.patch(url, json={"config": good}, headers=tenant.admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["config"] == good


def _users(tenant_id: str, percent: int, *, held: bool, count: int) -> list[str]:
    found = []
    for i in range(100_000):
        user = f"shopper-{i}"
        if holdout.in_holdout(tenant_id=tenant_id, user_id=user, percent=percent) == held:
            found.append(user)
            if len(found) == count:
                return found
    raise AssertionError("not enough users")


def _get(client: httpx.Client, url: str, tenant: TenantContext, **params: str) -> httpx.Response:
    """A GET as the tenant's admin (sync helper: the api is a real subprocess)."""
    return client.get(url, params=params, headers=tenant.admin_headers)


def _recommend(client: httpx.Client, tenant: TenantContext, user: str, **params: str) -> dict:
    response = client.get(
        "/api/v1/recommendations",
        params={"userId": user, **params},
        headers=tenant.read_headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_holdout_is_served_its_baseline_and_everyone_else_as_before(
    client: httpx.Client, db: asyncpg.Pool, migrated: Settings
) -> None:
    trending = await make_tenant(db, migrated, config={"holdoutPercent": 20})
    held = _users(trending.tenant_id, 20, held=True, count=3)
    rest = _users(trending.tenant_id, 20, held=False, count=3)
    for user in held:
        answer = _recommend(client, trending, user, strategy="collaborative")
        assert answer["meta"]["holdout"] is True
        assert answer["meta"]["requestedStrategy"] == "trending"
        assert answer["meta"]["experimentId"] is None
    for user in rest:
        answer = _recommend(client, trending, user, strategy="collaborative")
        assert answer["meta"]["holdout"] is False
        assert answer["meta"]["requestedStrategy"] == "collaborative"

    silent = await make_tenant(
        db, migrated, config={"holdoutPercent": 20, "holdoutBaseline": "none"}
    )
    await db.execute(
        """INSERT INTO catalog_items (tenant_id, product_id, name, price, available)
           SELECT $1, 'p' || i, 'Product ' || i, 10, true FROM generate_series(1, 5) i""",
        silent.tenant_id,
    )
    for user in _users(silent.tenant_id, 20, held=True, count=3):
        answer = _recommend(client, silent, user)
        assert answer["data"] == [] and answer["meta"]["holdout"] is True
    for user in _users(silent.tenant_id, 20, held=False, count=3):
        assert _recommend(client, silent, user)["meta"]["holdout"] is False


async def _seed(db: asyncpg.Pool, tenant_id: str, now: datetime, *, users: int) -> None:
    """Raw events of `users` shoppers over the last days: views, recommendations, purchases."""
    generator = random.Random(99)
    rows: list[tuple[str, str, str, str, datetime, float | None]] = []
    for i in range(users):
        user = f"buyer-{i}"
        for k in range(generator.randint(1, 4)):
            moment = now - timedelta(hours=generator.randint(1, 24 * 6), seconds=k)
            kind = generator.choice(
                ["product_viewed", "recommendation_impressed", "recommendation_clicked"]
            )
            rows.append((f"e-{i}-{k}", kind, user, f"p{k}", moment, None))
        if generator.random() < 0.3:
            moment = now - timedelta(hours=generator.randint(1, 24 * 6), seconds=59)
            price = generator.choice([5, 12.5, 40, 99.99])
            rows.append((f"buy-{i}", "purchase", user, "p1", moment, price))
    await db.executemany(
        """INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, occurred_at,
                               price)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(tenant_id, *row) for row in rows],
    )


async def test_the_overview_reports_incrementality_equal_to_a_direct_per_user_count(
    client: httpx.Client, db: asyncpg.Pool, migrated: Settings
) -> None:
    now = datetime.now(UTC)
    shop = await make_tenant(db, migrated, config={"holdoutPercent": 15})
    await _seed(db, shop.tenant_id, now, users=1500)
    # Past days from the aggregates (day bitmaps and stored buckets), the rest raw.
    await analytics_store.refresh_tenant_days(
        db, tenant_id=shop.tenant_id, days=[now.date() - timedelta(days=n) for n in range(2, 6)]
    )
    start, end = now - timedelta(days=7), now + timedelta(minutes=6)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    response = _get(client, f"/api/v1/tenants/{shop.tenant_id}/analytics/overview", shop, **params)
    assert response.status_code == 200, response.text
    found = response.json()["incremental"]

    # The truth: per-user figures straight from the events, assigned in Python.
    rows = await db.fetch(
        """SELECT user_id,
                  count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                  count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                  count(*) FILTER (WHERE event_type = 'purchase') AS p,
                  coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)::float8 AS r
           FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
           GROUP BY user_id""",
        shop.tenant_id,
        start,
        end,
    )
    sides: dict[bool, list] = {True: [], False: []}
    for row in rows:
        held = holdout.in_holdout(tenant_id=shop.tenant_id, user_id=row["user_id"], percent=15)
        sides[held].append(row)

    def arrays(side: list) -> UserArrays:
        return UserArrays(
            impressions=np.array([r["i"] for r in side]),
            clicks=np.array([r["c"] for r in side]),
            purchases=np.array([r["p"] for r in side]),
            revenue=np.array([r["r"] for r in side]),
        )

    expected = holdout.incremental(
        holdout=arrays(sides[True]), exposed=arrays(sides[False]), percent=15
    )
    assert found["holdoutUsers"] == len(sides[True]) > 150
    assert found["exposedUsers"] == len(sides[False])
    for test in ("revenuePerVisitor", "conversionRate"):
        for name in ("absoluteDiff", "relativeLift", "pValue"):
            assert found[test][name] == pytest.approx(expected[test][name]), (test, name)
        assert found[test]["ci"] == pytest.approx(expected[test]["ci"])
        # 1,500 users split 15/85: the holdout has fewer than 500, so the experiments' rule
        # calls it low confidence.
        assert found[test]["lowConfidence"] is True
    buyers = {side: sum(1 for r in sides[side] if r["p"]) for side in sides}
    assert found["holdoutConversionRate"] == pytest.approx(buyers[True] / len(sides[True]))

    # Without a holdout, no incrementality; a scoped overview has none either.
    plain = await make_tenant(db, migrated)
    response = _get(client, f"/api/v1/tenants/{plain.tenant_id}/analytics/overview", plain)
    assert "incremental" not in response.json()
    scoped = _get(
        client,
        f"/api/v1/tenants/{shop.tenant_id}/analytics/overview",
        shop,
        **params,
        placementId="home",
    )
    assert "incremental" not in scoped.json()


async def test_the_sql_holdout_assignment_equals_the_python_one(
    db: asyncpg.Pool, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated)
    now = datetime.now(UTC)
    users = [f"ü-{i}-ß" if i % 7 == 0 else f"u{i}" for i in range(3000)]
    await db.executemany(
        """INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, occurred_at)
           VALUES ($1, $2, 'product_viewed', $3, 'p1', $4)""",
        [
            (shop.tenant_id, f"v{i}", user, now - timedelta(minutes=1))
            for i, user in enumerate(users)
        ],
    )
    period = analytics_store.Period(now - timedelta(hours=1), now)
    # Users numbered by a refresh carry their bucket; the others are assigned as they come.
    await analytics_store.refresh_tenant_days(db, tenant_id=shop.tenant_id, days=[now.date()])
    stored = await db.fetch(
        "SELECT user_id, holdout_bucket FROM analytics_users WHERE tenant_id = $1",
        shop.tenant_id,
    )
    assert len(stored) == len(users)
    for row in stored:
        digest = holdout.salt(shop.tenant_id) + ":" + row["user_id"]
        bucket = int.from_bytes(__import__("hashlib").sha256(digest.encode()).digest(), "big")
        assert row["holdout_bucket"] == bucket % 10_000
    for percent in (1, 10, 20):
        held, rest = await analytics_store.holdout_sums(
            db, tenant_id=shop.tenant_id, period=period, percent=percent
        )
        expected = sum(
            holdout.in_holdout(tenant_id=shop.tenant_id, user_id=u, percent=percent) for u in users
        )
        assert (held.users, rest.users) == (expected, len(users) - expected)
