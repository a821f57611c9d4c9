"""A small storefront tenant for the SDK and storefront tests: a catalog through the real api,
a published model (so answers carry `reason.because`) and a user with a history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from conftest import TenantContext, make_tenant
from redis.asyncio import Redis

from store import keys
from store.models import PublishedModel, publish_model
from store.settings import Settings

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
KNOWN_USER = "known-shopper"


def products(shop_origin: str) -> list[dict[str, Any]]:
    """Twelve products; p0 has a name that is markup."""
    items = []
    for i in range(12):
        items.append(
            {
                "productId": f"p{i}",
                "name": HOSTILE_NAME if i == 0 else f"Product {i}",
                "category": "Shoes",
                "price": 10 + i,
                "currency": "EUR",
                "url": f"{shop_origin}/product.html?id=p{i}",
                "available": True,
            }
        )
    return items


@dataclass(frozen=True)
class Shop:
    """A storefront tenant and what it was made with."""

    ctx: TenantContext
    origin: str
    product_ids: list[str]


async def make_shop(
    db: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    api_url: str,
    *,
    origin: str,
    config: dict[str, Any] | None = None,
) -> Shop:
    """A tenant allowing `origin`, its catalog, a published model and a known user's history."""
    ctx = await make_tenant(db, settings, config={"allowedOrigins": [origin], **(config or {})})
    items = products(origin)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for item in items:
            response = await http.post("/api/v1/catalog", json=item, headers=ctx.write_headers)
            assert response.status_code in (200, 201), response.text
    ids = [item["productId"] for item in items]
    ready = {"ready": True, "counts": {}, "thresholds": {}}
    await publish_model(
        redis,
        tenant_id=ctx.tenant_id,
        model=PublishedModel(
            version="v1",
            lists={
                "cf": {KNOWN_USER: [[pid, 1.0 - i / 100, ["p11"]] for i, pid in enumerate(ids)]},
                "trending": [[pid, 100.0 - i, []] for i, pid in enumerate(ids)],
            },
            product_interactions={pid: 10 for pid in ids},
            meta={"readiness": {"collaborative": ready, "trending": ready}},
        ),
    )
    # Five events make the known user warm enough for collaborative answers.
    history = keys.user_history(ctx.tenant_id, KNOWN_USER)
    await redis.zadd(history, {f"product_viewed|p{20 + i}": 1_700_000_000 + i for i in range(6)})
    return Shop(ctx=ctx, origin=origin, product_ids=ids)
