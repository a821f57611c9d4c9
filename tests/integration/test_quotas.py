"""Each plan past its events allowance, over the real api and worker: Sandbox and Starter event
writes get 429 quota_exceeded while reads keep working; Growth and Scale keep accepting and
accrue overage; test keys are held to Sandbox limits whatever the plan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext
from redis.asyncio import Redis

from domain.plans import PLANS, PlanName
from store import keys
from store.api_keys import issue_api_key
from store.settings import Settings
from store.usage import month_of


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def _on_plan(db: asyncpg.Pool, redis: Redis, tenant: TenantContext, plan: str) -> None:
    await db.execute("UPDATE tenants SET plan = $2 WHERE id = $1", tenant.tenant_id, plan)
    await redis.incr(keys.auth_epoch(tenant.tenant_id))  # as the operators' route does


async def _used(redis: Redis, tenant_id: str, used: int, environment: str = "live") -> None:
    """Stand for a month of stored events on the meter (millions: too many to post)."""
    now = datetime.now(UTC)
    field = f"{environment}:events"
    await redis.hset(
        keys.usage_meter(tenant_id, month_of(now)),
        mapping={field: used, f"{field}:{now.day:02d}": used},
    )


def _event(user: str = "q1") -> dict:
    return {
        "eventType": "product_viewed",
        "userId": user,
        "productId": "p1",
        "timestamp": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
    }


async def _write(http: httpx.AsyncClient, key: str, user: str = "q1") -> httpx.Response:
    return await http.post("/api/v1/events", json=_event(user), headers={"X-API-Key": key})


def _quota_problem(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "quota_exceeded"
    assert body["type"].endswith("/quota-exceeded")
    assert "recommendations keep working" in body["detail"]
    next_month = (datetime.now(UTC).replace(day=28) + timedelta(days=4)).replace(day=1)
    assert (
        0
        < int(response.headers["Retry-After"])
        <= (next_month - datetime.now(UTC)).total_seconds() + 1
    )


@pytest.mark.parametrize("plan", ["sandbox", "starter"])
async def test_past_the_allowance_a_plan_without_overage_refuses_event_writes_not_reads(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    plan: str,
) -> None:
    await _on_plan(db, redis, tenant, plan)
    included = PLANS[PlanName(plan)].events_included
    assert included is not None
    await _used(redis, tenant.tenant_id, included - 1)
    assert (await _write(http, tenant.write_key, "below")).status_code == 202
    await _used(redis, tenant.tenant_id, included)
    _quota_problem(await _write(http, tenant.write_key, "past"))
    batch = await http.post(
        "/api/v1/events/batch",
        json={"events": [_event("past-batch")]},
        headers=tenant.write_headers,
    )
    _quota_problem(batch)
    storefront = await http.post(
        "/api/v1/storefront/events",
        json={"events": [{**_event("past-sdk"), "eventType": "product_clicked"}]},
        headers=tenant.read_headers,
    )
    _quota_problem(storefront)
    # Reads and the catalog keep working; nothing past the quota was queued.
    read = await http.get(
        "/api/v1/recommendations", params={"userId": "past"}, headers=tenant.read_headers
    )
    assert read.status_code == 200
    item = {"productId": "p9", "name": "Nine", "category": "x", "price": 1, "available": True}
    catalog = await http.post("/api/v1/catalog", json=item, headers=tenant.write_headers)
    assert catalog.status_code in (200, 201)
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["writesRefused"] is True
    assert usage["overage"]["events"] == 0


@pytest.mark.parametrize("plan", ["growth", "scale"])
async def test_past_the_allowance_a_paid_plan_keeps_accepting_and_accrues_overage(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    worker_process: Process,
    plan: str,
) -> None:
    await _on_plan(db, redis, tenant, plan)
    chosen = PLANS[PlanName(plan)]
    assert chosen.events_included is not None and chosen.overage_per_million_events_usd
    await _used(redis, tenant.tenant_id, chosen.events_included + 999_999)
    accepted = await _write(http, tenant.write_key, "over")
    assert accepted.status_code == 202, accepted.text

    async def stored() -> bool:
        return bool(
            await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.tenant_id)
        )

    deadline = time.monotonic() + 20
    while not await stored() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await stored()
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["overage"]["events"] == 1_000_000
    assert usage["overage"]["amountUsd"] == chosen.overage_per_million_events_usd
    assert usage["writesRefused"] is False


async def test_test_keys_are_held_to_sandbox_limits_on_a_paid_plan(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
) -> None:
    await _on_plan(db, redis, tenant, "growth")
    _, test_key = await issue_api_key(
        db,
        tenant_id=tenant.tenant_id,
        name="sandbox backend",
        permission="read_write",
        environment="test",
        secret=migrated.api_key_secret,
    )
    sandbox = PLANS[PlanName.SANDBOX].events_included
    assert sandbox is not None
    await _used(redis, tenant.tenant_id, sandbox, environment="test")
    _quota_problem(await _write(http, test_key, "sandboxed"))
    assert (await _write(http, tenant.write_key, "live")).status_code == 202
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["test"]["writesRefused"] is True
    assert usage["writesRefused"] is False
