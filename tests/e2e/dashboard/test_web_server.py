"""The web process over HTTP: SPA fallback, cache headers of hashed assets and of the index,
the same-origin api proxy (cookies and streaming), the demo shop folder, no traversal."""

from __future__ import annotations

import re

import httpx
from dashboard_browser import SHOP_PAGE, shop_dir, web_url

from conftest import TEST_PASSWORD, TenantContext

__all__ = ["shop_dir", "web_url"]  # fixtures used by name below


def test_unknown_routes_get_the_app_index_without_caching(web_url: str) -> None:
    # "/" is the public landing page once it is built (tests/e2e/site/).
    for path in ("/dashboard", "/dashboard/tenants/some-id/analytics", "/no/such/page"):
        answer = httpx.get(web_url + path)
        assert answer.status_code == 200, path
        assert '<div id="root">' in answer.text
        assert answer.headers["cache-control"] == "no-cache"


def test_hashed_assets_are_cached_for_a_year_and_missing_ones_are_404(web_url: str) -> None:
    index = httpx.get(web_url + "/dashboard").text
    scripts = re.findall(r'src="(/assets/[^"]+\.js)"', index)
    assert scripts, index
    answer = httpx.get(web_url + scripts[0])
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in answer.headers["content-type"]
    assert httpx.get(web_url + "/assets/index-doesnotexist.js").status_code == 404


def test_text_files_are_gzipped_for_clients_that_accept_it(web_url: str) -> None:
    index = httpx.get(web_url + "/dashboard").text
    script = re.findall(r'src="(/assets/[^"]+\.js)"', index)[0]
    plain = httpx.get(web_url + script, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    packed = httpx.get(web_url + script, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == plain.content  # httpx decodes it
    assert int(packed.headers["content-length"]) < len(plain.content) / 2


def test_the_api_is_proxied_same_origin_with_its_cookies_and_problems(
    web_url: str, tenant: TenantContext
) -> None:
    with httpx.Client(base_url=web_url, timeout=30) as browser:
        login = browser.post(
            "/api/v1/auth/login", json={"email": tenant.admin_email, "password": TEST_PASSWORD}
        )
        assert login.status_code == 200
        assert browser.cookies.get("recomengine_refresh")
        csrf = browser.cookies.get("recomengine_csrf") or ""
        refreshed = browser.post("/api/v1/auth/refresh", headers={"X-CSRF-Token": csrf})
        assert refreshed.status_code == 200
        tenants = browser.get("/api/v1/tenants", headers=tenant.admin_headers)
        assert tenants.status_code == 200
        assert [t["id"] for t in tenants.json()["data"]] == [tenant.tenant_id]
        refused = browser.get("/api/v1/tenants")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_the_event_stream_flows_through_the_proxy(web_url: str, tenant: TenantContext) -> None:
    with (
        httpx.Client(base_url=web_url, timeout=30) as browser,
        browser.stream(
            "GET",
            f"/api/v1/tenants/{tenant.tenant_id}/events/stream",
            headers=tenant.admin_headers,
        ) as stream,
    ):
        assert stream.status_code == 200
        first = next(stream.iter_text())
    assert "event: ready" in first


def test_the_shop_folder_is_served_under_shop_and_nothing_outside_it(
    web_url: str, shop_dir: object
) -> None:
    assert httpx.get(web_url + "/shop/").text == SHOP_PAGE
    assert httpx.get(web_url + "/shop").text == SHOP_PAGE
    css = httpx.get(web_url + "/shop/css/shop.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
    assert httpx.get(web_url + "/shop/missing.html").status_code == 404
    assert httpx.get(web_url + "/shop/%2e%2e/web.log").status_code == 404
    assert httpx.get(web_url + "/shop/..%2f..%2fetc/passwd").status_code == 404
