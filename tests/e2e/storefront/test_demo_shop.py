"""The demo shop that `recomengine demo` writes for `make up`, in headless Chromium: the home
carousel, a product page with frequently-bought-together and similar items, and a cart whose
checkout posts purchases through the SDK."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Page
from redis.asyncio import Redis
from storefront_support import Shop, make_shop

from cli.shop import render_shop, write_shop
from store.settings import Settings

pytestmark = pytest.mark.usefixtures("worker_process")


@pytest.fixture
async def shop(
    db: asyncpg.Pool, redis: Redis, migrated: Settings, api_url: str, static_site: Any
) -> Shop:
    return await make_shop(db, redis, migrated, api_url, origin=static_site.origin)


async def ready(page: Page, placement: str) -> None:
    await page.wait_for_selector(
        f'[data-recomengine-placement="{placement}"][data-recomengine-state="ready"]',
        state="attached",
    )


async def count(db: asyncpg.Pool, tenant_id: str, event_type: str, at_least: int) -> int:
    deadline = time.monotonic() + 20
    query = "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = $2"
    found = int(await db.fetchval(query, tenant_id, event_type))
    while found < at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = int(await db.fetchval(query, tenant_id, event_type))
    return found


def test_every_shop_page_loads_the_sdk_from_the_api_with_one_script_tag() -> None:
    pages = render_shop(api_base="http://api.example:5008", read_key="rk_test_r", write_key="w")
    assert set(pages) == {"index.html", "product.html", "cart.html"}
    for text in pages.values():
        assert text.count('src="http://api.example:5008/v1/recomengine.js"') == 1


async def test_the_demo_shop_shows_recommendations_and_posts_a_purchase(
    watched: Any, shop: Shop, db: asyncpg.Pool, api_url: str, static_site: Any
) -> None:
    write_shop(
        api_base=api_url,
        read_key=shop.ctx.read_key,
        write_key=shop.ctx.write_key,
        folder=static_site.root / "shop",
    )
    page = watched.page
    await page.goto(f"{static_site.origin}/shop/index.html")
    await ready(page, "home")
    await ready(page, "home-trending")
    await page.goto(f"{static_site.origin}/shop/product.html?id=p3")
    await ready(page, "product-fbt")
    await ready(page, "product-similar")
    await page.wait_for_function(
        "() => document.getElementById('name').textContent === 'Product 3'"
    )
    ids = page.locator('[data-recomengine-placement="product-fbt"] [data-recomengine-item]')
    assert "p3" not in await ids.evaluate_all("els => els.map(e => e.dataset.recomengineItem)")
    assert await count(db, shop.ctx.tenant_id, "product_viewed", 1) == 1
    await page.click("#add")
    await page.goto(f"{static_site.origin}/shop/cart.html")
    await ready(page, "cart")
    await page.click("#checkout")
    assert await count(db, shop.ctx.tenant_id, "purchase", 1) == 1
    price = await db.fetchval(
        "SELECT price FROM events WHERE tenant_id = $1 AND event_type = 'purchase'",
        shop.ctx.tenant_id,
    )
    assert float(price) == 13.0
    assert watched.errors == []


async def test_the_demo_tenant_allows_the_shops_origin_once(
    shop: Shop, api_url: str, db: asyncpg.Pool
) -> None:
    from conftest import TEST_PASSWORD

    from cli.commands.models import _open_to_shop
    from cli.shop import SHOP_ORIGINS

    state = {
        "adminEmail": shop.ctx.admin_email,
        "adminPassword": TEST_PASSWORD,
        "tenantId": shop.ctx.tenant_id,
    }
    for _ in range(2):
        await _open_to_shop(state, api_url)
    config = await db.fetchval("SELECT config FROM tenants WHERE id = $1", shop.ctx.tenant_id)
    origins = (config if isinstance(config, dict) else json.loads(config))["allowedOrigins"]
    assert origins == [shop.origin, *SHOP_ORIGINS]
