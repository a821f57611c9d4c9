"""The tenant detail in headless Chromium: the plan, the month's metered usage against its
allowances, the 80% banner above every tenant page, and the usage CSV."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx
from dashboard_browser import (
    browser,
    context,
    page,
    screenshot,
    serious_violations,
    shop_dir,
    sign_in,
    web_url,
)
from playwright.async_api import Page, expect
from redis.asyncio import Redis

from conftest import TenantContext
from domain.plans import PLANS, PlanName
from store import keys
from store.usage import meter_all, month_of

__all__ = ["browser", "context", "page", "shop_dir", "web_url"]  # fixtures used by name


async def test_the_tenant_detail_shows_usage_against_the_plan_and_the_80_percent_banner(
    page: Page, web_url: str, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http:
        for user in ("a", "b", "c"):
            answer = await http.get(
                "/api/v1/recommendations", params={"userId": user}, headers=tenant.read_headers
            )
            assert answer.status_code == 200
    # A month of events (85% of Sandbox's allowance) stands on the meter.
    events = PLANS[PlanName.SANDBOX].events_included
    assert events is not None
    now = datetime.now(UTC)
    await redis.hset(
        keys.usage_meter(tenant.tenant_id, month_of(now)),
        mapping={
            "live:events": events * 85 // 100,
            f"live:events:{now.day:02d}": events * 85 // 100,
        },
    )
    await meter_all(db, redis, now=now)

    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}")
    usage = page.get_by_test_id("usage")
    await expect(usage).to_contain_text("Sandbox")
    await expect(usage).to_contain_text("85,000 of 100,000 (85.0%)")
    await expect(usage).to_contain_text("3 of 50,000")
    await expect(page.get_by_test_id("overage")).to_contain_text("none")
    banner = page.get_by_test_id("usage-banner")
    await expect(banner).to_have_count(1)
    await expect(banner).to_contain_text("80% of the 100,000 events included in the Sandbox plan")
    # The banner stands above every tenant page.
    await page.get_by_role("link", name="Analytics").click()
    await expect(page.get_by_test_id("usage-banner")).to_contain_text("80%")
    await page.go_back()
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Export CSV").click()
    saved = await (await download.value).path()
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("day,events,recommendation_requests")
    assert lines[-1] == f"total,{events * 85 // 100},3,0,0"
    await screenshot(page, "tenant-usage")
    assert await serious_violations(page) == []
