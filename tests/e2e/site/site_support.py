"""Fixtures and helpers of the public pages' tests: the pages built from the test api's served
OpenAPI document, the real web process serving them beside the dashboard, one headless
Chromium, axe-core from the dashboard's packages.

Not a conftest.py (see tests/e2e/dashboard/dashboard_browser.py): test modules import these
fixtures by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, Process, Services, settings_env, wait_for
from playwright.async_api import Browser, async_playwright

from bench.harness import CHROMIUM, CHROMIUM_ARGS
from cli.localservices import free_port
from store.settings import Settings
from web.site_build import PAGES, Page, build_site

AXE = ROOT / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
BASE_URL = "https://recomengine.example"
SHOP_INDEX = "<!doctype html><html lang='en'><title>Demo shop</title><h1>Demo shop</h1></html>"


@pytest.fixture(scope="session")
def site_dir(api_url: str, services: Services) -> Path:
    """The public pages, built the way `recomengine site` builds them, from the document the
    running api serves."""
    served = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30)
    served.raise_for_status()
    output = services.workdir / "site"
    build_site(openapi=served.json(), output=output, base_url=BASE_URL)
    return output


@pytest.fixture(scope="session")
def site_shop_dir(services: Services) -> Path:
    """A demo shop folder; tests add or remove the demo tenant's key file in it."""
    folder = services.workdir / "site-shop"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(SHOP_INDEX)
    return folder


@pytest.fixture(scope="session")
def site_url(
    api_url: str, migrated: Settings, services: Services, site_dir: Path, site_shop_dir: Path
) -> Iterator[str]:
    """`recomengine web` serving the built pages, the dashboard and the shop, proxying the api."""
    port = free_port()
    process = Process(
        [
            "web",
            "--port",
            str(port),
            "--api-url",
            api_url,
            "--shop",
            str(site_shop_dir),
            "--site",
            str(site_dir),
        ],
        settings_env(migrated),
        services.workdir / "web-site.log",
    ).start()
    try:
        wait_for(f"http://127.0.0.1:{port}/pricing", timeout=30, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def site_browser(site_url: str) -> AsyncIterator[Browser]:
    """One headless Debian Chromium for the public pages' tests (after the web process, so
    that migrations ran before the session loop became current)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


def public_pages() -> list[Page]:
    """Every public page the build makes."""
    return list(PAGES)


async def serious_violations(page: Any) -> list[dict[str, Any]]:
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
