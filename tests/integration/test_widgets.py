"""Widget configs over real HTTP: admin CRUD, validation, isolation, the cached public read and
the Redis projection the recommendations endpoint reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from store import keys
from store.widgets import reproject_widgets

DEFAULTS = {
    "layout": "grid",
    "columns": 4,
    "showPrice": True,
    "showRating": False,
    "ctaText": "View Product",
    "maxItems": 8,
    "theme": {"primaryColor": "#2563EB", "fontFamily": None},
    "strategy": None,
}
FULL = {
    "placementId": "home",
    "layout": "carousel",
    "columns": 5,
    "showPrice": False,
    "showRating": True,
    "ctaText": "Shop now",
    "maxItems": 12,
    "theme": {"primaryColor": "#112233", "fontFamily": '"Open Sans", Arial, sans-serif'},
    "strategy": "trending",
}


@pytest.fixture
async def aclient(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An asynchronous HTTP client for tests that also await Redis or PostgreSQL."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        yield http


def _widgets(tenant: TenantContext) -> str:
    return f"/api/v1/tenants/{tenant.tenant_id}/widgets"


def _config(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("createdAt", "updatedAt")}


async def _projection(redis: Redis, tenant: TenantContext, placement: str) -> Any:
    raw = await redis.get(keys.widget_config(tenant.tenant_id, placement))
    return None if raw is None else json.loads(raw)


def test_a_placement_created_with_only_its_id_gets_the_spec_defaults(
    client: httpx.Client, tenant: TenantContext
) -> None:
    response = client.post(
        _widgets(tenant), json={"placementId": "home"}, headers=tenant.admin_headers
    )
    assert response.status_code == 201, response.text
    assert _config(response.json()) == {"placementId": "home", **DEFAULTS}
    assert response.json()["createdAt"] and response.json()["updatedAt"]


def test_widget_crud_round_trips_through_get_list_put_and_delete(
    client: httpx.Client, tenant: TenantContext
) -> None:
    headers = tenant.admin_headers
    assert client.post(_widgets(tenant), json=FULL, headers=headers).status_code == 201
    client.post(_widgets(tenant), json={"placementId": "cart"}, headers=headers)

    got = client.get(f"{_widgets(tenant)}/home", headers=headers)
    assert got.status_code == 200 and _config(got.json()) == FULL

    listed = client.get(_widgets(tenant), headers=headers).json()
    assert [w["placementId"] for w in listed["data"]] == ["cart", "home"]
    assert listed["nextCursor"] is None

    replaced = client.put(
        f"{_widgets(tenant)}/home", json={"layout": "list", "columns": 2}, headers=headers
    )
    assert replaced.status_code == 200, replaced.text
    # PUT replaces the whole config: what it leaves out returns to the defaults.
    assert _config(replaced.json()) == {
        "placementId": "home",
        **DEFAULTS,
        "layout": "list",
        "columns": 2,
    }
    assert client.get(f"{_widgets(tenant)}/home", headers=headers).json() == replaced.json()

    assert client.delete(f"{_widgets(tenant)}/home", headers=headers).status_code == 204
    assert client.get(f"{_widgets(tenant)}/home", headers=headers).status_code == 404
    assert client.delete(f"{_widgets(tenant)}/home", headers=headers).status_code == 404
    assert client.put(f"{_widgets(tenant)}/home", json={}, headers=headers).status_code == 404


def test_the_widget_list_pages_with_a_cursor(client: httpx.Client, tenant: TenantContext) -> None:
    for placement in ("p1", "p2", "p3"):
        client.post(_widgets(tenant), json={"placementId": placement}, headers=tenant.admin_headers)
    first = client.get(_widgets(tenant), params={"limit": 2}, headers=tenant.admin_headers).json()
    assert [w["placementId"] for w in first["data"]] == ["p1", "p2"]
    second = client.get(
        _widgets(tenant),
        params={"limit": 2, "cursor": first["nextCursor"]},
        headers=tenant.admin_headers,
    ).json()
    assert [w["placementId"] for w in second["data"]] == ["p3"]
    assert second["nextCursor"] is None


def test_posting_an_existing_placement_is_a_conflict_and_keeps_the_first(
    client: httpx.Client, tenant: TenantContext
) -> None:
    client.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)
    again = client.post(
        _widgets(tenant), json={"placementId": "home", "columns": 2}, headers=tenant.admin_headers
    )
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert (
        client.get(f"{_widgets(tenant)}/home", headers=tenant.admin_headers).json()["columns"] == 5
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"layout": "masonry"}, "layout"),
        ({"columns": 1}, "columns"),
        ({"columns": 7}, "columns"),
        ({"columns": "4"}, "columns"),
        ({"maxItems": 3}, "maxItems"),
        ({"maxItems": 21}, "maxItems"),
        ({"showPrice": "yes"}, "showPrice"),
        ({"showRating": 1}, "showRating"),
        ({"ctaText": ""}, "ctaText"),
        ({"ctaText": "x" * 41}, "ctaText"),
        ({"ctaText": "<b>Buy</b>"}, "ctaText"),
        ({"theme": {"primaryColor": "blue"}}, "theme.primaryColor"),
        ({"theme": {"primaryColor": "#12345"}}, "theme.primaryColor"),
        ({"theme": {"fontFamily": "url(https://x.example/f.woff)"}}, "theme.fontFamily"),
        ({"theme": {"fontFamily": "Arial; color: red"}}, "theme.fontFamily"),
        ({"theme": {"fontFamily": "Arial} a {b"}}, "theme.fontFamily"),
        ({"theme": {"fontFamily": "Arial<x>"}}, "theme.fontFamily"),
        ({"theme": {"shadow": True}}, "theme.shadow"),
        ({"strategy": "random"}, "strategy"),
        ({"placementId": "home page"}, "placementId"),
        ({"placementId": "x" * 129}, "placementId"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_every_widget_rule_is_enforced_with_a_field_error_and_nothing_stored(
    client: httpx.Client, tenant: TenantContext, change: dict[str, Any], field: str
) -> None:
    body = {"placementId": "home", **change}
    response = client.post(_widgets(tenant), json=body, headers=tenant.admin_headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]
    assert client.get(_widgets(tenant), headers=tenant.admin_headers).json()["data"] == []


def test_a_put_breaking_a_rule_changes_nothing(client: httpx.Client, tenant: TenantContext) -> None:
    client.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)
    response = client.put(
        f"{_widgets(tenant)}/home", json={"columns": 9}, headers=tenant.admin_headers
    )
    assert response.status_code == 422
    mismatch = client.put(
        f"{_widgets(tenant)}/home", json={"placementId": "other"}, headers=tenant.admin_headers
    )
    assert mismatch.status_code == 422
    stored = client.get(f"{_widgets(tenant)}/home", headers=tenant.admin_headers).json()
    assert _config(stored) == FULL


def test_malformed_json_is_a_400(client: httpx.Client, tenant: TenantContext) -> None:
    response = client.post(
        _widgets(tenant),
        content=b"{not json",
        headers={**tenant.admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_another_tenants_widgets_are_not_found(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    client.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)
    foreign = other_tenant.admin_headers
    assert client.get(_widgets(tenant), headers=foreign).status_code == 404
    assert client.get(f"{_widgets(tenant)}/home", headers=foreign).status_code == 404
    assert client.put(f"{_widgets(tenant)}/home", json={}, headers=foreign).status_code == 404
    assert client.delete(f"{_widgets(tenant)}/home", headers=foreign).status_code == 404
    assert (
        client.post(_widgets(tenant), json={"placementId": "x"}, headers=foreign).status_code == 404
    )
    # The other tenant's API key reads its own (absent) placement, never this one.
    assert client.get("/api/v1/widgets/home", headers=other_tenant.read_headers).status_code == 404
    assert client.get(f"{_widgets(tenant)}/home", headers=tenant.admin_headers).status_code == 200


def test_widget_routes_need_an_admin_token(client: httpx.Client, tenant: TenantContext) -> None:
    assert client.get(_widgets(tenant)).status_code == 401
    assert client.get(_widgets(tenant), headers=tenant.read_headers).status_code == 401


async def test_a_suspended_tenant_can_read_but_not_change_its_widgets(
    aclient: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    await aclient.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)
    await db.execute("UPDATE tenants SET status = 'suspended' WHERE id = $1", tenant.tenant_id)
    headers = tenant.admin_headers
    assert (await aclient.get(f"{_widgets(tenant)}/home", headers=headers)).status_code == 200
    assert (
        await aclient.post(_widgets(tenant), json={"placementId": "b"}, headers=headers)
    ).status_code == 403
    assert (
        await aclient.put(f"{_widgets(tenant)}/home", json={}, headers=headers)
    ).status_code == 403
    assert (await aclient.delete(f"{_widgets(tenant)}/home", headers=headers)).status_code == 403
    assert _config((await aclient.get(f"{_widgets(tenant)}/home", headers=headers)).json()) == FULL


def test_the_api_key_read_is_cacheable_for_60_seconds_with_an_etag_and_304(
    client: httpx.Client, tenant: TenantContext
) -> None:
    client.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)
    response = client.get("/api/v1/widgets/home", headers=tenant.read_headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=60"
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert _config(response.json()) == FULL

    unchanged = client.get(
        "/api/v1/widgets/home", headers={**tenant.read_headers, "If-None-Match": etag}
    )
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag

    client.put(f"{_widgets(tenant)}/home", json={"columns": 3}, headers=tenant.admin_headers)
    changed = client.get(
        "/api/v1/widgets/home", headers={**tenant.read_headers, "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag and changed.json()["columns"] == 3


def test_the_api_key_read_of_an_unknown_placement_is_404(
    client: httpx.Client, tenant: TenantContext
) -> None:
    response = client.get("/api/v1/widgets/nowhere", headers=tenant.read_headers)
    assert response.status_code == 404
    assert client.get("/api/v1/widgets/home").status_code == 401


async def test_every_change_is_projected_to_redis(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    assert await _projection(redis, tenant, "home") is None
    created = (await aclient.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)).json()
    assert await _projection(redis, tenant, "home") == created

    replaced = (
        await aclient.put(
            f"{_widgets(tenant)}/home",
            json={"strategy": "collaborative", "maxItems": 20},
            headers=tenant.admin_headers,
        )
    ).json()
    projected = await _projection(redis, tenant, "home")
    assert projected == replaced
    assert projected["strategy"] == "collaborative" and projected["maxItems"] == 20

    await aclient.delete(f"{_widgets(tenant)}/home", headers=tenant.admin_headers)
    assert await _projection(redis, tenant, "home") is None


async def test_the_public_read_is_served_from_the_projection(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    await aclient.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)
    key = keys.widget_config(tenant.tenant_id, "home")
    # Only the projection says 6 columns: an answer of 6 proves PostgreSQL was not read.
    marked = {**(await _projection(redis, tenant, "home")), "columns": 6}
    await redis.set(key, json.dumps(marked))
    assert (await aclient.get("/api/v1/widgets/home", headers=tenant.read_headers)).json()[
        "columns"
    ] == 6


async def test_a_lost_projection_is_rebuilt_from_postgresql_on_the_next_read(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    created = (await aclient.post(_widgets(tenant), json=FULL, headers=tenant.admin_headers)).json()
    await redis.delete(keys.widget_config(tenant.tenant_id, "home"))
    response = await aclient.get("/api/v1/widgets/home", headers=tenant.read_headers)
    assert response.status_code == 200 and response.json() == created
    assert await _projection(redis, tenant, "home") == created


def test_the_openapi_document_lists_every_widget_route(client: httpx.Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"get", "post"} <= paths["/api/v1/tenants/{tenant_id}/widgets"].keys()
    assert {"get", "put", "delete"} <= paths[
        "/api/v1/tenants/{tenant_id}/widgets/{placement_id}"
    ].keys()
    assert "get" in paths["/api/v1/widgets/{placement_id}"]


async def test_reprojecting_a_tenant_restores_every_lost_widget_projection(
    aclient: httpx.AsyncClient, tenant: TenantContext, redis: Redis, db: asyncpg.Pool
) -> None:
    made = []
    for placement in ("home", "cart"):
        response = await aclient.post(
            _widgets(tenant), json={"placementId": placement}, headers=tenant.admin_headers
        )
        made.append(response.json())
    for config in made:
        await redis.delete(keys.widget_config(tenant.tenant_id, config["placementId"]))
    assert await reproject_widgets(db, redis, tenant_id=tenant.tenant_id) == 2
    for config in made:
        assert await _projection(redis, tenant, config["placementId"]) == config
