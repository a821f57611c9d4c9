"""The storefront SDK in real headless Chromium against the real api and workers: one script
tag renders the configured widgets, tracks viewable impressions and clicks, keeps the host page
safe and working, and respects CORS, consent and experiments."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import TenantContext
from playwright.async_api import BrowserContext, Page, Route
from redis.asyncio import Redis
from storefront_support import HOSTILE_NAME, Shop, make_shop

from domain.experiments.assignment import assign_variant
from domain.usertokens import sign_user
from store.settings import Settings

pytestmark = pytest.mark.usefixtures("worker_process")

HOST_CANARY = """
<button id="host-button" onclick="this.dataset.clicked = 'yes'">host</button>
<script>window.hostReady = true;</script>
"""


QUEUES = "Object.keys(localStorage).filter(k => k.startsWith('recomengine:queue'))"


def shadow(placement: str) -> str:
    """JavaScript for the shadow root of a placement element."""
    return f"document.querySelector('[data-recomengine-placement={placement}]').shadowRoot"


def embed(
    api_url: str,
    key: str,
    *,
    body: str,
    user: str | None = None,
    script_attrs: str = "",
    head: str = "",
) -> str:
    """A host page with the embed exactly as API.md gives it."""
    user_attr = f' data-user-id="{user}"' if user else ""
    return f"""<!doctype html><html><head><meta charset="utf-8">{head}
<script src="{api_url}/v1/recomengine.js" data-api-key="{key}"{user_attr}{script_attrs}
 async></script>
</head><body>{body}{HOST_CANARY}</body></html>"""


@pytest.fixture
async def shop(
    db: asyncpg.Pool, redis: Redis, migrated: Settings, api_url: str, static_site: Any
) -> Shop:
    return await make_shop(db, redis, migrated, api_url, origin=static_site.origin)


@pytest.fixture
async def http(api_url: str) -> Any:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def set_widget(http: httpx.AsyncClient, ctx: TenantContext, config: dict[str, Any]) -> None:
    placement = config["placementId"]
    response = await http.put(
        f"/api/v1/tenants/{ctx.tenant_id}/widgets/{placement}",
        json=config,
        headers=ctx.admin_headers,
    )
    if response.status_code == 404:
        response = await http.post(
            f"/api/v1/tenants/{ctx.tenant_id}/widgets", json=config, headers=ctx.admin_headers
        )
    assert response.status_code in (200, 201), response.text


async def ready(page: Page, placement: str, state: str = "ready") -> None:
    await page.wait_for_selector(
        f'[data-recomengine-placement="{placement}"][data-recomengine-state="{state}"]',
        state="attached",
    )


def items(page: Page, placement: str) -> Any:
    return page.locator(f'[data-recomengine-placement="{placement}"] [data-recomengine-item]')


async def rows_of(
    db: asyncpg.Pool, tenant_id: str, event_type: str, *, at_least: int, settle: float = 2.5
) -> list[dict[str, Any]]:
    """The tenant's stored events of a type once at least `at_least` arrived, after `settle`
    more seconds (so that extra, unwanted events would have arrived too)."""
    query = (
        "SELECT user_id, product_id, metadata, occurred_at FROM events "
        "WHERE tenant_id = $1 AND event_type = $2"
    )
    deadline = time.monotonic() + 20
    rows = await db.fetch(query, tenant_id, event_type)
    while len(rows) < at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        rows = await db.fetch(query, tenant_id, event_type)
    await asyncio.sleep(settle)
    rows = await db.fetch(query, tenant_id, event_type)
    return [
        {
            **dict(r),
            "metadata": json.loads(r["metadata"])
            if isinstance(r["metadata"], str)
            else r["metadata"],
        }
        for r in rows
    ]


# --- rendering -------------------------------------------------------------------------------


async def test_the_configured_layouts_and_item_counts_render(
    watched: Any, shop: Shop, http: httpx.AsyncClient, api_url: str, static_site: Any
) -> None:
    await set_widget(
        http,
        shop.ctx,
        {
            "placementId": "home",
            "layout": "grid",
            "columns": 3,
            "maxItems": 6,
            "ctaText": "Buy it",
            "theme": {"primaryColor": "#10B981", "fontFamily": "Georgia, serif"},
        },
    )
    await set_widget(
        http, shop.ctx, {"placementId": "strip", "layout": "carousel", "columns": 4, "maxItems": 8}
    )
    await set_widget(
        http, shop.ctx, {"placementId": "side", "layout": "list", "maxItems": 4, "showPrice": False}
    )
    body = "".join(
        f'<div data-recomengine-placement="{p}" data-strategy="trending"></div>'
        for p in ("home", "strip", "side")
    )
    page = watched.page
    await page.goto(static_site.page("layouts.html", embed(api_url, shop.ctx.read_key, body=body)))
    for placement, count in (("home", 6), ("strip", 8), ("side", 4)):
        await ready(page, placement)
        assert await items(page, placement).count() == count
    layout = await page.evaluate(
        """() => Object.fromEntries(['home', 'strip', 'side'].map(p => {
            const root = document.querySelector(`[data-recomengine-placement="${p}"]`).shadowRoot;
            const list = root.querySelector('ul');
            return [p, {frame: root.querySelector('div').className,
                        columns: getComputedStyle(list).gridTemplateColumns.split(' ').length,
                        prices: root.querySelectorAll('.p').length,
                        cta: root.querySelector('.b').textContent,
                        colour: getComputedStyle(root.querySelector('.b')).backgroundColor,
                        font: getComputedStyle(root.querySelector('.n')).fontFamily}];
        }))"""
    )
    assert layout["home"] == {
        "frame": "r grid",
        "columns": 3,
        "prices": 6,
        "cta": "Buy it",
        "colour": "rgb(16, 185, 129)",
        "font": "Georgia, serif",
    }
    assert layout["strip"]["frame"] == "r carousel"
    assert layout["side"]["frame"] == "r list" and layout["side"]["prices"] == 0
    assert watched.errors == []


async def test_the_carousel_moves_with_its_buttons_and_the_keyboard(
    watched: Any, shop: Shop, http: httpx.AsyncClient, api_url: str, static_site: Any
) -> None:
    await set_widget(
        http, shop.ctx, {"placementId": "strip", "layout": "carousel", "columns": 2, "maxItems": 8}
    )
    page = watched.page
    body = '<div style="width:600px" data-recomengine-placement="strip" data-strategy="trending">'
    body += "</div>"
    await page.goto(static_site.page("carousel.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "strip")
    scroller = page.locator('[data-recomengine-placement="strip"] ul')
    await page.locator('[data-recomengine-placement="strip"] button[data-d="1"]').click()
    await page.wait_for_function(f"() => {shadow('strip')}.querySelector('ul').scrollLeft > 0")
    await scroller.evaluate("el => { el.style.scrollBehavior = 'auto'; el.scrollLeft = 0; }")
    await scroller.focus()
    await page.keyboard.press("ArrowRight")
    await page.wait_for_function(f"() => {shadow('strip')}.querySelector('ul').scrollLeft > 0")


async def test_a_placement_added_after_load_is_rendered(
    watched: Any, shop: Shop, api_url: str, static_site: Any
) -> None:
    page = watched.page
    await page.goto(static_site.page("late.html", embed(api_url, shop.ctx.read_key, body="")))
    await page.wait_for_function("() => !!window.RecomEngine")
    await page.evaluate(
        """() => { const d = document.createElement('div');
                   d.setAttribute('data-recomengine-placement', 'late');
                   d.setAttribute('data-strategy', 'trending'); d.setAttribute('data-limit', '5');
                   document.body.appendChild(d); }"""
    )
    await ready(page, "late")
    assert await items(page, "late").count() == 5


async def test_catalog_markup_renders_as_text_and_a_javascript_url_is_inert(
    watched: Any, shop: Shop, api_url: str, static_site: Any
) -> None:
    page = watched.page

    async def hostile(route: Route) -> None:
        response = await route.fetch()
        answer = await response.json()
        answer["data"][1]["url"] = "javascript:alert(1)"
        answer["data"][1]["imageUrl"] = "javascript:alert(2)"
        answer["data"][2]["url"] = " JaVaScRiPt:alert(3)"
        await route.fulfill(response=response, json=answer)

    await page.route("**/api/v1/recommendations?**", hostile)
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("hostile.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "home")
    first = items(page, "home").nth(0)
    assert await first.locator(".n").text_content() == HOSTILE_NAME
    found = await page.evaluate(
        f"""() => {{ const root = {shadow("home")};
                   const cells = root.querySelectorAll('[data-recomengine-item]');
                   return {{imgs: [...root.querySelectorAll('img')].map(i => i.getAttribute('src')),
                   hrefs: [1, 2].map(i => cells[i].querySelector('a').getAttribute('href'))}}; }}"""
    )
    assert "x" not in found["imgs"] and not any(
        "javascript" in (s or "").lower() for s in found["imgs"]
    )
    assert found["hrefs"] == [None, None]
    await items(page, "home").nth(1).click()
    await items(page, "home").nth(2).click()
    await page.wait_for_timeout(300)
    assert watched.dialogs == [] and watched.errors == []


async def test_styles_stay_inside_the_widget_both_ways(
    watched: Any, shop: Shop, api_url: str, static_site: Any
) -> None:
    head = (
        "<style>li, a, ul { display: none !important; color: rgb(255, 0, 0) !important; }"
        "body { color: rgb(255, 0, 0); font-family: 'Courier New', monospace; }</style>"
    )
    body = '<span class="n" id="host-n">host</span>'
    body += '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    page = watched.page
    await page.goto(
        static_site.page(
            "styles.html",
            embed(api_url, shop.ctx.read_key, body=body, head=head),
        )
    )
    await ready(page, "home")
    name = items(page, "home").nth(1).locator(".n")
    assert await name.is_visible()
    styles = await page.evaluate(
        f"""() => {{ const n = {shadow("home")}.querySelector('.n');
                   const host = document.getElementById('host-n');
                   return {{inside: getComputedStyle(n).color,
                           font: getComputedStyle(n).fontFamily,
                           hostWhiteSpace: getComputedStyle(host).whiteSpace}}; }}"""
    )
    assert styles["inside"] != "rgb(255, 0, 0)"  # neither selectors nor inheritance get in
    assert styles["font"] == '"Courier New", monospace'  # but the font is the page's
    assert styles["hostWhiteSpace"] == "normal"  # the widget's .n rule did not leak out


async def test_window_gains_only_recomengine(
    watched: Any, shop: Shop, api_url: str, static_site: Any
) -> None:
    html = f"""<!doctype html><html><head>
<script>window.__before = Object.getOwnPropertyNames(window);</script>
<script src="{api_url}/v1/recomengine.js" data-api-key="{shop.ctx.read_key}"></script>
</head><body><div data-recomengine-placement="home" data-strategy="trending"></div></body></html>"""
    page = watched.page
    await page.goto(static_site.page("globals.html", html))
    await ready(page, "home")
    added = await page.evaluate(
        "() => Object.getOwnPropertyNames(window)"
        ".filter(n => !window.__before.includes(n) && n !== '__before')"
    )
    assert added == ["RecomEngine"]
    api = await page.evaluate("() => Object.keys(window.RecomEngine).sort()")
    assert api == ["consent", "identify", "init", "recommend", "render", "track"]


async def test_a_widget_config_change_shows_within_60_seconds(
    watched: Any, shop: Shop, http: httpx.AsyncClient, api_url: str, static_site: Any
) -> None:
    await set_widget(http, shop.ctx, {"placementId": "home", "layout": "grid", "maxItems": 4})
    page = watched.page
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("config.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "home")
    assert await items(page, "home").count() == 4
    await set_widget(http, shop.ctx, {"placementId": "home", "layout": "list", "maxItems": 6})
    changed = time.monotonic()
    while True:
        await page.reload()
        await ready(page, "home")
        frame = await page.evaluate(f"() => {shadow('home')}.querySelector('div').className")
        if frame == "r list" and await items(page, "home").count() == 6:
            break
        assert time.monotonic() - changed < 60, "the change did not show within 60 s"
        await asyncio.sleep(2)


# --- failures leave the host page alone --------------------------------------------------------


async def _revoke_read_key(http: httpx.AsyncClient, ctx: TenantContext) -> None:
    listed = await http.get(f"/api/v1/tenants/{ctx.tenant_id}/api-keys", headers=ctx.admin_headers)
    key_id = next(k["id"] for k in listed.json()["data"] if k["permission"] == "read")
    revoked = await http.delete(
        f"/api/v1/tenants/{ctx.tenant_id}/api-keys/{key_id}", headers=ctx.admin_headers
    )
    assert revoked.status_code == 204


async def _suspend(http: httpx.AsyncClient, ctx: TenantContext) -> None:
    response = await http.patch(
        f"/api/v1/tenants/{ctx.tenant_id}", json={"status": "suspended"}, headers=ctx.admin_headers
    )
    assert response.status_code == 200, response.text


async def _answer_500(page: Page) -> None:
    await page.route(
        "**/api/v1/recommendations?**", lambda route: route.fulfill(status=500, body="boom")
    )


async def _network_down(page: Page) -> None:
    await page.route("**/api/v1/**", lambda route: route.abort("internetdisconnected"))


@pytest.mark.parametrize("failure", ["suspended tenant", "revoked key", "500", "network failure"])
async def test_a_failure_leaves_the_host_page_working_and_the_placement_empty(
    failure: str, watched: Any, shop: Shop, http: httpx.AsyncClient, api_url: str, static_site: Any
) -> None:
    page = watched.page
    breakers: dict[str, Callable[[], Awaitable[None]]] = {
        "suspended tenant": lambda: _suspend(http, shop.ctx),
        "revoked key": lambda: _revoke_read_key(http, shop.ctx),
        "500": lambda: _answer_500(page),
        "network failure": lambda: _network_down(page),
    }
    await breakers[failure]()
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("failure.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "home", state="error")
    assert await items(page, "home").count() == 0
    assert await page.evaluate("() => window.hostReady") is True
    await page.click("#host-button")
    assert await page.get_attribute("#host-button", "data-clicked") == "yes"
    assert watched.errors == []


async def test_a_disallowed_origin_cannot_read_answers(
    watched: Any, db: asyncpg.Pool, redis: Redis, migrated: Settings, api_url: str, static_site: Any
) -> None:
    elsewhere = await make_shop(db, redis, migrated, api_url, origin="http://other-shop.example")
    page = watched.page
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(
        static_site.page("foreign.html", embed(api_url, elsewhere.ctx.read_key, body=body))
    )
    await ready(page, "home", state="error")
    outcome = await page.evaluate(
        "() => RecomEngine.recommend({strategy: 'trending'})"
        ".then(a => 'read ' + a.data.length, () => 'refused')"
    )
    assert outcome == "refused"
    assert watched.errors == []


# --- tracking ---------------------------------------------------------------------------------


async def test_impressions_count_items_visible_for_one_second_once_and_not_those_scrolled_past(
    watched: Any,
    shop: Shop,
    http: httpx.AsyncClient,
    db: asyncpg.Pool,
    api_url: str,
    static_site: Any,
) -> None:
    await set_widget(
        http, shop.ctx, {"placementId": "home", "layout": "grid", "columns": 4, "maxItems": 4}
    )
    body = (
        '<div data-recomengine-placement="home" data-strategy="trending"></div>'
        '<div style="height:4000px"></div>'
        '<div data-recomengine-placement="footer" data-strategy="trending" data-limit="4"></div>'
    )
    page = watched.page
    await page.goto(
        static_site.page("impressions.html", embed(api_url, shop.ctx.read_key, body=body))
    )
    await ready(page, "home")
    await ready(page, "footer")
    await page.wait_for_timeout(1500)
    # The footer is scrolled into view and out again within half a second: not viewable.
    await page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    await page.wait_for_timeout(400)
    await page.evaluate("() => window.scrollTo(0, 0)")
    await page.wait_for_timeout(1500)
    rows = await rows_of(db, shop.ctx.tenant_id, "recommendation_impressed", at_least=4)
    assert len(rows) == 4
    assert {r["metadata"]["placementId"] for r in rows} == {"home"}
    assert sorted(r["metadata"]["position"] for r in rows) == [1, 2, 3, 4]
    assert len({r["product_id"] for r in rows}) == 4
    assert all(
        r["metadata"]["recommendationId"] and r["metadata"]["strategy"] == "trending" for r in rows
    )
    assert len({r["user_id"] for r in rows}) == 1 and rows[0]["user_id"].startswith("anon-")


SHIFT_CLOCK_BACK_10_MIN = """
(() => {
  const shift = -10 * 60 * 1000;
  const RealDate = Date;
  class ShiftedDate extends RealDate {
    constructor(...args) { if (args.length) super(...args); else super(RealDate.now() + shift); }
    static now() { return RealDate.now() + shift; }
  }
  window.Date = ShiftedDate;
})();
"""


async def test_a_click_is_tracked_before_navigation_and_a_purchase_ten_minutes_later_is_attributed(
    watched: Any,
    shop: Shop,
    http: httpx.AsyncClient,
    db: asyncpg.Pool,
    api_url: str,
    static_site: Any,
) -> None:
    page = watched.page
    await page.add_init_script(SHIFT_CLOCK_BACK_10_MIN)  # the shopper clicked 10 minutes ago
    static_site.page("product.html", "<!doctype html><title>product</title><p>product page</p>")
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("click.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "home")
    clicked_id = await items(page, "home").nth(1).get_attribute("data-recomengine-item")
    await items(page, "home").nth(1).locator("a").click()
    await page.wait_for_url("**/product.html?id=*")
    clicks = await rows_of(db, shop.ctx.tenant_id, "recommendation_clicked", at_least=1, settle=0)
    assert len(clicks) == 1
    click = clicks[0]
    assert click["product_id"] == clicked_id
    assert click["metadata"]["position"] == 2 and click["metadata"]["recommendationId"]
    assert click["metadata"]["placementId"] == "home"
    age = datetime.now(UTC) - click["occurred_at"]
    assert 9 * 60 < age.total_seconds() < 11 * 60
    purchase = {
        "eventType": "purchase",
        "userId": click["user_id"],
        "productId": clicked_id,
        "metadata": {"price": 42.5},
    }
    posted = await http.post("/api/v1/events", json=purchase, headers=shop.ctx.write_headers)
    assert posted.status_code == 202, posted.text
    deadline = time.monotonic() + 20
    revenue = None
    while revenue is None and time.monotonic() < deadline:
        revenue = await db.fetchval(
            "SELECT revenue FROM revenue_attributions WHERE tenant_id = $1 AND product_id = $2",
            shop.ctx.tenant_id,
            clicked_id,
        )
        await asyncio.sleep(0.2)
    assert revenue is not None and float(revenue) == 42.5


async def test_offline_events_are_sent_after_reconnection_once(
    watched: Any,
    context: BrowserContext,
    shop: Shop,
    http: httpx.AsyncClient,
    db: asyncpg.Pool,
    api_url: str,
    static_site: Any,
) -> None:
    await set_widget(
        http, shop.ctx, {"placementId": "home", "layout": "grid", "columns": 4, "maxItems": 4}
    )
    page = watched.page
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("offline.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "home")
    await context.set_offline(True)
    await page.wait_for_timeout(4500)  # seen, then at least one failed send
    queued = await page.evaluate(f"() => {QUEUES}.map(k => JSON.parse(localStorage[k]).length)")
    assert queued == [4]
    assert (
        await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", shop.ctx.tenant_id)
        == 0
    )
    await context.set_offline(False)
    rows = await rows_of(db, shop.ctx.tenant_id, "recommendation_impressed", at_least=4, settle=4)
    assert len(rows) == 4


async def test_queued_events_survive_a_reload_and_are_sent_once(
    watched: Any, shop: Shop, db: asyncpg.Pool, api_url: str, static_site: Any
) -> None:
    page = watched.page
    blocked: list[str] = []

    async def refuse(route: Route) -> None:
        blocked.append(route.request.url)
        await route.abort("internetdisconnected")

    await page.route("**/api/v1/storefront/events", refuse)
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    url = static_site.page("reload.html", embed(api_url, shop.ctx.read_key, body=body))
    await page.goto(url)
    await ready(page, "home")
    await page.evaluate("() => RecomEngine.track({eventType: 'product_viewed', productId: 'p3'})")
    await page.wait_for_timeout(2500)
    assert blocked, "the batch was tried and failed"
    await page.unroute("**/api/v1/storefront/events")
    await page.goto(static_site.page("blank.html", embed(api_url, shop.ctx.read_key, body="")))
    rows = await rows_of(db, shop.ctx.tenant_id, "product_viewed", at_least=1, settle=3)
    assert len(rows) == 1 and rows[0]["product_id"] == "p3"


async def test_consent_false_stops_tracking_and_clears_the_queue(
    watched: Any, shop: Shop, api_url: str, static_site: Any
) -> None:
    page = watched.page
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/storefront/events" in r.url else None)
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("consent.html", embed(api_url, shop.ctx.read_key, body=body)))
    await ready(page, "home")
    await page.evaluate("() => RecomEngine.track({eventType: 'product_viewed', productId: 'p1'})")
    await page.evaluate("() => RecomEngine.consent(false)")
    queued = await page.evaluate(f"() => {QUEUES}.map(k => localStorage[k])")
    assert queued == []
    assert (
        await page.evaluate(
            "() => RecomEngine.track({eventType: 'product_viewed', productId: 'p2'})"
        )
        is False
    )
    await page.wait_for_timeout(3500)
    assert sent == []


async def test_require_consent_means_no_tracking_until_consent_is_given(
    watched: Any, db: asyncpg.Pool, redis: Redis, migrated: Settings, api_url: str, static_site: Any
) -> None:
    strict = await make_shop(
        db, redis, migrated, api_url, origin=static_site.origin, config={"requireConsent": True}
    )
    page = watched.page
    body = '<div data-recomengine-placement="home" data-strategy="trending"></div>'
    await page.goto(static_site.page("strict.html", embed(api_url, strict.ctx.read_key, body=body)))
    await ready(page, "home")
    await page.wait_for_timeout(3500)  # impressions were seen; the api refused them unconsented
    assert (
        await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", strict.ctx.tenant_id)
        == 0
    )
    assert (
        await page.evaluate(
            "() => RecomEngine.track({eventType: 'product_viewed', productId: 'p1'})"
        )
        is False
    )
    await page.evaluate("() => RecomEngine.consent(true)")
    assert (
        await page.evaluate(
            "() => RecomEngine.track({eventType: 'product_viewed', productId: 'p1'})"
        )
        is True
    )
    rows = await rows_of(db, strict.ctx.tenant_id, "product_viewed", at_least=1, settle=0)
    assert len(rows) == 1


async def test_identify_merges_the_anonymous_history_into_the_signed_user(
    watched: Any,
    shop: Shop,
    http: httpx.AsyncClient,
    db: asyncpg.Pool,
    api_url: str,
    static_site: Any,
) -> None:
    secret = (
        await http.post(
            f"/api/v1/tenants/{shop.ctx.tenant_id}/user-token-secret",
            headers=shop.ctx.admin_headers,
        )
    ).json()["secret"]
    page = watched.page
    await page.goto(static_site.page("identify.html", embed(api_url, shop.ctx.read_key, body="")))
    await page.wait_for_function("() => !!window.RecomEngine")
    await page.evaluate("() => RecomEngine.track({eventType: 'product_viewed', productId: 'p4'})")
    await rows_of(db, shop.ctx.tenant_id, "product_viewed", at_least=1, settle=0)
    token = sign_user(secret=secret, user_id="member-42")
    async with page.expect_response("**/api/v1/users/merge") as merged:
        await page.evaluate(f"() => RecomEngine.identify('member-42', '{token}')")
    assert (await merged.value).status == 200
    owners = await db.fetch(
        "SELECT DISTINCT user_id FROM events WHERE tenant_id = $1", shop.ctx.tenant_id
    )
    assert [r["user_id"] for r in owners] == ["member-42"]


async def test_experiment_events_count_under_the_server_computed_variant(
    watched: Any,
    shop: Shop,
    http: httpx.AsyncClient,
    db: asyncpg.Pool,
    api_url: str,
    static_site: Any,
) -> None:
    created = await http.post(
        f"/api/v1/tenants/{shop.ctx.tenant_id}/experiments",
        json={
            "name": "Home",
            "placementId": "home",
            "controlStrategy": "trending",
            "variantStrategy": "collaborative",
            "trafficSplit": 50,
            "metric": "ctr",
        },
        headers=shop.ctx.admin_headers,
    )
    experiment_id = created.json()["id"]
    started = await http.patch(
        f"/api/v1/tenants/{shop.ctx.tenant_id}/experiments/{experiment_id}",
        json={"status": "running"},
        headers=shop.ctx.admin_headers,
    )
    assert started.status_code == 200
    page = watched.page

    async def tampered(route: Route) -> None:
        response = await route.fetch()
        answer = await response.json()
        assert answer["meta"]["experimentId"] == experiment_id
        answer["meta"]["variant"] = {"control": "variant", "variant": "control"}[
            answer["meta"]["variant"]
        ]
        await route.fulfill(response=response, json=answer)

    await page.route("**/api/v1/recommendations?**", tampered)
    body = '<div data-recomengine-placement="home" data-limit="4"></div>'
    await page.goto(
        static_site.page(
            "experiment.html", embed(api_url, shop.ctx.read_key, body=body, user="exp-user-1")
        )
    )
    await ready(page, "home")
    rows = await rows_of(db, shop.ctx.tenant_id, "recommendation_impressed", at_least=4, settle=0)
    truth = assign_variant(experiment_id=experiment_id, user_id="exp-user-1", traffic_split=50)
    assert {r["metadata"]["variant"] for r in rows} == {truth}
    assert {r["metadata"]["experimentId"] for r in rows} == {experiment_id}
    results = await http.get(
        f"/api/v1/tenants/{shop.ctx.tenant_id}/experiments/{experiment_id}/results",
        headers=shop.ctx.admin_headers,
    )
    assert results.json()["variants"][truth]["impressions"] == len(rows)
