"""Batch upload through the real worker: per-item results, good items land, bad ones do not."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
from conftest import Process, TenantContext
from redis.asyncio import Redis

from store import keys


def item(product_id: str, **changes: Any) -> dict[str, Any]:
    """A valid batch item."""
    return {"productId": product_id, "name": f"Product {product_id}", "price": 5, **changes}


def send_batch(client: httpx.Client, tenant: TenantContext, items: list[Any]) -> httpx.Response:
    """POST /catalog/batch with the tenant's read_write key."""
    return client.post("/api/v1/catalog/batch", json={"items": items}, headers=tenant.write_headers)


def fetch(client: httpx.Client, tenant: TenantContext, product_id: str) -> dict[str, Any]:
    """GET /catalog/{productId} with the tenant's read key."""
    response = client.get(f"/api/v1/catalog/{product_id}", headers=tenant.read_headers)
    assert response.status_code == 200
    return dict(response.json())


async def stored_ids(db: asyncpg.Pool, tenant: TenantContext, *, expect: int) -> set[str]:
    """The tenant's product ids once at least `expect` have landed (or what is there after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        rows = await db.fetch(
            "SELECT product_id FROM catalog_items WHERE tenant_id = $1",
            uuid.UUID(tenant.tenant_id),
        )
        if len(rows) >= expect or time.monotonic() > deadline:
            return {row["product_id"] for row in rows}
        await asyncio.sleep(0.1)


async def test_a_batch_with_bad_items_lands_the_good_ones_and_reports_each_item(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    worker_process: Process,
) -> None:
    items = [
        item("good-1"),
        item("bad-price", price=-3),
        item("good-2", available=False, attributes={"size": "L"}),
        item("bad-url", url="javascript:alert(1)"),
        "not an object",
        item("good-1", name="duplicate"),
        item("good-3", currency="SEK"),
    ]
    response = send_batch(client, tenant, items)
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 4)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [
        (0, "accepted"),
        (1, "rejected"),
        (2, "accepted"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "rejected"),
        (6, "accepted"),
    ]
    errors = {
        r["index"]: {e["field"] for e in r["errors"]} for r in body["results"] if "errors" in r
    }
    assert errors[1] == {"price"} and errors[3] == {"url"} and errors[5] == {"productId"}
    assert "errors" not in body["results"][0]

    assert await stored_ids(db, tenant, expect=3) == {"good-1", "good-2", "good-3"}
    await asyncio.sleep(0.3)  # nothing else may land after the good ones
    assert await stored_ids(db, tenant, expect=0) == {"good-1", "good-2", "good-3"}
    assert fetch(client, tenant, "good-1")["name"] == "Product good-1"
    assert fetch(client, tenant, "good-3")["currency"] == "SEK"
    available = await redis.smembers(keys.catalog_available(tenant.tenant_id))
    assert available == {b"good-1", b"good-3"}
    assert await redis.hlen(keys.catalog_cards(tenant.tenant_id)) == 3


async def test_a_batch_updates_existing_products_and_their_projections(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    worker_process: Process,
) -> None:
    send_batch(client, tenant, [item("old", price=1)])
    await stored_ids(db, tenant, expect=1)
    assert await redis.sismember(keys.catalog_available(tenant.tenant_id), "old")
    response = send_batch(client, tenant, [item("old", price=2, available=False)])
    assert response.json()["accepted"] == 1
    deadline = time.monotonic() + 10
    while await redis.sismember(keys.catalog_available(tenant.tenant_id), "old"):
        assert time.monotonic() < deadline, "the batch was not applied"
        await asyncio.sleep(0.1)
    price = await db.fetchval(
        "SELECT price FROM catalog_items WHERE tenant_id = $1 AND product_id = 'old'",
        uuid.UUID(tenant.tenant_id),
    )
    assert price == 2


def test_a_batch_of_only_bad_items_queues_nothing_and_says_why(
    client: httpx.Client, tenant: TenantContext
) -> None:
    response = send_batch(client, tenant, [{"name": "no id", "price": 1}])
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 1)
    assert body["results"][0]["errors"] == [{"field": "productId", "message": "is required"}]


def test_a_batch_over_1000_items_or_empty_or_without_items_is_a_422(
    client: httpx.Client, tenant: TenantContext
) -> None:
    too_many = [item(f"p{n}") for n in range(1001)]
    assert send_batch(client, tenant, too_many).status_code == 422
    assert send_batch(client, tenant, []).status_code == 422
    wrong = client.post(
        "/api/v1/catalog/batch", json={"products": []}, headers=tenant.write_headers
    )
    assert wrong.status_code == 422
