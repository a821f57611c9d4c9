"""Docs that cannot rot: every code sample of the quick start, the SDK reference and the guides
runs against the real platform of the tests (curl through bash, JavaScript in Node.js, HTML
pages in headless Chromium), with the api base and a fresh tenant's keys in place of the
placeholders; an `output` block after a sample is the shape its answer must have."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import TenantContext, make_tenant
from playwright.async_api import Browser
from site_support import site_browser, site_dir, site_shop_dir, site_url

from store.settings import Settings
from web.site_build import DOCS_DIR, Sample, samples

__all__ = ["site_browser", "site_dir", "site_shop_dir", "site_url"]  # fixtures used by name

GUIDES = ("quickstart.md", "sdk.md", "events.md", "experiments.md")
LANGUAGES = {"sh": "shell", "js": "node", "html": "browser"}
# Values the output blocks pin down; every other value only needs to exist with its key.
PINNED = {
    "status",
    "accepted",
    "duplicates",
    "rejected",
    "strategy",
    "warnings",
    "metric",
    "lowConfidence",
    "sequential",
    "mismatch",
    "trafficSplit",
    "placementId",
}


def _runnable(source: str) -> list[tuple[Sample, Sample | None]]:
    """The runnable samples of one guide, each with the output block that follows it, if any."""
    found = samples(source)
    pairs = []
    for i, sample in enumerate(found):
        if sample.runnable:
            following = found[i + 1] if i + 1 < len(found) else None
            pairs.append((sample, following if following and "output" in following.flags else None))
    return pairs


def _substituted(code: str, *, api_url: str, tenant: TenantContext) -> str:
    """The sample as a reader runs it once they have put in their own address and keys."""
    for placeholder, value in {
        "http://localhost:5008": api_url,
        "rk_live_YOUR_READ_KEY": tenant.read_key,
        "rk_live_YOUR_WRITE_KEY": tenant.write_key,
        "YOUR_ACCESS_TOKEN": tenant.admin_token,
        "YOUR_TENANT_ID": tenant.tenant_id,
    }.items():
        code = code.replace(placeholder, value)
    assert "YOUR_" not in code, code
    return code


def shape_mismatches(expected: Any, actual: Any, where: str = "$") -> list[str]:
    """Where `actual` lacks the keys of `expected`, or differs on a pinned value."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        faults = []
        for key, value in expected.items():
            if key not in actual:
                faults.append(f"{where}.{key}: missing")
            elif key in PINNED and not isinstance(value, dict) and actual[key] != value:
                faults.append(f"{where}.{key}: {actual[key]!r} != {value!r}")
            else:
                faults.extend(shape_mismatches(value, actual[key], f"{where}.{key}"))
        return faults
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return [f"{where}: expected at least {len(expected)} items, got {actual!r}"]
        return [
            fault
            for i, item in enumerate(expected)
            for fault in shape_mismatches(item, actual[i], f"{where}[{i}]")
        ]
    return []


def _last_json(stdout: str) -> Any:
    """The last JSON document a sample printed (curl prints one answer per line or block)."""
    text = stdout.strip()
    for start in [i for i, ch in enumerate(text) if ch in "{["][::-1]:
        try:
            return json.loads(text[start:])
        except ValueError:
            continue
    raise AssertionError(f"the sample printed no JSON: {stdout[-500:]}")


def test_every_code_sample_of_the_guides_is_run_by_these_tests() -> None:
    # A new guide joins GUIDES, so its samples run too.
    assert {p.name for p in DOCS_DIR.glob("*.md")} == {*GUIDES, "index.md"}
    assert [s for s in samples("index.md") if s.language != "json"] == []
    for source in GUIDES:
        for sample in samples(source):
            if sample.language == "json":
                continue  # an answer, shown; `output` ones are checked below
            assert sample.runnable, f"{source}:{sample.line} {sample.language} is not runnable"
            assert sample.language in LANGUAGES, f"{source}:{sample.line}: {sample.language}"
    kinds = {s.language for source in GUIDES for s in samples(source) if s.runnable}
    assert kinds == set(LANGUAGES)


@dataclass(frozen=True)
class Shop:
    """A folder served over HTTP on its own origin, as a merchant's pages are."""

    folder: Path
    origin: str


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The merchant's pages: another origin than the api's, so CORS is the real one."""
    folder = tmp_path_factory.mktemp("shop")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Shop(folder, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def docs_tenant(db: asyncpg.Pool, migrated: Settings, shop: Shop) -> TenantContext:
    """A fresh tenant whose allowed origins include the pages the browser samples run on."""
    return await make_tenant(db, migrated, config={"allowedOrigins": [shop.origin]})


def _run_shell(code: str, *, setup: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"{setup}\n{code}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RECOMENGINE_")},
    )


@pytest.mark.parametrize("source", ["quickstart.md", "events.md", "experiments.md"])
def test_the_shell_samples_of_each_guide_run_against_the_platform(
    source: str,
    api_url: str,
    docs_tenant: TenantContext,
    worker_process: object,
    tmp_path: Path,
) -> None:
    setup = ""  # the `export` lines of the samples so far, as a reader's shell keeps them
    ran = 0
    for sample, output in _runnable(source):
        if sample.language != "sh":
            continue
        code = _substituted(sample.code, api_url=api_url, tenant=docs_tenant)
        deadline = time.monotonic() + 20
        while True:
            done = _run_shell(code, setup=setup, cwd=tmp_path)
            where = f"{source}:{sample.line}"
            assert done.returncode == 0, (where, done.stdout[-3000:], done.stderr[-2000:])
            faults = (
                shape_mismatches(json.loads(output.code), _last_json(done.stdout))
                if output is not None
                else []
            )
            # Models and trending follow the events within seconds: a read may ask again.
            if not faults or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert faults == [], (where, faults, done.stdout[-2000:])
        setup += "".join(line + "\n" for line in code.splitlines() if line.startswith("export "))
        ran += 1
    assert ran >= 3


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is a build requirement")
def test_the_javascript_samples_run_in_node(
    api_url: str, docs_tenant: TenantContext, worker_process: object, tmp_path: Path
) -> None:
    ran = 0
    for source in GUIDES:
        for sample, output in _runnable(source):
            if sample.language != "js":
                continue
            code = _substituted(sample.code, api_url=api_url, tenant=docs_tenant)
            script = tmp_path / f"sample-{ran}.mjs"
            script.write_text(code)
            done = subprocess.run(
                ["node", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
            )
            assert done.returncode == 0, (source, sample.line, done.stderr[-2000:])
            if output is not None:
                assert shape_mismatches(json.loads(output.code), _last_json(done.stdout)) == []
            ran += 1
    assert ran >= 1


def _keep(sink: list[str], error: object) -> None:
    """Collect a page's uncaught errors."""
    sink.append(str(error))


async def _seed(api_url: str, tenant: TenantContext) -> None:
    """The products and events of the quick start, then wait until trending answers."""
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1", timeout=30) as client:
        items = [
            {"productId": pid, "name": name, "category": "Drinks > Tea", "price": 4}
            for pid, name in (("tea-1", "Green tea"), ("tea-2", "Black tea"), ("mug-1", "Mug"))
        ]
        answer = await client.post(
            "/catalog/batch", headers=tenant.write_headers, json={"items": items}
        )
        assert answer.status_code == 202, answer.text
        events = [
            {"eventType": "product_viewed", "userId": f"v{i}", "productId": item["productId"]}
            for i, item in enumerate(items * 2)
        ]
        answer = await client.post(
            "/events/batch", headers=tenant.write_headers, json={"events": events}
        )
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = await client.get(
                "/recommendations",
                params={"userId": "u1", "strategy": "trending"},
                headers=tenant.read_headers,
            )
            if found.status_code == 200 and found.json()["data"]:
                return
            await asyncio.sleep(0.5)
    pytest.fail("trending never answered the seeded events")


async def test_the_html_samples_run_in_chromium_on_an_allowed_origin(
    site_browser: Browser,
    api_url: str,
    docs_tenant: TenantContext,
    worker_process: object,
    shop: Shop,
) -> None:
    await _seed(api_url, docs_tenant)
    ran = 0
    for source in GUIDES:
        for sample, _ in _runnable(source):
            if sample.language != "html":
                continue
            code = _substituted(sample.code, api_url=api_url, tenant=docs_tenant)
            document = f"<!doctype html><html lang='en'><title>Shop</title><body>{code}</body>"

            name = f"sample-{ran}.html"
            (shop.folder / name).write_text(document)
            context = await site_browser.new_context()
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", partial(_keep, errors))

            try:
                await page.goto(f"{shop.origin}/{name}")
                await page.wait_for_function("() => !!window.RecomEngine")
                if "data-sample-done" in code:
                    # The sample marks the page when its own awaited calls have all answered.
                    await page.wait_for_selector("body[data-sample-done]")
                    assert await page.locator("#picks li").count() >= 1
                await page.wait_for_function(
                    """() => [...document.querySelectorAll('[data-recomengine-placement]')]
                         .every(el => ['ready', 'empty', 'error'].includes(
                             el.getAttribute('data-recomengine-state')))"""
                )
                states = await page.eval_on_selector_all(
                    "[data-recomengine-state]",
                    "els => els.map(el => el.getAttribute('data-recomengine-state'))",
                )
                assert "error" not in states and "ready" in states, (source, sample.line, states)
                assert errors == [], (source, sample.line, errors)
            finally:
                await context.close()
            ran += 1
    assert ran >= 3
