"""Tenant isolation over every route the OpenAPI document lists: another tenant's token and keys,
given this tenant's real ids, are refused or answer about their own tenant, never leak a byte of
this tenant's data, and change nothing of it."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext

# Routes that take no tenant's data by any id: sign-in, the documents, health and the SDK file.
NOT_TENANT_DATA = re.compile(r"^/api/v1/auth/|^/api/v1/openapi\.json$|^/health$|^/ready$|^/v1/")
MUTATING = {"post", "put", "patch", "delete"}


@pytest.fixture
async def http(api_url: str) -> Any:
    """An async HTTP client for the api."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def seed(http: httpx.AsyncClient, victim: TenantContext, secret: str) -> dict[str, str]:
    """Give the tenant one of everything, each named with `secret`; returns its ids by the
    path parameter that takes them."""
    base = f"/api/v1/tenants/{victim.tenant_id}"
    admin, write = victim.admin_headers, victim.write_headers
    product = await http.post(
        "/api/v1/catalog",
        json={"productId": "vp-1", "name": f"{secret} boots", "category": "Shoes", "price": 90},
        headers=write,
    )
    assert product.status_code in (200, 201), product.text
    widget = await http.post(
        f"{base}/widgets",
        json={"placementId": "vhome", "layout": "grid", "ctaText": secret[:20]},
        headers=admin,
    )
    assert widget.status_code == 201, widget.text
    experiment = await http.post(
        f"{base}/experiments",
        json={
            "name": secret,
            "placementId": "vhome",
            "controlStrategy": "trending",
            "variantStrategy": "collaborative",
            "trafficSplit": 50,
            "metric": "ctr",
        },
        headers=admin,
    )
    assert experiment.status_code == 201, experiment.text
    key = await http.post(
        f"{base}/api-keys",
        json={"name": secret, "permission": "read", "environment": "live"},
        headers=admin,
    )
    assert key.status_code == 201, key.text
    event = await http.post(
        "/api/v1/events",
        json={"eventType": "product_viewed", "userId": "vu-1", "productId": "vp-1"},
        headers=write,
    )
    assert event.status_code == 202, event.text
    return {
        "tenant_id": victim.tenant_id,
        "product_id": "vp-1",
        "placement_id": "vhome",
        "experiment_id": str(experiment.json()["id"]),
        "key_id": str(key.json()["id"]),
        "user_id": "vu-1",
        "version": "20260101T000000-000000",
    }


async def snapshot(db: asyncpg.Pool, tenant_id: str) -> list[Any]:
    """What the tenant holds in PostgreSQL, in a comparable form."""
    tenant = uuid.UUID(tenant_id)
    found = []
    for query in (
        "SELECT name, status, config, deleted_at FROM tenants WHERE id = $1",
        "SELECT id, name, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY id",
        "SELECT product_id, name, price, available FROM catalog_items WHERE tenant_id = $1",
        "SELECT placement_id, cta_text, updated_at FROM widget_configs WHERE tenant_id = $1",
        "SELECT id, name, status FROM experiments WHERE tenant_id = $1",
        "SELECT count(*) FROM events WHERE tenant_id = $1",
    ):
        found.append([tuple(row.values()) for row in await db.fetch(query, tenant)])
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every route that may reach a tenant's data."""
    return [
        (method, path)
        for path, item in document["paths"].items()
        if not NOT_TENANT_DATA.search(path)
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


async def test_another_tenants_credentials_never_reach_this_tenants_data_on_any_route(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    other_tenant: TenantContext,
    db: asyncpg.Pool,
    worker_process: Process,
) -> None:
    secret = f"secret{uuid.uuid4().hex[:12]}"
    ids = await seed(http, tenant, secret)
    document = (await http.get("/api/v1/openapi.json")).json()
    # The intruder's own tenant gets the same product id: a route must answer about the
    # intruder's row, never the victim's.
    own = await http.post(
        "/api/v1/catalog",
        json={"productId": "vp-1", "name": "intruder boots", "category": "Shoes", "price": 1},
        headers=other_tenant.write_headers,
    )
    assert own.status_code in (200, 201), own.text
    # The owner does see the secret: its absence below means something.
    mine = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/experiments/{ids['experiment_id']}",
        headers=tenant.admin_headers,
    )
    assert secret in mine.text
    # The victim's event stored first: a late row would look like a change made by the matrix.
    for _ in range(100):
        if await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1", uuid.UUID(tenant.tenant_id)
        ):
            break
        await asyncio.sleep(0.1)
    before = await snapshot(db, tenant.tenant_id)
    tried = []
    for method, path in operations(document):
        names = re.findall(r"{(\w+)}", path)
        unknown = [name for name in names if name not in ids]
        assert not unknown, f"{method} {path}: give the matrix a victim id for {unknown}"
        url = path.format(**{name: ids[name] for name in names})
        query = {"userId": "vu-1", "productId": "vp-1", "placementId": "vhome"}
        # The intruder's token and its read_write key, on every route whatever it documents.
        for headers in (other_tenant.admin_headers, other_tenant.write_headers):
            response = await http.request(
                method.upper(),
                url,
                params=query if method == "get" else None,
                json={} if method in MUTATING and method != "delete" else None,
                headers=headers,
            )
            tried.append((method, path))
            assert secret not in response.text, f"{method.upper()} {url} leaked the victim's data"
            if "tenant_id" in names:
                # Someone else's tenant: refused, whatever the credential.
                assert response.status_code in (401, 403, 404), (method, url, response.text)
    assert len({path for _, path in tried}) >= 40  # the document's routes, not a handful
    assert await snapshot(db, tenant.tenant_id) == before
