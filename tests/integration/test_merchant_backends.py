"""Merchant backends over real HTTP, as the key model says: a read key queries its tenant's
analytics, a read_write key manages its tenant's experiments, through the admin routes and
their checks, and no key ever reaches another tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import TenantContext

EXPERIMENT = {
    "name": "Trending vs collaborative on home",
    "placementId": "home",
    "controlStrategy": "trending",
    "variantStrategy": "collaborative",
    "trafficSplit": 50,
    "metric": "ctr",
}
ANALYTICS = ["overview", "timeseries", "top-products", "breakdown?by=placement", "funnel"]


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


async def test_a_read_key_queries_its_tenants_analytics_like_the_admin(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    for path in ANALYTICS:
        url = f"/api/v1/tenants/{tenant.tenant_id}/analytics/{path}"
        by_key = await http.get(url, headers=tenant.read_headers)
        by_admin = await http.get(url, headers=tenant.admin_headers)
        assert by_key.status_code == 200, (path, by_key.text)
        assert by_key.json().keys() == by_admin.json().keys()
        assert "RateLimit-Remaining" in by_key.headers
    export = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/analytics/export?format=csv",
        headers=tenant.read_headers,
    )
    assert export.status_code == 200
    assert export.text.startswith("day,")


async def test_a_key_gets_a_bare_404_for_another_tenants_analytics_and_experiments(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    base = f"/api/v1/tenants/{other_tenant.tenant_id}"
    _problem(await http.get(f"{base}/analytics/overview", headers=tenant.read_headers), 404)
    _problem(await http.get(f"{base}/analytics/overview", headers=tenant.write_headers), 404)
    _problem(await http.get(f"{base}/experiments", headers=tenant.write_headers), 404)
    _problem(
        await http.post(f"{base}/experiments", json=EXPERIMENT, headers=tenant.write_headers), 404
    )
    listed = await http.get(f"{base}/experiments", headers=other_tenant.admin_headers)
    assert listed.json()["data"] == []


async def test_a_read_write_key_manages_its_tenants_experiments(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    base = f"/api/v1/tenants/{tenant.tenant_id}/experiments"
    created = await http.post(base, json=EXPERIMENT, headers=tenant.write_headers)
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert experiment["status"] == "draft"
    started = await http.patch(
        f"{base}/{experiment['id']}", json={"status": "running"}, headers=tenant.write_headers
    )
    assert started.status_code == 200
    # The same checks as the admin's: a second running experiment on the placement is a 409.
    second = await http.post(base, json=EXPERIMENT, headers=tenant.write_headers)
    conflict = await http.patch(
        f"{base}/{second.json()['id']}", json={"status": "running"}, headers=tenant.write_headers
    )
    _problem(conflict, 409)
    results = await http.get(f"{base}/{experiment['id']}/results", headers=tenant.write_headers)
    assert results.status_code == 200
    assert set(results.json()["variants"]) == {"control", "variant"}
    # The admin sees what the backend made.
    seen = await http.get(base, headers=tenant.admin_headers)
    assert {e["id"] for e in seen.json()["data"]} == {experiment["id"], second.json()["id"]}


async def test_a_read_key_may_not_manage_experiments(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    base = f"/api/v1/tenants/{tenant.tenant_id}/experiments"
    _problem(await http.post(base, json=EXPERIMENT, headers=tenant.read_headers), 403)
    _problem(await http.get(base, headers=tenant.read_headers), 403)


async def test_a_bad_key_or_none_is_a_401_and_usage_stays_for_admins(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    url = f"/api/v1/tenants/{tenant.tenant_id}/analytics/overview"
    _problem(await http.get(url), 401)
    _problem(await http.get(url, headers={"X-API-Key": "rk_live_nope"}), 401)
    bearer_key = {"Authorization": f"Bearer {tenant.read_key}"}
    assert (await http.get(url, headers=bearer_key)).status_code == 200
    # Analytics across all of an admin's tenants stays an admin's call.
    _problem(await http.get("/api/v1/analytics/overview", headers=tenant.read_headers), 401)


async def test_a_suspended_tenants_key_reads_nothing_and_writes_nothing(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    suspended = await http.patch(
        f"/api/v1/tenants/{tenant.tenant_id}",
        json={"status": "suspended"},
        headers=tenant.admin_headers,
    )
    assert suspended.status_code == 200
    base = f"/api/v1/tenants/{tenant.tenant_id}"
    _problem(await http.get(f"{base}/analytics/overview", headers=tenant.read_headers), 403)
    _problem(
        await http.post(f"{base}/experiments", json=EXPERIMENT, headers=tenant.write_headers), 403
    )
