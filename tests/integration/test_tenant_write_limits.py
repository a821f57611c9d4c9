"""Per-tenant write limits: all the keys of a tenant share its plan's budget, counted in the
same Redis call as each key's own window, with the same RateLimit-* headers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from store.api_keys import issue_api_key
from store.ratelimit import RateLimiter, Window
from store.settings import Settings


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as client:
        yield client


async def _keys(
    db: asyncpg.Pool, settings: Settings, tenant_id: str, count: int, environment: str = "live"
) -> list[str]:
    made = []
    for index in range(count):
        _, raw = await issue_api_key(
            db,
            tenant_id=tenant_id,
            name=f"backend {index}",
            permission="read_write",
            environment=environment,
            secret=settings.api_key_secret,
        )
        made.append(raw)
    return made


async def test_two_windows_sharing_a_budget_are_allowed_only_while_both_have_room(
    redis: Redis,
) -> None:
    limiter = RateLimiter(redis)
    shared = f"reco:{uuid.uuid4()}:ratelimit:tenant:live:write:60"
    first = Window(key=f"reco:{uuid.uuid4()}:k1", limit=3, shared_key=shared, shared_limit=4)
    second = Window(key=f"reco:{uuid.uuid4()}:k2", limit=3, shared_key=shared, shared_limit=4)
    decisions = [await limiter.hit(w) for w in (first, first, second, second, second, first)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False, False]
    # The refused ones name the shared budget in their headers.
    assert decisions[4].headers["RateLimit-Limit"] == "4"
    assert decisions[4].headers["RateLimit-Remaining"] == "0"
    assert "Retry-After" in decisions[4].headers
    # While allowed, the headers show the window with less room left.
    assert decisions[3].headers["RateLimit-Limit"] == "4"
    assert decisions[3].headers["RateLimit-Remaining"] == "0"
    assert decisions[0].headers["RateLimit-Remaining"] == "2"
    assert await redis.zcard(shared) == 4


async def test_a_tenants_extra_keys_are_refused_past_the_tenant_budget(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
    migrated: Settings,
) -> None:
    budget = migrated.tenant_write_limit("sandbox")
    assert budget > 0
    # Each key's own limit is far from reached: 5 keys of 300 could write 1,500 a minute.
    await db.execute(
        "UPDATE tenants SET config = $2 WHERE id = $1",
        tenant.tenant_id,
        {"rateLimits": {"writesPerMinute": 300}},
    )
    raw_keys = await _keys(db, migrated, tenant.tenant_id, 5)
    per_key = (budget + 100) // len(raw_keys)
    semaphore = asyncio.Semaphore(40)

    async def write(key: str) -> httpx.Response:
        # A body the route refuses costs nothing to check; the request is counted first.
        async with semaphore:
            return await http.post(
                "/api/v1/events/batch", json={"events": []}, headers={"X-API-Key": key}
            )

    answers = await asyncio.gather(*(write(k) for k in raw_keys for _ in range(per_key)))
    statuses = Counter(a.status_code for a in answers)
    assert statuses[429] == per_key * len(raw_keys) - budget, statuses
    assert statuses[422] == budget
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["RateLimit-Limit"] == str(budget)
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "shared by all of its keys" in refused.json()["detail"]
    # Another tenant's writes and this tenant's reads and test keys have budgets of their own.
    other = await http.post(
        "/api/v1/events/batch", json={"events": []}, headers=other_tenant.write_headers
    )
    assert other.status_code == 422
    read = await http.get("/api/v1/catalog", headers=tenant.read_headers)
    assert read.status_code == 200
    (test_key,) = await _keys(db, migrated, tenant.tenant_id, 1, environment="test")
    tested = await http.post(
        "/api/v1/events/batch", json={"events": []}, headers={"X-API-Key": test_key}
    )
    assert tested.status_code == 422
