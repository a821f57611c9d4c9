"""The dashboard in headless Chromium: the admin's journeys from sign-up to a password reset,
the operators' console, and axe-core on every route."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
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
from dramatiq import Message
from playwright.async_api import Page, expect
from redis.asyncio import Redis

from conftest import TEST_PASSWORD, Process, TenantContext, make_tenant
from store.auth_tokens import reset_link_token
from store.mail import RESET_TOKEN_PLACEHOLDER
from store.settings import Settings
from workers.broker import build_broker

__all__ = ["browser", "context", "page", "shop_dir", "web_url"]  # fixtures used by name


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 20) -> None:
    """Retry `check` until it holds (the worker stores events asynchronously)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the condition did not hold in time")


async def settled(page: Page) -> None:
    """Wait until no part of the page says it is loading (the event tail never idles the
    network, so "networkidle" cannot tell)."""
    await expect(page.get_by_text(re.compile(r"^(Loading|Signing in)…$"))).to_have_count(0)


# The innermost elements that reach past the right edge of a narrow viewport.
WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1 && e.children.length === 0)
  .slice(0, 5).map(e => e.tagName + '.' + e.className.toString().slice(0, 60))"""


def exposure(kind: str, user: str, product: str, **metadata: object) -> dict[str, object]:
    """A recommendation impression or click event as the SDK sends it."""
    return {
        "eventType": kind,
        "userId": user,
        "productId": product,
        "timestamp": datetime.now(UTC).isoformat(),
        "metadata": {"placementId": "home", "recommendationId": "r1", "position": 1, **metadata},
    }


async def test_a_new_admin_signs_up_creates_a_tenant_and_a_key_and_sees_events_charted(
    page: Page, web_url: str, worker_process: Process
) -> None:
    email = f"new-{uuid.uuid4().hex[:10]}@example.com"
    await page.goto("/signup")
    await page.get_by_label("Name").fill("Ada Admin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("a strong password 1")
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url("**/dashboard/tenants")
    await expect(page.get_by_text("No tenants yet")).to_be_visible()

    await page.get_by_label("Tenant name").fill("Ada's Shop")
    await page.get_by_role("button", name="Create tenant").click()
    await page.get_by_role("link", name="Ada's Shop").click()
    await page.wait_for_url(re.compile(r"/dashboard/tenants/[0-9a-f-]+$"))
    tenant_id = page.url.rsplit("/", 1)[-1]
    await expect(page.get_by_role("heading", name="Tenant overview")).to_be_visible()
    await expect(page.get_by_text("not enough data").first).to_be_visible()
    await page.get_by_role("button", name="Retrain now").click()
    await expect(page.get_by_text("A full retrain is queued.")).to_be_visible()
    await screenshot(page, "tenant-detail")

    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Key name").fill("backend")
    await page.get_by_label("Permission").select_option("read_write")
    await page.get_by_role("button", name="Create key").click()
    key = (await page.get_by_test_id("new-key").inner_text()).strip()
    assert key.startswith("rk_live_")
    await expect(page.get_by_test_id("key-backend")).to_contain_text("never")
    await screenshot(page, "api-keys")

    events = [exposure("recommendation_impressed", f"u{i}", f"p{i % 3}") for i in range(5)]
    events += [exposure("recommendation_clicked", f"u{i}", f"p{i % 3}") for i in range(2)]
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http:
        posted = await http.post(
            "/api/v1/events/batch", json={"events": events}, headers={"X-API-Key": key}
        )
    assert posted.status_code == 202, posted.text
    assert posted.json()["accepted"] == 7

    await page.goto(f"/dashboard/tenants/{tenant_id}/analytics")

    async def charted() -> bool:
        # The figures and charts read separate aggregates that catch up independently.
        impressions = page.get_by_test_id("chart-Impressions")
        clicks = page.get_by_test_id("chart-Clicks")
        kpi = page.get_by_test_id("kpi-Impressions")
        if await impressions.count() and await clicks.count() and await kpi.count():
            totals = (
                await impressions.get_attribute("data-total"),
                await clicks.get_attribute("data-total"),
            )
            if totals == ("5", "2") and (await kpi.inner_text()).endswith("5"):
                return True
        await page.reload()
        await page.get_by_test_id("chart-Impressions").wait_for()
        return False

    await eventually(charted, within=60)
    await expect(page.get_by_test_id("kpi-CTR")).to_contain_text("40.0%")
    await screenshot(page, "analytics")


async def test_an_admin_creates_starts_and_reads_an_experiment(
    page: Page, tenant: TenantContext
) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/experiments")
    await expect(page.get_by_text("No experiments yet")).to_be_visible()
    await page.get_by_role("link", name="New experiment").click()
    # The form says what the api would refuse before sending it.
    await page.get_by_label("Variant strategy").select_option("collaborative")
    await page.get_by_role("button", name="Create draft").click()
    await expect(page.get_by_text("Give the experiment a name")).to_be_visible()
    await expect(page.get_by_text("Must differ from the control strategy")).to_be_visible()
    await page.get_by_label("Name").fill("Trending on home")
    await page.get_by_label("Variant strategy").select_option("trending")
    await page.get_by_label("Traffic to variant (%)").fill("30")
    await page.get_by_role("button", name="Create draft").click()
    await page.wait_for_url(re.compile(r"/experiments/[0-9a-f-]{36}$"))
    await expect(page.get_by_text("draft", exact=True)).to_be_visible()

    await page.get_by_role("button", name="Start").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("split between the two strategies")
    await dialog.get_by_role("button", name="Start").click()
    await expect(page.get_by_text("running", exact=True)).to_be_visible()
    await expect(page.get_by_test_id("results-table")).to_contain_text("Users")
    await expect(page.get_by_text("Low confidence")).to_be_visible()
    await expect(page.get_by_role("button", name="Pause")).to_be_visible()
    # Started today: the daily chart has its first day.
    await expect(page.get_by_test_id("chart-CTR per variant")).to_be_visible()
    await screenshot(page, "experiment-detail")

    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/experiments")
    await expect(page.get_by_role("link", name="Trending on home")).to_be_visible()


async def test_a_revoked_key_stops_working_at_once(page: Page, tenant: TenantContext) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/api-keys")
    await page.get_by_role("button", name="Revoke read_write").click()
    await page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()
    await expect(page.get_by_test_id("key-read_write")).to_contain_text("revoked")
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(
            page.url.split("/dashboard")[0] + "/api/v1/events",
            json={"eventType": "product_viewed", "userId": "u1", "productId": "p1"},
            headers=tenant.write_headers,
        )
    assert refused.status_code == 401
    await screenshot(page, "key-revoked")


async def test_a_forgotten_password_is_reset_from_the_mailed_link(
    page: Page, tenant: TenantContext, db: asyncpg.Pool, migrated: Settings
) -> None:
    await page.goto("/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    # The sign-in page has an Email field too: fill the reset page's, once it is shown.
    await expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    await page.get_by_label("Email").fill(tenant.admin_email)
    await page.get_by_role("button", name="Send reset link").click()
    await expect(page.get_by_role("status")).to_contain_text("we mailed it a link")

    # The api writes the mail after answering; the outbox keeps the link's token out of its
    # rows and the sender renders it into the mail.
    async def mailed() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) FROM mail_outbox WHERE to_address = $1", tenant.admin_email
            )
        )

    await eventually(mailed)
    row = await db.fetchrow(
        "SELECT body, password_reset_id FROM mail_outbox WHERE to_address = $1 "
        "ORDER BY id DESC LIMIT 1",
        tenant.admin_email,
    )
    # What the sender puts in the mail (a worker may have sent it already).
    token = reset_link_token(str(row["password_reset_id"]), secret=migrated.jwt_secret)
    body = row["body"].replace(RESET_TOKEN_PLACEHOLDER, token)
    link = re.search(r"https?://\S+/reset-password\?token=\S+", body)
    assert link is not None, body
    # The mail links to the configured dashboard origin; the test's web server has its own port.
    await page.goto(re.sub(r"^https?://[^/]+", "", link.group(0)))
    await page.get_by_label("New password", exact=True).fill("a brand new password 2")
    await page.get_by_label("Repeat the new password").fill("a brand new password 2")
    await page.get_by_role("button", name="Set password").click()
    await page.wait_for_url("**/login?reset=done")
    await expect(page.get_by_text("Your password was changed")).to_be_visible()
    await sign_in(page, tenant.admin_email, "a brand new password 2")
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    # The link works once.
    await page.context.clear_cookies()
    await page.goto(re.sub(r"^https?://[^/]+", "", link.group(0)))
    await page.get_by_label("New password", exact=True).fill("yet another password 3")
    await page.get_by_label("Repeat the new password").fill("yet another password 3")
    await page.get_by_role("button", name="Set password").click()
    await expect(page.get_by_role("alert")).to_contain_text("invalid, already used or expired")


async def _shop_with_views(web_url: str, tenant: TenantContext, db: asyncpg.Pool) -> None:
    """Five products in the catalog, each viewed, stored by the worker."""
    items = [
        {"productId": f"w{i}", "name": f"Widget item {i}", "category": "Gadgets", "price": 10 + i}
        for i in range(5)
    ]
    views = [
        {"eventType": "product_viewed", "userId": f"shopper-{u}", "productId": f"w{i}"}
        for i in range(5)
        for u in range(3)
    ]
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http:
        catalog = await http.post(
            "/api/v1/catalog/batch", json={"items": items}, headers=tenant.write_headers
        )
        assert catalog.status_code == 202, catalog.text
        events = await http.post(
            "/api/v1/events/batch", json={"events": views}, headers=tenant.write_headers
        )
        assert events.status_code == 202, events.text

    async def landed() -> bool:
        count = await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1", uuid.UUID(tenant.tenant_id)
        )
        return bool(count == len(views))

    await eventually(landed)


async def test_changing_a_widget_changes_the_live_preview_of_the_real_sdk(
    page: Page, tenant: TenantContext, web_url: str, db: asyncpg.Pool, worker_process: Process
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        bundle = await http.get(f"{web_url}/v1/recomengine.js")
    if bundle.status_code == 404:
        pytest.skip("the api serves no SDK bundle yet (/v1/recomengine.js)")
    await _shop_with_views(web_url, tenant, db)
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/widgets")
    await page.get_by_role("button", name="Create a preview key").click()
    preview = page.frame_locator("[data-testid=widget-preview]")
    await expect(preview.locator("[data-recomengine-item]").first).to_be_visible()
    await expect(preview.get_by_text("View Product").first).to_be_visible()

    await page.get_by_label("Button text").fill("Buy it now")
    await page.get_by_label("Items shown (4–20)").fill("4")
    await page.get_by_label("Layout").select_option("list")
    await page.get_by_role("button", name="Save and preview").click()
    await expect(preview.get_by_text("Buy it now").first).to_be_visible()
    await expect(preview.get_by_text("View Product")).to_have_count(0)
    assert await preview.locator("[data-recomengine-item]").count() <= 4
    await screenshot(page, "widgets-preview")


async def test_a_widget_config_is_saved_and_refused_values_are_shown_on_their_fields(
    page: Page, tenant: TenantContext
) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/widgets")
    await page.get_by_label("Placement").fill("product-page")
    await page.get_by_label("Columns (2–6)").fill("9")
    await page.get_by_role("button", name="Save and preview").click()
    await expect(page.get_by_text(re.compile("less than or equal to 6|at most 6|6"))).not_to_have_count(0)
    await page.get_by_label("Columns (2–6)").fill("3")
    await page.get_by_label("Button text").fill("Shop this")
    await page.get_by_role("button", name="Save and preview").click()
    await expect(page.get_by_text("Saved placement")).to_be_visible()
    async with httpx.AsyncClient(timeout=30) as http:
        saved = await http.get(
            page.url.split("/dashboard")[0]
            + f"/api/v1/tenants/{tenant.tenant_id}/widgets/product-page",
            headers=tenant.admin_headers,
        )
    assert saved.status_code == 200
    assert (saved.json()["columns"], saved.json()["ctaText"]) == (3, "Shop this")


async def test_the_catalog_browser_filters_and_shows_30_day_interactions(
    page: Page, tenant: TenantContext, web_url: str, db: asyncpg.Pool, worker_process: Process
) -> None:
    await _shop_with_views(web_url, tenant, db)
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/catalog")
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(5)
    await expect(rows.first).to_contain_text("3")  # three views each
    await page.get_by_label("Search").fill("item 3")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Widget item 3")


async def test_settings_rename_the_admin_and_sign_out_everywhere(
    page: Page, tenant: TenantContext
) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto("/dashboard/settings")
    await page.get_by_label("Name").fill("Grace Admin")
    await page.get_by_role("button", name="Save profile").click()
    await expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    await page.get_by_label("Current password").fill(TEST_PASSWORD)
    await page.get_by_label("New password", exact=True).fill("a changed password 4")
    await page.get_by_role("button", name="Change password").click()
    await expect(page.get_by_text("Password changed")).to_be_visible()
    # Still signed in with the fresh session the change answered.
    await page.reload()
    await expect(page.get_by_role("heading", name="Account settings")).to_be_visible()
    await page.get_by_role("link", name="Billing").click()
    await expect(page.get_by_text("Coming soon.")).to_be_visible()
    await page.go_back()
    await page.get_by_role("button", name="Sign out everywhere").click()
    await page.get_by_role("dialog").get_by_role("button", name="Sign out everywhere").click()
    await page.wait_for_url(re.compile(r"/login"))
    # The refresh cookie is revoked: a reload cannot bring the session back.
    await page.goto("/dashboard/settings")
    await page.wait_for_url(re.compile(r"/login\?next="))


async def test_a_signed_out_visitor_is_sent_to_login_and_back_to_the_page_asked_for(
    page: Page, tenant: TenantContext
) -> None:
    target = f"/dashboard/tenants/{tenant.tenant_id}/api-keys"
    await page.goto(target)
    await page.wait_for_url(re.compile(r"/login\?next="))
    await page.get_by_label("Email").fill(tenant.admin_email)
    await page.get_by_label("Password").fill(TEST_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"**{target}")
    # A reload keeps the session: the access token is gone with the page, the cookie is not.
    await page.reload()
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()


async def test_the_event_viewer_tails_new_events_live_and_can_pause(
    page: Page, tenant: TenantContext, web_url: str, worker_process: Process
) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/events")
    await expect(page.get_by_test_id("tail-state")).to_have_text("Live")
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as http:
        posted = await http.post(
            "/api/v1/events",
            json={"eventType": "add_to_cart", "userId": "live-user", "productId": "p-live"},
            headers=tenant.write_headers,
        )
    assert posted.status_code == 202
    await expect(page.get_by_text("live-user").first).to_be_visible(timeout=20_000)
    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_test_id("tail-state")).to_have_text("Paused")
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_test_id("tail-state")).to_have_text("Live")
    await screenshot(page, "events")


async def test_a_suspended_tenant_is_shown_read_only(page: Page, tenant: TenantContext) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto("/dashboard/tenants")
    await page.get_by_role("button", name="Suspend Test Shop").click()
    await expect(page.get_by_role("button", name="Reactivate Test Shop")).to_be_visible()
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}/api-keys")
    await expect(page.get_by_text("This tenant is suspended")).to_be_visible()
    await expect(page.get_by_role("button", name="Create key")).to_be_disabled()


async def test_the_tenant_page_shows_and_changes_how_long_answers_are_cached(
    page: Page, tenant: TenantContext, api_url: str
) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto(f"/dashboard/tenants/{tenant.tenant_id}")
    field = page.get_by_label("Answer cache (seconds)")
    await expect(field).to_have_value("")
    await field.fill("90")
    await page.get_by_role("button", name="Save configuration").click()
    # A loaded machine may take a few seconds to save.
    saved = page.get_by_role("status").filter(has_text="Saved")
    await expect(saved).to_be_visible(timeout=15_000)
    async with httpx.AsyncClient(base_url=api_url) as http:
        stored = await http.get(f"/api/v1/tenants/{tenant.tenant_id}", headers=tenant.admin_headers)
    assert stored.json()["config"]["answerCacheSeconds"] == 90
    await page.reload()
    await expect(page.get_by_label("Answer cache (seconds)")).to_have_value("90")


async def test_deleting_a_tenant_needs_its_name_typed(page: Page, tenant: TenantContext) -> None:
    await sign_in(page, tenant.admin_email)
    await page.goto("/dashboard/tenants")
    await page.get_by_role("button", name="Delete Test Shop").click()
    dialog = page.get_by_role("dialog")
    confirm = dialog.get_by_role("button", name="Delete tenant")
    await expect(confirm).to_be_disabled()
    await dialog.get_by_label("Type “Test Shop” to confirm").fill("Test Shop")
    await confirm.click()
    await expect(page.get_by_text("No tenants yet")).to_be_visible()


async def test_a_non_operator_gets_no_operations_page(page: Page, tenant: TenantContext) -> None:
    await sign_in(page, tenant.admin_email)
    await expect(page.get_by_role("link", name="Operations")).to_have_count(0)
    await page.goto("/ops")
    await expect(page.get_by_role("alert")).to_contain_text("Operators only")
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(
            page.url.split("/ops")[0] + "/api/v1/ops/queues", headers=tenant.admin_headers
        )
    assert answer.status_code == 403


async def test_an_operator_sees_a_dead_letter_inspects_it_and_replays_it(
    page: Page, db: asyncpg.Pool, migrated: Settings, worker_process: Process
) -> None:
    operator = await make_tenant(db, migrated)
    await db.execute("UPDATE admins SET is_operator = true WHERE id = $1", operator.admin_id)
    marker = uuid.uuid4().hex
    # An ingest message whose events are not events: the worker refuses it without retries.
    build_broker(migrated.broker_url).enqueue(
        Message(
            queue_name="ingest",
            actor_name="ingest_events",
            args=(str(uuid.uuid4()), [{"not": marker}]),
            kwargs={},
            options={},
        )
    )
    await sign_in(page, operator.admin_email)
    await page.get_by_role("link", name="Operations").click()
    await expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    await expect(page.get_by_test_id("queue-ingest")).to_be_visible()
    await expect(page.get_by_text("Scheduler:")).to_be_visible()
    ours = page.get_by_test_id("dead-letter").filter(has_text="ingest_events")
    await expect(ours.first).to_be_visible(timeout=30_000)
    letters = page.get_by_test_id("dead-letter")
    count = await letters.count()
    mine = None
    for index in range(count):
        await letters.nth(index).get_by_role("button", name="Inspect").click()
        if marker in await page.get_by_test_id("dead-letter-args").inner_text():
            mine = letters.nth(index)
            break
    assert mine is not None, "the malformed message is not among the dead letters"
    # Its failure is in the ingest queue's throughput of the last hour, charted and as a rate.
    throughput = page.get_by_test_id("throughput-ingest")
    await expect(throughput).to_contain_text(re.compile(r"failed [\d.,]+/min"), timeout=15_000)
    await expect(throughput.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile(r"^ingest over the last 60 minutes: [\d,]+ processed, [1-9][\d,]* failed")
    )
    assert int(await throughput.get_attribute("data-failed-last-hour") or 0) >= 1
    assert await serious_violations(page) == []
    await screenshot(page, "ops-dead-letter")
    await mine.get_by_role("button", name="Replay").click()
    await page.get_by_role("dialog").get_by_role("button", name="Replay").click()
    await expect(page.get_by_text("Replayed 1 message(s).")).to_be_visible()
    # Replayed, it is still malformed and dies again: take it out, so that the dead-letter
    # queue other tests count is as they left it.
    await eventually(lambda: _drop_dead_letters(migrated.broker_url, marker), within=30)
    # The queue table with its charts scrolls inside its card on a phone, not the page.
    await page.set_viewport_size({"width": 375, "height": 800})
    await expect(page.get_by_test_id("throughput-ingest")).to_be_attached()
    width = await page.evaluate("document.documentElement.scrollWidth")
    await screenshot(page, "375-ops")
    assert width <= 375, (width, await page.evaluate(WIDEST))


async def _drop_dead_letters(broker_url: str, marker: str) -> bool:
    """Remove the ingest dead letters whose message contains `marker`; True once one was."""
    client = Redis.from_url(broker_url)
    try:
        messages = await client.hgetall("dramatiq:ingest.XQ.msgs")
        ours = [mid for mid, body in messages.items() if marker.encode() in body]
        for message_id in ours:
            await client.zrem("dramatiq:ingest.XQ", message_id)
            await client.hdel("dramatiq:ingest.XQ.msgs", message_id)
        return bool(ours)
    finally:
        await client.aclose()


@pytest.mark.parametrize("theme", ["light", "dark"])
async def test_every_route_has_no_serious_accessibility_violation(
    page: Page, tenant: TenantContext, theme: str
) -> None:
    await page.emulate_media(color_scheme=theme)  # type: ignore[arg-type]
    for path in ("/login", "/signup", "/forgot-password", "/reset-password?token=x"):
        await page.goto(path)
        await page.get_by_role("heading").first.wait_for()
        found = await serious_violations(page)
        assert found == [], (path, found)
    await sign_in(page, tenant.admin_email)
    async with httpx.AsyncClient(timeout=30) as http:
        base = page.url.split("/dashboard")[0]
        created = await http.post(
            f"{base}/api/v1/tenants/{tenant.tenant_id}/experiments",
            json={
                "name": "Axe",
                "placementId": "home",
                "controlStrategy": "trending",
                "variantStrategy": "collaborative",
                "trafficSplit": 50,
                "metric": "ctr",
            },
            headers=tenant.admin_headers,
        )
    exp_id = created.json()["id"]
    t = f"/dashboard/tenants/{tenant.tenant_id}"
    routes = [
        "/dashboard",
        "/dashboard/tenants",
        t,
        f"{t}/analytics",
        f"{t}/catalog",
        f"{t}/events",
        f"{t}/experiments",
        f"{t}/experiments/new",
        f"{t}/experiments/{exp_id}",
        f"{t}/widgets",
        f"{t}/api-keys",
        "/dashboard/settings",
        "/dashboard/settings/billing",
        "/dashboard/settings/team",
        "/ops",
        "/dashboard/no-such-page",
    ]
    for path in routes:
        await page.goto(path)
        await page.locator("main h1").first.wait_for()
        await settled(page)
        found = await serious_violations(page)
        assert found == [], (path, found)
        if theme == "light":
            name = path.replace(tenant.tenant_id, "t").replace(exp_id, "e").strip("/")
            await screenshot(page, name.replace("/", "_") or "root")
    await page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/dashboard", f"{t}/analytics", f"{t}/api-keys"):
        await page.goto(path)
        await page.locator("main h1").first.wait_for()
        await settled(page)
        width = await page.evaluate("document.documentElement.scrollWidth")
        name = path.replace(tenant.tenant_id, "t").strip("/").replace("/", "_")
        await screenshot(page, f"375-{theme}-{name}")
        assert width <= 375, (path, width, await page.evaluate(WIDEST))
