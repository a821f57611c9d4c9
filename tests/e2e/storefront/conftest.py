"""Browser fixtures of the storefront tests: one headless Chromium (Debian's) for the session
and a throwaway static HTTP server on another origin than the api, so CORS is real."""

from __future__ import annotations

import functools
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.harness import CHROMIUM, CHROMIUM_ARGS


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass(frozen=True)
class StaticSite:
    """A folder served over HTTP at `origin`; pages are written into it by the tests."""

    root: Path
    origin: str

    def page(self, name: str, html: str) -> str:
        """Write a page and return its URL."""
        (self.root / name).write_text(html, encoding="utf-8")
        return f"{self.origin}/{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_folder(root: Path, host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, str]:
    """A static server for `root` on a free port, running in a daemon thread."""
    port = _free_port()
    server = ThreadingHTTPServer(
        (host, port), functools.partial(_QuietHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="session")
def static_site() -> Iterator[StaticSite]:
    """The storefront's own origin (another port than the api's)."""
    with tempfile.TemporaryDirectory(prefix="recomengine-shop-") as folder:
        server, origin = serve_folder(Path(folder))
        try:
            yield StaticSite(Path(folder), origin)
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for every storefront test."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Watched:
    """A page and what went wrong on it."""

    page: Page
    errors: list[str]
    dialogs: list[str]


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (own storage and cache) per test."""
    ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def watched(context: BrowserContext) -> Watched:
    """A page whose uncaught errors and dialogs are recorded (dialogs are dismissed)."""
    page = await context.new_page()
    found = Watched(page, [], [])
    page.on("pageerror", lambda error: found.errors.append(str(error)))

    async def dismiss(dialog: Any) -> None:
        found.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return found
