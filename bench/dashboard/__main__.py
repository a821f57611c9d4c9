"""The dashboard's budgets in headless Chromium: LCP of /dashboard and of a tenant's analytics
page with 4x CPU throttling, and the gzipped JavaScript the first route loads.

    .venv/bin/python -m bench.dashboard                 # the running platform's demo tenant
    .venv/bin/python -m bench.dashboard --local [--events 300000] [--runs 5]

Without --local it measures `make up`'s platform (web on --web-url, default port 3112) signed
in as the demo admin of `.run/dev/demo.json`. With --local it starts throwaway PostgreSQL and
Redis, the api and the web process, makes an admin with one tenant holding --events events
spread over the last 30 days (generated inside PostgreSQL, then summarised into the daily
aggregates as the scheduler would), and measures against that. Each run is a fresh browser
profile (cold cache) whose CPU is slowed 4x through CDP (Emulation.setCPUThrottlingRate); LCP is
the last largest-contentful-paint entry once the page shows its figures. Prints a table;
writes nothing into the repository. Budgets (spec): LCP <= 2 s, first-route JS <= 150 KB gzip.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import secrets
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Response, async_playwright

from bench.harness import CHROMIUM, CHROMIUM_ARGS, ROOT, Platform, local_platform, wait_ready
from cli.localservices import free_port

LCP_BUDGET_MS = 2000
JS_BUDGET_KB = 150
OBSERVE_LCP = """
window.__lcp = null;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__lcp = entry.startTime;
}).observe({ type: "largest-contentful-paint", buffered: true });
"""

_LOAD_EVENTS = """
INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, placement_id,
                    recommendation_id, price, metadata, occurred_at)
SELECT $1, 'bench-' || g, t, 'u' || (hashint8(g) & 4095), 'p' || (hashint8(g * 3) & 1023),
       CASE WHEN t LIKE 'recommendation%' THEN 'home' END,
       CASE WHEN t LIKE 'recommendation%' THEN 'r' || g END,
       CASE WHEN t = 'purchase' THEN 5 + (hashint8(g * 7) & 255) / 4.0 END,
       CASE WHEN t LIKE 'recommendation%' THEN '{"placementId": "home"}'::jsonb
            ELSE '{}'::jsonb END,
       $2::timestamptz + g * $3::interval
FROM generate_series(1, $4::bigint) g,
     LATERAL (SELECT CASE (hashint8(g * 5) & 1023) % 20
         WHEN 0 THEN 'purchase' WHEN 1 THEN 'recommendation_clicked'
         WHEN 2 THEN 'add_to_cart' WHEN 3 THEN 'recommendation_impressed'
         WHEN 4 THEN 'recommendation_impressed' WHEN 5 THEN 'recommendation_impressed'
         ELSE 'product_viewed' END AS t) x
"""


async def _seed_local(platform: Platform, events: int) -> dict[str, str]:
    """An admin with a known password and a tenant holding `events` events of 30 days."""
    from store.admins import create_admin
    from store.analytics import refresh_tenant_days
    from store.db import create_pool
    from store.passwords import hash_password
    from store.tenants import create_tenant

    password = secrets.token_urlsafe(12)
    pool = await create_pool(platform.settings, min_size=1, max_size=2)
    try:
        admin = await create_admin(
            pool,
            email="bench-dashboard@example.com",
            name="Bench",
            password_hash=hash_password(password, rounds=4),
        )
        tenant = await create_tenant(pool, owner_id=admin.id, name="Bench shop")
        tenant_id = str(tenant["id"])
        start = datetime.now(UTC) - timedelta(days=30)
        step = timedelta(days=30) / max(1, events)
        await pool.execute(_LOAD_EVENTS, tenant["id"], start, step, events, timeout=600)
        days = [start.date() + timedelta(days=i) for i in range(32)]
        await refresh_tenant_days(
            pool, tenant_id=tenant_id, days=[d for d in days if d <= date.today()]
        )
    finally:
        await pool.close()
    return {
        "adminEmail": "bench-dashboard@example.com",
        "adminPassword": password,
        "tenantId": tenant_id,
    }


@contextmanager
def _local(events: int) -> Iterator[tuple[str, dict[str, str]]]:
    with local_platform("recomengine-bench-dashboard-") as platform:
        platform.start_api()
        port = free_port()
        web = platform.start(
            ["cli.main", "web", "--port", str(port), "--api-url", platform.base_url], "web.log"
        )
        wait_ready(f"http://127.0.0.1:{port}/login", web, platform.workdir / "web.log")
        print(f"loading {events:,} events ...", file=sys.stderr)
        state = asyncio.run(_seed_local(platform, events))
        yield f"http://127.0.0.1:{port}", state


async def _measure(
    browser: Browser, web_url: str, path: str, ready: str, state: dict[str, str]
) -> tuple[float, float]:
    """(LCP in ms, gzipped JS in KB) of one cold load of `path`, signed in."""
    context = await browser.new_context(base_url=web_url, viewport={"width": 1280, "height": 800})
    try:
        login = await context.request.post(
            "/api/v1/auth/login",
            data={"email": state["adminEmail"], "password": state["adminPassword"]},
        )
        if not login.ok:
            raise SystemExit(f"cannot sign in as {state['adminEmail']}: {login.status}")
        page = await context.new_page()
        await page.add_init_script(OBSERVE_LCP)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
        scripts: list[Response] = []
        page.on(
            "response", lambda r: scripts.append(r) if r.request.resource_type == "script" else None
        )
        await page.goto(path)
        await page.locator(ready).first.wait_for(timeout=60_000)
        await page.wait_for_timeout(500)
        lcp = await page.evaluate("window.__lcp")
        sizes = [len(gzip.compress(await r.body(), 9)) for r in scripts]
        await page.close()
        return float(lcp or 0.0), sum(sizes) / 1024
    finally:
        await context.close()


async def _run(web_url: str, state: dict[str, str], runs: int) -> list[dict[str, Any]]:
    pages = [
        ("/dashboard", "[data-testid=overview-impressions]"),
        (f"/dashboard/tenants/{state['tenantId']}/analytics", "[data-testid=chart-Impressions]"),
    ]
    rows = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            for path, ready in pages:
                await _measure(browser, web_url, path, ready, state)  # warm the server
                lcps, js = [], 0.0
                for _ in range(runs):
                    lcp, js = await _measure(browser, web_url, path, ready, state)
                    lcps.append(lcp)
                rows.append(
                    {
                        "page": path.replace(state["tenantId"], "{id}"),
                        "lcpMedianMs": round(statistics.median(lcps)),
                        "lcpMaxMs": round(max(lcps)),
                        "jsGzipKB": round(js, 1),
                    }
                )
        finally:
            await browser.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", action="store_true", help="throwaway platform, synthetic data")
    parser.add_argument("--events", type=int, default=300_000, help="with --local")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--web-url", default="http://localhost:3112")
    parser.add_argument("--state", type=Path, default=ROOT / ".run" / "dev" / "demo.json")
    args = parser.parse_args()
    if args.local:
        with _local(args.events) as (web_url, state):
            rows = asyncio.run(_run(web_url, state, args.runs))
    else:
        if not args.state.exists():
            print(f"no demo state at {args.state}: run `make up` first, or use --local")
            return 2
        state = json.loads(args.state.read_text())
        httpx.get(f"{args.web_url}/login", timeout=10).raise_for_status()
        rows = asyncio.run(_run(args.web_url, state, args.runs))
    print(f"{'page':<42} {'LCP median':>11} {'LCP max':>9} {'JS gzip':>9}")
    for row in rows:
        print(
            f"{row['page']:<42} {row['lcpMedianMs']:>8} ms {row['lcpMaxMs']:>6} ms "
            f"{row['jsGzipKB']:>6} KB"
        )
    worst_lcp = max(r["lcpMaxMs"] for r in rows)
    worst_js = max(r["jsGzipKB"] for r in rows)
    print(
        f"budgets: LCP <= {LCP_BUDGET_MS} ms ({'met' if worst_lcp <= LCP_BUDGET_MS else 'MISSED'}),"
        f" first-route JS <= {JS_BUDGET_KB} KB gzip "
        f"({'met' if worst_js <= JS_BUDGET_KB else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
