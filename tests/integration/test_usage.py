"""Metering, plans and quotas over the real api, PostgreSQL and Redis: recommendation requests
metered in the rate-limit call, the usage page and its CSV, the daily copy, the allowance
alerts (once per threshold per month), the operators' plan change and tenants per admin."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from conftest import TenantContext, make_tenant
from redis.asyncio import Redis

from domain.plans import PLANS, PlanName
from store import keys
from store.api_keys import issue_api_key
from store.settings import Settings
from store.usage import meter_all, month_of


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
async def operator(db: asyncpg.Pool, migrated: Settings) -> TenantContext:
    """An admin with the operator role."""
    made = await make_tenant(db, migrated)
    await db.execute("UPDATE admins SET is_operator = true WHERE id = $1", made.admin_id)
    return made


def _this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def _meter(redis: Redis, tenant_id: str) -> dict[str, int]:
    raw = await redis.hgetall(keys.usage_meter(tenant_id, month_of(datetime.now(UTC))))
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


async def _test_key(db: asyncpg.Pool, settings: Settings, tenant_id: str, permission: str) -> str:
    _, raw = await issue_api_key(
        db,
        tenant_id=tenant_id,
        name=f"test {permission}",
        permission=permission,
        environment="test",
        secret=settings.api_key_secret,
    )
    return raw


async def test_answered_recommendation_requests_are_metered_once_each_under_concurrent_load(
    http: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    async def ask(index: int) -> int:
        response = await http.get(
            "/api/v1/recommendations",
            params={"userId": f"u{index % 7}", "strategy": "trending", "limit": 5},
            headers=tenant.read_headers,
        )
        return response.status_code

    statuses = await asyncio.gather(*(ask(i) for i in range(60)))
    assert statuses.count(200) == 60
    meter = await _meter(redis, tenant.tenant_id)
    day = datetime.now(UTC).day
    assert meter["live:requests"] == 60
    assert meter[f"live:requests:{day:02d}"] == 60
    assert "test:requests" not in meter


async def test_requests_are_metered_in_the_same_call_when_the_tenant_caches_no_answers(
    http: httpx.AsyncClient, db: asyncpg.Pool, migrated: Settings, redis: Redis
) -> None:
    uncached = await make_tenant(db, migrated, config={"answerCacheSeconds": 0})
    for user in ("n1", "n2", "n3"):
        answer = await http.get(
            "/api/v1/recommendations", params={"userId": user}, headers=uncached.read_headers
        )
        assert answer.status_code == 200
        assert answer.headers["X-Recommendation-Cache"] == "off"
    assert (await _meter(redis, uncached.tenant_id))["live:requests"] == 3


async def test_requests_that_do_not_answer_200_are_not_metered(
    http: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    ok = await http.get(
        "/api/v1/recommendations", params={"userId": "u1"}, headers=tenant.read_headers
    )
    assert ok.status_code == 200
    bad_limit = await http.get(
        "/api/v1/recommendations",
        params={"userId": "u1", "limit": "500"},
        headers=tenant.read_headers,
    )
    assert bad_limit.status_code == 422
    unknown = await http.get(
        "/api/v1/recommendations",
        params={"userId": "u1", "strategy": "nope"},
        headers=tenant.read_headers,
    )
    assert unknown.status_code == 422
    suspended = await http.patch(
        f"/api/v1/tenants/{tenant.tenant_id}",
        json={"status": "suspended"},
        headers=tenant.admin_headers,
    )
    assert suspended.status_code == 200
    refused = await http.get(
        "/api/v1/recommendations", params={"userId": "u1"}, headers=tenant.read_headers
    )
    assert refused.status_code == 403
    assert (await _meter(redis, tenant.tenant_id))["live:requests"] == 1


async def test_test_key_requests_are_metered_apart_on_sandbox_limits(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    redis: Redis,
    db: asyncpg.Pool,
    migrated: Settings,
) -> None:
    test_key = await _test_key(db, migrated, tenant.tenant_id, "read")
    for _ in range(3):
        answer = await http.get(
            "/api/v1/recommendations", params={"userId": "u1"}, headers={"X-API-Key": test_key}
        )
        assert answer.status_code == 200
    meter = await _meter(redis, tenant.tenant_id)
    assert meter["test:requests"] == 3
    assert "live:requests" not in meter
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["recommendationRequests"] == 0
    assert usage["test"]["recommendationRequests"] == 3
    assert usage["test"]["plan"] == "sandbox"
    assert usage["test"]["allowances"]["recommendationRequests"] == 50_000


async def test_the_usage_page_gives_days_totals_allowances_and_shares_of_the_plan(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    for user in ("a", "b"):
        answer = await http.get(
            "/api/v1/recommendations", params={"userId": user}, headers=tenant.read_headers
        )
        assert answer.status_code == 200
    response = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/usage",
        params={"month": _this_month()},
        headers=tenant.admin_headers,
    )
    assert response.status_code == 200
    usage = response.json()
    assert usage["plan"] == "sandbox"
    assert usage["month"] == _this_month()
    assert usage["recommendationRequests"] == 2
    assert usage["events"] == 0
    assert usage["allowances"] == {"events": 100_000, "recommendationRequests": 50_000}
    assert usage["shareUsed"]["recommendationRequests"] == pytest.approx(2 / 50_000)
    assert usage["overage"] == {"events": 0, "recommendationRequests": 0, "amountUsd": 0}
    assert usage["writesRefused"] is False
    today = datetime.now(UTC).date().isoformat()
    assert [d for d in usage["days"] if d["recommendationRequests"]] == [
        {
            "day": today,
            "events": 0,
            "recommendationRequests": 2,
            "testEvents": 0,
            "testRecommendationRequests": 0,
        }
    ]
    assert len(usage["days"]) >= 28
    tenant_row = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}", headers=tenant.admin_headers)
    ).json()
    assert tenant_row["plan"] == "sandbox"


@pytest.mark.parametrize("month", ["2026-13", "26-01", "yesterday", "2026-1"])
async def test_a_malformed_month_is_a_422_problem(
    http: httpx.AsyncClient, tenant: TenantContext, month: str
) -> None:
    response = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/usage",
        params={"month": month},
        headers=tenant.admin_headers,
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "month"


async def test_another_admins_usage_is_a_404_and_a_key_cannot_read_usage(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    foreign = await http.get(
        f"/api/v1/tenants/{other_tenant.tenant_id}/usage", headers=tenant.admin_headers
    )
    assert foreign.status_code == 404
    by_key = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.write_headers
    )
    assert by_key.status_code == 401


async def test_the_usage_csv_has_one_row_per_day_and_a_total(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    for _ in range(3):
        answer = await http.get(
            "/api/v1/recommendations", params={"userId": "c"}, headers=tenant.read_headers
        )
        assert answer.status_code == 200
    response = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/usage/export",
        params={"month": _this_month(), "format": "csv"},
        headers=tenant.admin_headers,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "day",
        "events",
        "recommendation_requests",
        "test_events",
        "test_recommendation_requests",
    ]
    today = datetime.now(UTC).date().isoformat()
    assert [r for r in rows if r[0] == today] == [[today, "0", "3", "0", "0"]]
    assert rows[-1] == ["total", "0", "3", "0", "0"]


async def test_the_daily_copy_in_postgresql_equals_the_meter_and_outlives_it(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    for _ in range(4):
        answer = await http.get(
            "/api/v1/recommendations", params={"userId": "p"}, headers=tenant.read_headers
        )
        assert answer.status_code == 200
    await meter_all(db, redis, now=datetime.now(UTC))
    stored = await db.fetchrow(
        "SELECT recommendation_requests, events FROM usage_daily WHERE tenant_id = $1 AND day = $2",
        tenant.tenant_id,
        datetime.now(UTC).date(),
    )
    assert stored is not None
    assert (stored["recommendation_requests"], stored["events"]) == (4, 0)
    # With the meter gone (a flushed Redis), the page reads the copy.
    await redis.delete(keys.usage_meter(tenant.tenant_id, month_of(datetime.now(UTC))))
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["recommendationRequests"] == 4


async def _set_month_usage(redis: Redis, tenant_id: str, field: str, used: int) -> None:
    """Stand for a month of traffic (tens of thousands of requests) on the meter."""
    now = datetime.now(UTC)
    key = keys.usage_meter(tenant_id, month_of(now))
    await redis.hset(key, mapping={field: used, f"{field}:{now.day:02d}": used})


async def _mails(db: asyncpg.Pool, address: str) -> list[str]:
    rows = await db.fetch(
        "SELECT subject FROM mail_outbox WHERE to_address = $1 ORDER BY id", address
    )
    return [row["subject"] for row in rows]


async def test_each_allowance_threshold_raises_one_banner_and_one_mail_per_month(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    requests = PLANS[PlanName.SANDBOX].requests_included
    assert requests is not None
    await _set_month_usage(redis, tenant.tenant_id, "live:requests", requests * 8 // 10 - 1)
    await meter_all(db, redis, now=datetime.now(UTC))
    assert await _mails(db, tenant.admin_email) == []
    await _set_month_usage(redis, tenant.tenant_id, "live:requests", requests * 8 // 10)
    for _ in range(2):
        await meter_all(db, redis, now=datetime.now(UTC))
    mails = await _mails(db, tenant.admin_email)
    assert len(mails) == 1
    assert "80%" in mails[0]
    assert "recommendation requests" in mails[0]
    await _set_month_usage(redis, tenant.tenant_id, "live:requests", requests + 5)
    await asyncio.gather(*(meter_all(db, redis, now=datetime.now(UTC)) for _ in range(3)))
    mails = await _mails(db, tenant.admin_email)
    assert len(mails) == 2
    assert "100%" in mails[1]
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert [(a["metric"], a["threshold"]) for a in usage["alerts"]] == [
        ("recommendationRequests", 80),
        ("recommendationRequests", 100),
    ]
    # Reads keep working past the requests allowance, even on Sandbox.
    answer = await http.get(
        "/api/v1/recommendations", params={"userId": "x"}, headers=tenant.read_headers
    )
    assert answer.status_code == 200


async def test_a_paid_plan_past_its_allowance_shows_its_overage(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    operator: TenantContext,
    redis: Redis,
) -> None:
    moved = await http.put(
        f"/api/v1/ops/tenants/{tenant.tenant_id}/plan",
        json={"plan": "growth"},
        headers=operator.admin_headers,
    )
    assert moved.status_code == 200
    growth = PLANS[PlanName.GROWTH]
    assert growth.requests_included is not None
    await _set_month_usage(
        redis, tenant.tenant_id, "live:requests", growth.requests_included + 2_500_000
    )
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["plan"] == "growth"
    assert usage["overage"] == {"events": 0, "recommendationRequests": 2_500_000, "amountUsd": 75}
    assert usage["shareUsed"]["recommendationRequests"] == pytest.approx(1.5)
    assert usage["writesRefused"] is False


async def test_only_an_operator_changes_a_plan_and_the_admin_sees_it(
    http: httpx.AsyncClient, tenant: TenantContext, operator: TenantContext
) -> None:
    url = f"/api/v1/ops/tenants/{tenant.tenant_id}/plan"
    refused = await http.put(url, json={"plan": "scale"}, headers=tenant.admin_headers)
    assert refused.status_code == 403
    unknown = await http.put(url, json={"plan": "platinum"}, headers=operator.admin_headers)
    assert unknown.status_code == 422
    missing = await http.put(
        "/api/v1/ops/tenants/00000000-0000-0000-0000-000000000000/plan",
        json={"plan": "scale"},
        headers=operator.admin_headers,
    )
    assert missing.status_code == 404
    moved = await http.put(url, json={"plan": "scale"}, headers=operator.admin_headers)
    assert moved.json() == {"tenantId": tenant.tenant_id, "plan": "scale"}
    seen = await http.get(f"/api/v1/tenants/{tenant.tenant_id}", headers=tenant.admin_headers)
    assert seen.json()["plan"] == "scale"
    # An admin cannot set it through the tenant's own update either.
    patched = await http.patch(
        f"/api/v1/tenants/{tenant.tenant_id}",
        json={"plan": "enterprise"},
        headers=tenant.admin_headers,
    )
    assert patched.status_code == 422


async def test_an_admin_holds_as_many_tenants_as_their_plans_allow(
    http: httpx.AsyncClient, tenant: TenantContext, operator: TenantContext
) -> None:
    refused = await http.post(
        "/api/v1/tenants", json={"name": "Second"}, headers=tenant.admin_headers
    )
    assert refused.status_code == 403
    assert "1 tenant" in refused.json()["detail"]
    await http.put(
        f"/api/v1/ops/tenants/{tenant.tenant_id}/plan",
        json={"plan": "starter"},
        headers=operator.admin_headers,
    )
    made = await asyncio.gather(
        *(
            http.post("/api/v1/tenants", json={"name": f"Shop {i}"}, headers=tenant.admin_headers)
            for i in range(4)
        )
    )
    assert sorted(r.status_code for r in made) == [201, 201, 403, 403]
    listed = (await http.get("/api/v1/tenants", headers=tenant.admin_headers)).json()["data"]
    assert len(listed) == 3


async def test_the_plan_table_is_served_as_the_server_enforces_it(
    http: httpx.AsyncClient,
) -> None:
    plans = (await http.get("/api/v1/plans")).json()["data"]
    assert [p["name"] for p in plans] == [name.value for name in PLANS]
    starter = next(p for p in plans if p["name"] == "starter")
    assert starter["eventsIncluded"] == PLANS[PlanName.STARTER].events_included
    assert starter["maxTenants"] == 3
