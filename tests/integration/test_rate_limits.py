"""Rate limits per API key in Redis: sliding window, atomic, per-tenant overrides, Redis down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_tenant
from redis.asyncio import Redis

from api.security import ApiKeyAuthenticator
from cli.localservices import free_port
from domain.errors import RateLimited, Unavailable
from store import keys
from store.ratelimit import RateLimiter, Window
from store.settings import Settings


def _authenticator(db: asyncpg.Pool, redis: Redis, settings: Settings) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(settings=settings, pool=db, limiter=RateLimiter(redis))


async def _key_id(db: asyncpg.Pool, tenant_id: str, permission: str) -> str:
    value = await db.fetchval(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND permission = $2",
        uuid.UUID(tenant_id),
        permission,
    )
    return str(value)


async def test_the_1001st_read_within_a_minute_is_refused_with_retry_after(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated)
    authenticator = _authenticator(db, redis, migrated)
    assert migrated.read_limit_per_minute == 1000
    remaining = []
    for _ in range(1000):
        headers = (await authenticator.authenticate(shop.read_key, write=False))[1].headers
        remaining.append(int(headers["RateLimit-Remaining"]))
    assert remaining[0] == 999 and remaining[-1] == 0
    assert remaining == sorted(remaining, reverse=True)
    with pytest.raises(RateLimited) as refused:
        await authenticator.authenticate(shop.read_key, write=False)
    assert refused.value.limit == 1000
    assert 1 <= refused.value.retry_after <= 60
    # Writes are counted apart from reads.
    headers = (await authenticator.authenticate(shop.write_key, write=True))[1].headers
    assert headers["RateLimit-Limit"] == "500"


async def test_the_501st_write_within_a_minute_is_refused(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated)
    authenticator = _authenticator(db, redis, migrated)
    for _ in range(500):
        await authenticator.authenticate(shop.write_key, write=True)
    with pytest.raises(RateLimited) as refused:
        await authenticator.authenticate(shop.write_key, write=True)
    assert refused.value.limit == 500
    # The same key may still read: its reads have their own budget.
    headers = (await authenticator.authenticate(shop.write_key, write=False))[1].headers
    assert headers["RateLimit-Remaining"] == "999"


async def test_a_tenant_override_sets_the_limits_of_its_keys(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(
        db, migrated, config={"rateLimits": {"readsPerMinute": 5, "writesPerMinute": 3}}
    )
    authenticator = _authenticator(db, redis, migrated)
    for _ in range(5):
        await authenticator.authenticate(shop.read_key, write=False)
    with pytest.raises(RateLimited):
        await authenticator.authenticate(shop.read_key, write=False)
    for _ in range(3):
        await authenticator.authenticate(shop.write_key, write=True)
    with pytest.raises(RateLimited) as refused:
        await authenticator.authenticate(shop.write_key, write=True)
    assert refused.value.limit == 3


async def test_limits_count_per_key_and_across_api_workers(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated, config={"rateLimits": {"readsPerMinute": 5}})
    first, second = _authenticator(db, redis, migrated), _authenticator(db, redis, migrated)
    for _ in range(3):
        await first.authenticate(shop.read_key, write=False)
    for _ in range(2):
        await second.authenticate(shop.read_key, write=False)
    with pytest.raises(RateLimited):
        await first.authenticate(shop.read_key, write=False)
    # The tenant's other key has its own window.
    headers = (await second.authenticate(shop.write_key, write=False))[1].headers
    assert headers["RateLimit-Remaining"] == "4"


async def test_concurrent_requests_never_pass_the_limit(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated, config={"rateLimits": {"readsPerMinute": 20}})
    authenticator = _authenticator(db, redis, migrated)
    await authenticator.authenticate(shop.read_key, write=False)  # warm the cache
    results = await asyncio.gather(
        *(authenticator.authenticate(shop.read_key, write=False) for _ in range(60)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(results) - len(refused) == 19 and len(refused) == 41


async def test_requests_older_than_a_minute_leave_the_window(
    db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated, config={"rateLimits": {"readsPerMinute": 3}})
    authenticator = _authenticator(db, redis, migrated)
    key_id = await _key_id(db, shop.tenant_id, "read")
    window = keys.api_key_rate_limit(shop.tenant_id, key_id, "read", 60)
    now_ms = int(time.time() * 1000)
    # Three requests 61 s ago and none since: the budget is whole again.
    await redis.zadd(window, {f"old{i}": now_ms - 61_000 for i in range(3)})
    headers = (await authenticator.authenticate(shop.read_key, write=False))[1].headers
    assert headers["RateLimit-Remaining"] == "2"
    # Two requests 30 s ago still count, and the refusal says when the older one leaves.
    await redis.zadd(window, {f"recent{i}": now_ms - 30_000 for i in range(2)})
    with pytest.raises(RateLimited) as refused:
        await authenticator.authenticate(shop.read_key, write=False)
    assert 25 <= refused.value.retry_after <= 31


async def test_with_redis_down_writes_fail_closed_and_reads_go_on_unmetered(
    db: asyncpg.Pool, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated)
    # A real client on a port where nothing listens: every call fails to connect.
    dead = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1, socket_connect_timeout=1
    )
    try:
        authenticator = _authenticator(db, dead, migrated)
        with pytest.raises(Unavailable):
            await authenticator.authenticate(shop.write_key, write=True)
        record, decision = await authenticator.authenticate(shop.read_key, write=False)
        assert record.tenant_id == shop.tenant_id and decision.headers == {}
    finally:
        await dead.aclose()


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async HTTP client for the api."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def test_over_http_the_1001st_read_is_a_429_with_retry_after_and_ratelimit_headers(
    http: httpx.AsyncClient, db: asyncpg.Pool, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated)
    first = await http.get("/api/v1/catalog", headers=shop.read_headers)
    assert first.status_code == 200, first.text
    assert first.headers["RateLimit-Limit"] == "1000"
    assert first.headers["RateLimit-Remaining"] == "999"
    assert 1 <= int(first.headers["RateLimit-Reset"]) <= 60
    for _ in range(999):
        response = await http.get("/api/v1/catalog", headers=shop.read_headers)
        assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "0"
    refused = await http.get("/api/v1/catalog", headers=shop.read_headers)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Limit"] == "1000"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.json()["status"] == 429


async def test_over_http_the_write_limit_of_a_tenant_override_answers_429(
    http: httpx.AsyncClient, db: asyncpg.Pool, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated, config={"rateLimits": {"writesPerMinute": 3}})
    event = {"eventType": "product_viewed", "userId": "u1", "productId": "p1"}
    statuses = []
    for i in range(4):
        response = await http.post(
            "/api/v1/events", json={**event, "eventId": f"e{i}"}, headers=shop.write_headers
        )
        statuses.append(response.status_code)
    assert all(s in (200, 202) for s in statuses[:3]), statuses
    assert statuses[3] == 429
    assert response.headers["RateLimit-Limit"] == "3" and "Retry-After" in response.headers
    # Reads of the same key are still within their own budget.
    assert (await http.get("/api/v1/catalog", headers=shop.write_headers)).status_code == 200


async def test_the_limiter_loads_its_script_again_after_redis_forgot_it(redis: Redis) -> None:
    limiter = RateLimiter(redis)
    window = f"reco:test:script-flush:{uuid.uuid4().hex}"
    assert (await limiter.hit(Window(key=window, limit=5))).allowed
    await redis.script_flush()
    decision = await limiter.hit(Window(key=window, limit=5))
    assert decision.allowed and decision.count == 2


def _count_script_calls(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the scripts this client runs (other processes may share the server)."""
    calls: list[str] = []
    execute = redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        if args[0] in ("EVALSHA", "EVAL"):
            calls.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(redis, "execute_command", counted)
    return calls


async def test_concurrent_hits_of_one_key_share_a_redis_call_and_are_allowed_in_order(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(redis)
    window = f"reco:test:shared:{uuid.uuid4().hex}"
    assert (await limiter.hit(Window(key=window, limit=8))).count == 1  # loads the script
    calls = _count_script_calls(redis, monkeypatch)

    decisions = await asyncio.gather(*(limiter.hit(Window(key=window, limit=8)) for _ in range(10)))

    assert calls == ["EVALSHA"]
    assert [d.allowed for d in decisions] == [True] * 7 + [False] * 3
    assert [d.remaining for d in decisions] == [6, 5, 4, 3, 2, 1, 0, 0, 0, 0]
    assert await redis.zcard(window) == 8
    # The window goes on counting from where the shared call left it.
    assert not (await limiter.hit(Window(key=window, limit=8))).allowed
    assert (await limiter.hit(Window(key=window, limit=9))).count == 9


async def test_hits_of_two_keys_in_the_same_turn_are_counted_apart(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(redis)
    first, second = (f"reco:test:apart:{uuid.uuid4().hex}" for _ in range(2))
    await limiter.hit(Window(key=first, limit=3))  # loads the script
    calls = _count_script_calls(redis, monkeypatch)

    decisions = await asyncio.gather(
        *(limiter.hit(Window(key=key, limit=3)) for key in (first, second, first, second, first))
    )

    assert len(calls) == 2
    assert [(d.allowed, d.count) for d in decisions] == [
        (True, 2),
        (True, 1),
        (True, 3),
        (True, 2),
        (False, 3),
    ]
