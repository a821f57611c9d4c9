"""Fixtures and helpers of the dashboard's browser tests: the real web process (built files and
the api proxy) in front of the test api, one headless Chromium, axe-core from the dashboard's
packages.

Not a conftest.py: a second conftest.py under tests/ would take the module name `conftest` from
tests/conftest.py, which every test imports its helpers from. Test modules import these
fixtures by name."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TEST_PASSWORD, Process, Services, settings_env, wait_for
from bench.harness import CHROMIUM, CHROMIUM_ARGS
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from cli.localservices import free_port
from store.settings import Settings

ARTEFACTS = ROOT / ".artefacts" / "dashboard"
AXE = ROOT / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
SHOP_PAGE = "<!doctype html><title>Demo shop</title><h1>Demo shop</h1>"


@pytest.fixture(scope="session")
def shop_dir(services: Services) -> Path:
    """A shop folder like the one the demo command writes."""
    folder = services.workdir / "shop"
    (folder / "css").mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(SHOP_PAGE)
    (folder / "css" / "shop.css").write_text("body { color: black; }")
    return folder


@pytest.fixture(scope="session")
def web_url(api_url: str, migrated: Settings, services: Services, shop_dir: Path) -> Any:
    """The `recomengine web` process on a free port, proxying to the test api."""
    if not (ROOT / "dashboard" / "dist" / "index.html").is_file():
        pytest.fail("dashboard/dist is not built: run scripts/bootstrap.sh")
    port = free_port()
    process = Process(
        ["web", "--port", str(port), "--api-url", api_url, "--shop", str(shop_dir)],
        settings_env(migrated),
        services.workdir / "web.log",
    ).start()
    try:
        wait_for(f"http://127.0.0.1:{port}/login", timeout=30, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def browser(web_url: str) -> AsyncIterator[Browser]:
    """One headless Debian Chromium for every browser test.

    It asks for the web process first so that the schema migration (Alembic runs its own
    asyncio.run, which leaves the thread without a current loop) happens before pytest-asyncio
    makes the session loop current; sync fixtures elsewhere rely on that loop."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser, web_url: str) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (no cookies) for one test."""
    made = await browser.new_context(base_url=web_url, viewport={"width": 1280, "height": 900})
    made.set_default_timeout(20_000)
    yield made
    await made.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page of that profile; a failing test leaves its screenshot among the artefacts."""
    opened = await context.new_page()
    yield opened
    await opened.close()


async def sign_in(page: Page, email: str, password: str = TEST_PASSWORD) -> None:
    """Sign in through the login form and wait for the overview."""
    await page.goto("/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard")


async def screenshot(page: Page, name: str) -> None:
    """Keep a full-page picture of the current page among the artefacts (not committed)."""
    await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current page."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
