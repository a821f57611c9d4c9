"""Right to erasure: DELETE /api/v1/users/{userId} leaves nothing of the shopper in PostgreSQL or
Redis, keeps the aggregates and records the erasure for audit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from conftest import Process, TenantContext
from redis.asyncio import Redis

from store import keys
from store.counters import day_of
from store.settings import Settings


def _event(user: str, kind: str, product: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "eventType": kind,
        "userId": user,
        "productId": product,
        "timestamp": at.isoformat(),
        "sessionId": f"session-of-{user}",
        **extra,
    }


async def _rows_naming(db: asyncpg.Pool, text: str) -> dict[str, int]:
    """Every table (partitions included) with rows whose text holds `text`, and how many."""
    tables = await db.fetch(
        "SELECT c.oid::regclass::text AS name FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r'"
    )
    found = {}
    for table in tables:
        count = await db.fetchval(
            f"SELECT count(*) FROM {table['name']} t WHERE strpos(t::text, $1) > 0", text
        )
        if count:
            found[table["name"]] = int(count)
    return found


async def _redis_naming(client: Redis, text: str) -> list[str]:
    """Every key whose name or content holds `text`."""
    needle = text.encode()
    found = []
    async for key in client.scan_iter(count=1000):
        raw_kind = await client.type(key)
        kind = raw_kind.decode() if isinstance(raw_kind, bytes) else raw_kind
        content: list[Any]
        if kind == "string":
            content = [await client.get(key) or b""]
        elif kind == "hash":
            content = [b for pair in (await client.hgetall(key)).items() for b in pair]
        elif kind == "set":
            content = list(await client.smembers(key))
        elif kind == "zset":
            content = await client.zrange(key, 0, -1)
        elif kind == "list":
            content = await client.lrange(key, 0, -1)
        else:  # a stream or a HyperLogLog's internals: only the name is checked
            content = []
        if needle in key or any(needle in item for item in content):
            found.append(key.decode(errors="replace"))
    return found


async def test_erasing_a_shopper_leaves_nothing_of_them_and_keeps_the_figures(
    api_url: str,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker_process: Process,
) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        await _erase_and_check(client, tenant, db, redis, migrated, worker_process)


async def _erase_and_check(
    client: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker_process: Process,
) -> None:
    t = tenant.tenant_id
    shopper, other = f"shopper-erase-{uuid.uuid4().hex}", f"shopper-keep-{uuid.uuid4().hex}"
    items = [
        {"productId": p, "name": f"Item {p}", "category": "c", "price": 10, "available": True}
        for p in ("e1", "e2", "e3")
    ]
    catalog = await client.post(
        "/api/v1/catalog/batch", json={"items": items}, headers=tenant.write_headers
    )
    assert catalog.status_code == 202, catalog.text
    now = datetime.now(UTC) - timedelta(seconds=30)
    events = [
        _event(shopper, "product_viewed", "e1", now - timedelta(minutes=5)),
        _event(shopper, "add_to_cart", "e2", now - timedelta(minutes=4)),
        _event(
            shopper,
            "recommendation_clicked",
            "e3",
            now - timedelta(minutes=3),
            metadata={"placementId": "home", "strategy": "trending"},
            eventId=f"click-{uuid.uuid4().hex}",
        ),
        _event(shopper, "purchase", "e3", now - timedelta(minutes=2), metadata={"price": 10}),
        _event(other, "purchase", "e1", now - timedelta(minutes=1), metadata={"price": 10}),
    ]
    posted = await client.post(
        "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
    )
    assert posted.status_code == 202 and posted.json()["accepted"] == 5, posted.text
    for _ in range(300):
        landed = await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", t)
        attributed = await db.fetchval(
            "SELECT count(*) FROM revenue_attributions WHERE tenant_id = $1", t
        )
        if landed == 5 and attributed == 1 and await redis.exists(keys.user_history(t, shopper)):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(worker_process.log()[-3000:])
    answered = await client.get(
        "/api/v1/recommendations", params={"userId": shopper}, headers=tenant.read_headers
    )
    assert answered.status_code == 200, answered.text
    # What a training run and an analytics refresh would have left of the shopper.
    await redis.hset(f"{keys.model_prefix(t)}v-test:cf", mapping={shopper: "[]", other: "[]"})
    await db.execute(
        "INSERT INTO analytics_users (tenant_id, user_id, idx) VALUES ($1, $2, 1000)", t, shopper
    )
    counters = keys.realtime_counters(t, day_of(datetime.now(UTC)))
    figures_before = await redis.hgetall(counters)
    assert await _rows_naming(db, shopper), "the shopper's rows should be there before"
    assert await _redis_naming(redis, shopper), "the shopper's keys should be there before"

    refused = await client.delete(f"/api/v1/users/{shopper}", headers=tenant.read_headers)
    assert refused.status_code == 403
    erased = await client.delete(f"/api/v1/users/{shopper}", headers=tenant.write_headers)
    assert erased.status_code == 202, erased.text
    assert erased.json()["removed"]["events"] == 4

    assert await _rows_naming(db, shopper) == {}
    assert await _redis_naming(redis, shopper) == []
    broker = Redis.from_url(migrated.broker_url)
    try:
        assert await _redis_naming(broker, shopper) == []
    finally:
        await broker.aclose()
    # The figures stay: today's counters, the attributed revenue, the other shopper.
    assert await redis.hgetall(counters) == figures_before
    assert (
        await db.fetchval("SELECT count(*) FROM revenue_attributions WHERE tenant_id = $1", t) == 1
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND user_id = $2", t, other
        )
        == 1
    )
    assert await redis.hexists(f"{keys.model_prefix(t)}v-test:cf", other)
    # The erasure is recorded for audit, naming the shopper only by a keyed digest.
    audit = await db.fetchrow(
        "SELECT user_digest, api_key_id, removed FROM user_erasures WHERE tenant_id = $1", t
    )
    assert audit is not None and audit["removed"]["events"] == 4
    assert shopper not in audit["user_digest"]


def test_erasing_needs_a_read_write_key_and_a_sane_user_id(
    client: httpx.Client, tenant: TenantContext
) -> None:
    assert client.delete("/api/v1/users/someone").status_code == 401
    too_long = client.delete(f"/api/v1/users/{'u' * 300}", headers=tenant.write_headers)
    assert too_long.status_code == 422
    unknown = client.delete("/api/v1/users/nobody-at-all", headers=tenant.write_headers)
    assert unknown.status_code == 202 and unknown.json()["removed"]["events"] == 0
