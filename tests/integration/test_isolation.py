"""Tenant isolation: another admin's tenant and key ids are 404 everywhere and change nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from conftest import TenantContext

TENANT_BODY = {"name": "Hijacked", "status": "suspended", "config": {"currency": "EUR"}}
KEY_BODY = {"name": "intruder", "permission": "read_write", "environment": "live"}


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async HTTP client for the api."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def _snapshot(db: asyncpg.Pool, tenant_id: str) -> tuple:
    tenant = await db.fetchrow(
        "SELECT name, status, config, updated_at, deleted_at FROM tenants WHERE id = $1",
        uuid.UUID(tenant_id),
    )
    keys = await db.fetch(
        "SELECT id, name, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY id",
        uuid.UUID(tenant_id),
    )
    return tuple(tenant.values()), [tuple(k.values()) for k in keys]


async def _key_ids(db: asyncpg.Pool, tenant_id: str) -> list[str]:
    rows = await db.fetch("SELECT id FROM api_keys WHERE tenant_id = $1", uuid.UUID(tenant_id))
    return [str(row["id"]) for row in rows]


def _assert_bare_404(response: httpx.Response, *secrets: str) -> None:
    assert response.status_code == 404, (response.request.method, response.request.url)
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert "data" not in body and "usage" not in body and "key" not in body
    body.pop("instance", None)  # the caller's own path, echoed back
    for secret in secrets:
        assert secret not in str(body)


async def test_another_admins_tenant_and_key_ids_are_404_on_every_endpoint_and_change_nothing(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
) -> None:
    victim = tenant
    intruder = other_tenant.admin_headers
    victim_key = (await _key_ids(db, victim.tenant_id))[0]
    before = await _snapshot(db, victim.tenant_id)
    base = f"/api/v1/tenants/{victim.tenant_id}"
    calls = [
        ("GET", base, None),
        ("PUT", base, TENANT_BODY),
        ("PATCH", base, TENANT_BODY),
        ("PATCH", base, {"status": "active"}),
        ("DELETE", base, None),
        ("GET", f"{base}/api-keys", None),
        ("POST", f"{base}/api-keys", KEY_BODY),
        ("DELETE", f"{base}/api-keys/{victim_key}", None),
    ]
    for method, url, body in calls:
        response = await http.request(method, url, json=body, headers=intruder)
        _assert_bare_404(response, "Test Shop", victim_key)
    assert await _snapshot(db, victim.tenant_id) == before
    listed = (await http.get("/api/v1/tenants", headers=intruder)).json()["data"]
    assert victim.tenant_id not in {t["id"] for t in listed}


async def test_a_key_of_another_tenant_cannot_be_revoked_through_ones_own_tenant(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
) -> None:
    victim_keys = await _key_ids(db, tenant.tenant_id)
    before = await _snapshot(db, tenant.tenant_id)
    for key_id in victim_keys:
        response = await http.delete(
            f"/api/v1/tenants/{other_tenant.tenant_id}/api-keys/{key_id}",
            headers=other_tenant.admin_headers,
        )
        _assert_bare_404(response, key_id)
    assert await _snapshot(db, tenant.tenant_id) == before


async def test_the_same_admin_cannot_reach_a_deleted_tenant_either(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    base = f"/api/v1/tenants/{tenant.tenant_id}"
    assert (await http.delete(base, headers=tenant.admin_headers)).status_code == 204
    key_id = (await _key_ids(db, tenant.tenant_id))[0]
    for method, url, body in [
        ("GET", base, None),
        ("PATCH", base, {"status": "active"}),
        ("GET", f"{base}/api-keys", None),
        ("POST", f"{base}/api-keys", KEY_BODY),
        ("DELETE", f"{base}/api-keys/{key_id}", None),
    ]:
        response = await http.request(method, url, json=body, headers=tenant.admin_headers)
        _assert_bare_404(response, key_id)


@pytest.mark.parametrize("bad_id", ["x", "null", "%20", "00000000-0000-0000-0000", "1' OR '1'='1"])
async def test_malformed_ids_are_404_not_500(
    http: httpx.AsyncClient, tenant: TenantContext, bad_id: str
) -> None:
    own = f"/api/v1/tenants/{tenant.tenant_id}"
    for method, url, body in [
        ("GET", f"/api/v1/tenants/{bad_id}", None),
        ("PATCH", f"/api/v1/tenants/{bad_id}", {"name": "x"}),
        ("DELETE", f"/api/v1/tenants/{bad_id}", None),
        ("GET", f"/api/v1/tenants/{bad_id}/api-keys", None),
        ("POST", f"/api/v1/tenants/{bad_id}/api-keys", KEY_BODY),
        ("DELETE", f"{own}/api-keys/{bad_id}", None),
    ]:
        response = await http.request(method, url, json=body, headers=tenant.admin_headers)
        _assert_bare_404(response)


async def test_every_tenant_route_needs_an_admin_token(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    base = f"/api/v1/tenants/{tenant.tenant_id}"
    for method, url in [
        ("GET", "/api/v1/tenants"),
        ("POST", "/api/v1/tenants"),
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("GET", f"{base}/api-keys"),
        ("POST", f"{base}/api-keys"),
    ]:
        for headers in ({}, tenant.read_headers, {"Authorization": f"Bearer {tenant.write_key}"}):
            response = await http.request(method, url, json={"name": "x"}, headers=headers)
            assert response.status_code == 401, (method, url, headers)
