"""Projections the read path needs: cards, availability, answer staleness, rebuilds, content."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from conftest import Process, TenantContext
from redis.asyncio import Redis

from store import catalog as catalog_store
from store import keys


def product(product_id: str, **changes: Any) -> dict[str, Any]:
    """A valid product body."""
    return {"productId": product_id, "name": f"Product {product_id}", "price": 10, **changes}


def save(client: httpx.Client, tenant: TenantContext, body: dict[str, Any]) -> httpx.Response:
    """POST /catalog with the tenant's read_write key."""
    return client.post("/api/v1/catalog", json=body, headers=tenant.write_headers)


def remove(client: httpx.Client, tenant: TenantContext, product_id: str) -> httpx.Response:
    """DELETE /catalog/{productId} with the tenant's read_write key."""
    return client.delete(f"/api/v1/catalog/{product_id}", headers=tenant.write_headers)


def replace(client: httpx.Client, tenant: TenantContext, body: dict[str, Any]) -> httpx.Response:
    """PUT /catalog/{productId} with the tenant's read_write key."""
    return client.put(
        f"/api/v1/catalog/{body['productId']}", json=body, headers=tenant.write_headers
    )


def browse(client: httpx.Client, tenant: TenantContext, **params: Any) -> httpx.Response:
    """GET the admin catalog browser of the tenant as its admin."""
    return client.get(
        f"/api/v1/tenants/{tenant.tenant_id}/catalog", params=params, headers=tenant.admin_headers
    )


async def stamp_of(redis: Redis, tenant: TenantContext) -> int:
    """The tenant's serving stamp: every cached answer made before a bump is stale."""
    return int(await redis.get(keys.serving_stamp(tenant.tenant_id)) or 0)


async def test_a_product_made_unavailable_leaves_the_available_set_and_stales_cached_answers(
    client: httpx.Client, tenant: TenantContext, redis: Redis
) -> None:
    for product_id in ("p1", "p2", "p3"):
        save(client, tenant, product(product_id))
    before = await stamp_of(redis, tenant)
    response = save(client, tenant, product("p2", available=False))
    assert response.status_code == 200
    assert not await redis.sismember(keys.catalog_available(tenant.tenant_id), "p2")
    assert await stamp_of(redis, tenant) > before
    card = json.loads(await redis.hget(keys.catalog_cards(tenant.tenant_id), "p2") or b"{}")
    assert card["available"] is False


async def test_a_put_a_price_change_and_a_delete_each_stale_the_cached_answers(
    client: httpx.Client, tenant: TenantContext, redis: Redis
) -> None:
    save(client, tenant, product("q1"))
    save(client, tenant, product("q2"))
    stamps = [await stamp_of(redis, tenant)]
    assert replace(client, tenant, product("q1", available=False)).status_code == 200
    stamps.append(await stamp_of(redis, tenant))
    assert save(client, tenant, product("q2", price=11)).status_code == 200
    stamps.append(await stamp_of(redis, tenant))
    assert remove(client, tenant, "q2").status_code == 204
    stamps.append(await stamp_of(redis, tenant))
    assert stamps == sorted(set(stamps))  # strictly increasing
    assert not await redis.hexists(keys.catalog_cards(tenant.tenant_id), "q2")
    assert not await redis.sismember(keys.catalog_available(tenant.tenant_id), "q2")


async def test_a_catalog_change_stales_only_its_own_tenants_answers(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext, redis: Redis
) -> None:
    save(client, tenant, product("same"))
    save(client, other_tenant, product("same"))
    theirs = await stamp_of(redis, other_tenant)
    assert remove(client, tenant, "same").status_code == 204
    assert await stamp_of(redis, other_tenant) == theirs
    assert await redis.sismember(keys.catalog_available(other_tenant.tenant_id), "same")


async def test_rebuilding_projections_restores_them_from_postgresql(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    save(client, tenant, product("r1"))
    save(client, tenant, product("r2", available=False))
    await redis.delete(keys.catalog_cards(tenant.tenant_id))
    await redis.sadd(keys.catalog_available(tenant.tenant_id), "stale-id")
    count = await catalog_store.rebuild_projections(db, redis, tenant_id=tenant.tenant_id)
    assert count == 2
    assert await redis.smembers(keys.catalog_available(tenant.tenant_id)) == {b"r1"}
    assert set(await redis.hkeys(keys.catalog_cards(tenant.tenant_id))) == {b"r1", b"r2"}


async def test_catalog_changes_queue_one_content_model_refresh_per_window(
    client: httpx.Client, tenant: TenantContext, redis: Redis, worker_process: Process
) -> None:
    pending = keys.content_refresh_pending(tenant.tenant_id)
    dirty = keys.content_model_dirty(tenant.tenant_id)
    save(client, tenant, product("c1"))
    first_claim = await redis.get(pending)
    save(client, tenant, product("c2"))
    assert first_claim is not None
    assert await redis.get(pending) == first_claim, "a second refresh was queued in the window"
    deadline = time.monotonic() + 15
    while await redis.get(dirty) is None:
        assert time.monotonic() < deadline, "the refresh actor did not run"
        await asyncio.sleep(0.2)
    marked = float(await redis.get(dirty) or 0)
    assert marked >= float(first_claim)


async def test_admin_browser_lists_the_tenants_products_with_30_day_interaction_counts(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    save(client, tenant, product("seen", category="toys"))
    save(client, tenant, product("quiet", category="toys"))
    save(client, tenant, product("other", category="books"))
    tenant_uuid = uuid.UUID(tenant.tenant_id)
    events = [
        ("product_viewed", "u1", "seen", timedelta(hours=1)),
        ("product_viewed", "u2", "seen", timedelta(hours=2)),
        ("product_clicked", "u1", "seen", timedelta(hours=1)),
        ("recommendation_clicked", "u3", "seen", timedelta(hours=3)),
        ("purchase", "u1", "seen", timedelta(hours=1)),
        ("product_viewed", "u4", "seen", timedelta(days=40)),  # too old to count
    ]
    for n, (event_type, user_id, product_id, age) in enumerate(events):
        await db.execute(
            "INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, "
            "occurred_at) VALUES ($1, $2, $3, $4, $5, now() - $6::interval)",
            tenant_uuid,
            f"e{n}",
            event_type,
            user_id,
            product_id,
            age,
        )
    response = browse(client, tenant, category="toys")
    assert response.status_code == 200
    body = response.json()
    assert [p["productId"] for p in body["data"]] == ["quiet", "seen"]
    counts = {p["productId"]: p["interactions"] for p in body["data"]}
    assert counts["seen"] == {"views": 2, "clicks": 2, "purchases": 1}
    assert counts["quiet"] == {"views": 0, "clicks": 0, "purchases": 0}
    assert body["nextCursor"] is None


def test_admin_browser_pages_and_searches_like_the_api(
    client: httpx.Client, tenant: TenantContext
) -> None:
    for n in range(5):
        save(client, tenant, product(f"b{n}", description="wooden toy" if n % 2 else "metal"))
    url = f"/api/v1/tenants/{tenant.tenant_id}/catalog"
    first = client.get(url, params={"limit": 2}, headers=tenant.admin_headers).json()
    second = client.get(
        url, params={"limit": 2, "cursor": first["nextCursor"]}, headers=tenant.admin_headers
    ).json()
    assert [p["productId"] for p in first["data"] + second["data"]] == ["b0", "b1", "b2", "b3"]
    found = client.get(url, params={"q": "wooden"}, headers=tenant.admin_headers).json()
    assert [p["productId"] for p in found["data"]] == ["b1", "b3"]


def test_admin_browser_of_another_admins_tenant_is_a_404(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    save(client, other_tenant, product("secret"))
    url = f"/api/v1/tenants/{other_tenant.tenant_id}/catalog"
    response = client.get(url, headers=tenant.admin_headers)
    assert response.status_code == 404
    assert "secret" not in response.text
    missing = client.get(f"/api/v1/tenants/{uuid.uuid4()}/catalog", headers=tenant.admin_headers)
    assert missing.status_code == 404
    assert client.get(url, headers=other_tenant.read_headers).status_code == 401
