"""The public pages in a real browser, served by the real web process: readable without
JavaScript, a title and a description each, no broken internal link, axe-core clean, pricing
exactly the plan table the server enforces, a sitemap of every page, the live widget of the
demo tenant (and what the landing page says without one), the dashboard's routes unchanged."""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import httpx
import pytest
from conftest import TenantContext
from playwright.async_api import Browser
from site_support import (
    BASE_URL,
    public_pages,
    serious_violations,
    site_browser,
    site_dir,
    site_shop_dir,
    site_url,
)

from domain.plans import PLANS, Plan

__all__ = ["site_browser", "site_dir", "site_shop_dir", "site_url"]  # fixtures used by name


async def test_every_public_page_reads_without_javascript_with_its_title_and_description(
    site_browser: Browser, site_url: str
) -> None:
    context = await site_browser.new_context(base_url=site_url, java_script_enabled=False)
    page = await context.new_page()
    try:
        for public in public_pages():
            answer = await page.goto(public.path)
            assert answer is not None and answer.status == 200, public.path
            assert await page.title() == f"{public.title} · RecomEngine"
            description = await page.locator('meta[name="description"]').get_attribute("content")
            assert description == public.description and len(description) > 30
            assert await page.locator("main h1").count() == 1, public.path
            text = await page.locator("main").inner_text()
            assert len(text) > 400, (public.path, text[:200])
            assert await page.locator("main h1").inner_text() != ""
    finally:
        await context.close()


async def test_the_guides_render_their_rules_and_samples_as_readable_html(
    site_browser: Browser, site_url: str
) -> None:
    context = await site_browser.new_context(base_url=site_url, java_script_enabled=False)
    page = await context.new_page()
    try:
        await page.goto("/docs/events")
        rows = page.locator("main table").first.locator("tbody tr")
        assert await rows.count() == 7  # one per event type of domain/events.py
        assert await page.locator("pre code.language-sh").count() >= 4
        await page.goto("/docs/api-reference")
        operations = await page.locator("article.operation").count()
        async with httpx.AsyncClient(timeout=30) as client:
            served = (await client.get(f"{site_url}/api/v1/openapi.json")).json()
        assert operations == sum(len(methods) for methods in served["paths"].values())
        widget = page.locator("#get_api_v1_widgets_placement_id")
        assert "ETag" in await widget.inner_text()
        assert "RateLimit-Remaining" in await widget.inner_text()
    finally:
        await context.close()


async def test_no_internal_link_of_a_public_page_is_broken(
    site_browser: Browser, site_url: str
) -> None:
    context = await site_browser.new_context(base_url=site_url, java_script_enabled=False)
    page = await context.new_page()
    links: dict[str, set[str]] = {}  # target -> pages linking to it
    anchors: dict[str, set[str]] = {}  # page -> ids on it
    try:
        for public in public_pages():
            await page.goto(public.path)
            anchors[public.path] = set(
                await page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")
            )
            hrefs = await page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
            for href in hrefs:
                if urlparse(href).netloc == urlparse(site_url).netloc:
                    links.setdefault(href, set()).add(public.path)
    finally:
        await context.close()
    assert len(links) > 20
    broken: list[tuple[str, int | str, list[str]]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for href, sources in sorted(links.items()):
            target, fragment = urldefrag(href)
            answer = await client.get(target)
            if answer.status_code != 200:
                broken.append((href, answer.status_code, sorted(sources)))
            path = urlparse(target).path.rstrip("/") or "/"
            if fragment and path in anchors and fragment not in anchors[path]:
                broken.append((href, "no such anchor", sorted(sources)))
    assert broken == []


async def test_every_public_page_is_axe_clean_with_and_without_the_live_widget(
    site_browser: Browser, site_url: str
) -> None:
    context = await site_browser.new_context(
        base_url=site_url, viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()
    try:
        for public in public_pages():
            await page.goto(public.path)
            if public.path == "/":
                await page.wait_for_selector("#live-demo:not([data-state=waiting])")
            found = await serious_violations(page)
            assert found == [], (public.path, found)
        await page.set_viewport_size({"width": 375, "height": 800})
        for public in public_pages():
            await page.goto(public.path)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (public.path, width)
    finally:
        await context.close()


def _expected_row(plan: Plan) -> list[str]:
    """One plan as the pricing page must show it, written out independently of the template."""

    def amount(value: int | None) -> str:
        return "Custom" if value is None else f"{value:,}"

    def overage(price: int | None, *, refused: str) -> str:
        if price is not None:
            return f"${price} per extra million"
        return "Custom" if plan.events_included is None else refused

    price = plan.monthly_price_usd
    return [
        plan.title,
        "Custom" if price is None else f"${price:,}",
        amount(plan.events_included),
        amount(plan.requests_included),
        # Past the events allowance writes are refused; recommendations are reads.
        overage(plan.overage_per_million_events_usd, refused="Refused past the allowance (429)"),
        overage(plan.overage_per_million_requests_usd, refused="Still answered, no overage"),
        "Unlimited" if plan.max_tenants is None else str(plan.max_tenants),
        plan.notes,
    ]


async def test_the_pricing_page_shows_exactly_the_plan_table_the_server_enforces(
    site_browser: Browser, site_url: str
) -> None:
    context = await site_browser.new_context(base_url=site_url, java_script_enabled=False)
    page = await context.new_page()
    try:
        await page.goto("/pricing")
        rows = page.locator("#plans tbody tr")
        shown = []
        for i in range(await rows.count()):
            row = rows.nth(i)
            cells = await row.locator("th, td").all_inner_texts()
            shown.append((await row.get_attribute("data-plan"), [c.strip() for c in cells]))
    finally:
        await context.close()
    assert shown == [(plan.name.value, _expected_row(plan)) for plan in PLANS.values()]


def test_the_sitemap_lists_every_public_page_and_the_web_process_serves_it(
    site_url: str, site_dir: Path
) -> None:
    answer = httpx.get(f"{site_url}/sitemap.xml", timeout=30)
    assert answer.status_code == 200 and "xml" in answer.headers["content-type"]
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    tree = ET.fromstring(answer.text)  # noqa: S314 (our own build's output)
    locations = [loc.text or "" for loc in tree.findall("s:url/s:loc", namespace)]
    listed = {urlparse(loc).path for loc in locations}
    assert all(loc.startswith(BASE_URL) for loc in locations)
    assert listed == {page.path for page in public_pages()}
    built = {
        "/" + str(html.parent.relative_to(site_dir)).replace(".", "").strip("/")
        for html in site_dir.rglob("index.html")
    }
    assert {p if p == "/" else p.rstrip("/") for p in built} == listed
    robots = httpx.get(f"{site_url}/robots.txt", timeout=30).text
    assert f"Sitemap: {BASE_URL}/sitemap.xml" in robots


def test_public_pages_sit_beside_the_dashboard_routes_of_the_web_process(site_url: str) -> None:
    landing = httpx.get(f"{site_url}/", timeout=30)
    assert "<title>Recommendations for your shop, measured" in landing.text
    assert landing.headers["cache-control"] == "no-cache"
    for path in ("/docs/", "/docs/quickstart", "/docs/quickstart/"):
        assert "Quick start" in httpx.get(site_url + path, timeout=30).text, path
    for path in ("/login", "/dashboard", "/dashboard/tenants/some-id", "/no/such/page"):
        answer = httpx.get(site_url + path, timeout=30)
        assert answer.status_code == 200 and '<div id="root">' in answer.text, path
    css = landing.text.split('href="/site-assets/')[1].split('"')[0]
    asset = httpx.get(f"{site_url}/site-assets/{css}", timeout=30)
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"


async def _trending_ready(api_url: str, tenant: TenantContext) -> None:
    """Products and a few events, then wait until trending answers them (the worker counts)."""
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1", timeout=30) as client:
        items = [
            {"productId": f"p{i}", "name": f"Product {i}", "category": "Tea", "price": 3 + i}
            for i in range(4)
        ]
        answer = await client.post(
            "/catalog/batch", headers=tenant.write_headers, json={"items": items}
        )
        assert answer.status_code == 202, answer.text
        events = [
            {"eventType": "product_viewed", "userId": f"u{i}", "productId": f"p{i % 4}"}
            for i in range(8)
        ]
        answer = await client.post(
            "/events/batch", headers=tenant.write_headers, json={"events": events}
        )
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = await client.get(
                "/recommendations",
                params={"userId": "visitor", "strategy": "trending"},
                headers=tenant.read_headers,
            )
            if found.status_code == 200 and found.json()["data"]:
                return
            await asyncio.sleep(0.5)
    pytest.fail("trending never answered the events")


async def test_the_landing_page_shows_the_demo_tenants_live_widget_through_the_real_sdk(
    site_browser: Browser,
    site_url: str,
    site_shop_dir: Path,
    api_url: str,
    tenant: TenantContext,
    worker_process: object,
) -> None:
    await _trending_ready(api_url, tenant)
    key_file = site_shop_dir / "recomengine.json"
    key_file.write_text(json.dumps({"key": tenant.read_key}))
    context = await site_browser.new_context(base_url=site_url)
    page = await context.new_page()
    try:
        await page.goto("/")
        await page.wait_for_selector("#live-demo[data-state=live]")
        slot = page.locator("[data-recomengine-placement=landing-live]")
        await page.wait_for_function(
            "() => ['ready', 'empty', 'error'].includes(document.querySelector("
            "'[data-recomengine-placement=landing-live]').getAttribute('data-recomengine-state'))"
        )
        assert await slot.get_attribute("data-recomengine-state") == "ready"
        assert await slot.locator("[data-recomengine-item]").count() >= 1
        assert "Trending in the demo shop" in await page.locator("#live-demo").inner_text()
    finally:
        key_file.unlink()
        await context.close()


async def test_the_landing_page_says_so_when_there_is_no_demo_tenant(
    site_browser: Browser, site_url: str, site_shop_dir: Path
) -> None:
    assert not (site_shop_dir / "recomengine.json").exists()
    context = await site_browser.new_context(base_url=site_url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto("/")
        await page.wait_for_selector("#live-demo[data-state=absent]")
        assert "No demo tenant" in await page.locator("#live-demo").inner_text()
        assert await page.locator("[data-recomengine-placement]").count() == 0
        assert errors == []
    finally:
        await context.close()


def test_the_demo_command_leaves_the_landing_page_the_read_key_its_shop_already_shows(
    tmp_path: Path,
) -> None:
    from cli.shop import write_shop

    write_shop(
        api_base="http://localhost:5008",
        read_key="rk_live_r",
        write_key="rk_live_w",
        folder=tmp_path,
    )
    assert json.loads((tmp_path / "recomengine.json").read_text()) == {"key": "rk_live_r"}
    assert 'data-api-key="rk_live_r"' in (tmp_path / "index.html").read_text()
