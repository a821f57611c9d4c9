"""The catalog over real HTTP: upsert, read, replace, delete, search, paging, rules, isolation."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from conftest import TenantContext, make_tenant
from redis.asyncio import Redis

from store import keys
from store.settings import Settings


def product(product_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """A valid product body with `changes` applied."""
    body: dict[str, Any] = {
        "productId": product_id or f"sku-{uuid.uuid4().hex[:8]}",
        "name": "Blue ceramic mug",
        "category": "kitchen",
        "price": 12.5,
        "currency": "EUR",
        "imageUrl": "https://cdn.example.com/mug.png",
        "url": "https://shop.example.com/mug",
        "description": "Holds coffee.",
        "attributes": {"color": "blue"},
        "available": True,
    }
    body.update(changes)
    return body


def post(client: httpx.Client, tenant: TenantContext, body: Any) -> httpx.Response:
    """POST /catalog with the tenant's read_write key."""
    return client.post("/api/v1/catalog", json=body, headers=tenant.write_headers)


def remove(client: httpx.Client, tenant: TenantContext, product_id: str) -> httpx.Response:
    """DELETE /catalog/{productId} with the tenant's read_write key."""
    return client.delete(
        f"/api/v1/catalog/{quote(product_id, safe='')}", headers=tenant.write_headers
    )


def test_posting_a_new_product_creates_it_with_201_and_the_item(
    client: httpx.Client, tenant: TenantContext
) -> None:
    response = post(client, tenant, product("mug-1"))
    assert response.status_code == 201
    body = response.json()
    assert body["productId"] == "mug-1" and body["price"] == 12.5 and body["currency"] == "EUR"
    assert body["available"] is True and body["createdAt"] and body["updatedAt"]
    again = client.get("/api/v1/catalog/mug-1", headers=tenant.read_headers)
    assert again.status_code == 200 and again.json() == body


def test_posting_an_existing_product_updates_it_with_200(
    client: httpx.Client, tenant: TenantContext
) -> None:
    first = post(client, tenant, product("mug-2"))
    second = post(client, tenant, product("mug-2", name="Red mug", price=9))
    assert (first.status_code, second.status_code) == (201, 200)
    body = second.json()
    assert body["name"] == "Red mug" and body["price"] == 9
    assert body["createdAt"] == first.json()["createdAt"]


def test_currency_defaults_to_the_tenant_config_currency(
    client: httpx.Client, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    response = post(client, tenant, {"productId": "plain", "name": "Plain", "price": 1})
    assert response.json()["currency"] == "USD"


async def test_currency_defaults_to_the_configured_currency_of_the_tenant(
    client: httpx.Client, db: asyncpg.Pool, migrated: Settings
) -> None:
    yen_shop = await make_tenant(db, migrated, config={"currency": "JPY"})
    response = post(client, yen_shop, {"productId": "tea", "name": "Tea", "price": 300})
    assert response.status_code == 201 and response.json()["currency"] == "JPY"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"productId": "x" * 257}, "productId"),
        ({"name": None}, "name"),
        ({"price": -1}, "price"),
        ({"currency": "dollars"}, "currency"),
        ({"url": "javascript:alert(document.cookie)"}, "url"),
        ({"imageUrl": "javascript:alert(1)"}, "imageUrl"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"imageUrl": "file:///etc/passwd"}, "imageUrl"),
        ({"attributes": {"blob": "x" * 9 * 1024}}, "attributes"),
        ({"attributes": ["a", "list"]}, "attributes"),
        ({"description": "d" * 11 * 1024}, "description"),
    ],
)
async def test_a_product_breaking_a_rule_is_a_422_and_nothing_is_stored(
    client: httpx.Client,
    tenant: TenantContext,
    db: asyncpg.Pool,
    changes: dict[str, Any],
    field: str,
) -> None:
    body = product("bad-one", **changes)
    if body.get("name") is None:
        del body["name"]
    response = post(client, tenant, body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {error["field"] for error in response.json()["errors"]}
    stored = await db.fetchval(
        "SELECT count(*) FROM catalog_items WHERE tenant_id = $1", uuid.UUID(tenant.tenant_id)
    )
    assert stored == 0


def test_malformed_json_is_a_400_problem(client: httpx.Client, tenant: TenantContext) -> None:
    response = client.post(
        "/api/v1/catalog",
        content=b'{"productId": ',
        headers={**tenant.write_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_read_key_cannot_write_the_catalog(client: httpx.Client, tenant: TenantContext) -> None:
    assert post(client, tenant, product("p-ro")).status_code == 201
    headers = tenant.read_headers
    attempts = [
        client.post("/api/v1/catalog", json=product("p-new"), headers=headers),
        client.post("/api/v1/catalog/batch", json={"items": [product()]}, headers=headers),
        client.put("/api/v1/catalog/p-ro", json=product("p-ro", name="X"), headers=headers),
        client.delete("/api/v1/catalog/p-ro", headers=headers),
    ]
    assert [r.status_code for r in attempts] == [403, 403, 403, 403]
    assert client.get("/api/v1/catalog/p-ro", headers=headers).json()["name"] == "Blue ceramic mug"


def test_no_key_is_a_401(client: httpx.Client) -> None:
    assert client.get("/api/v1/catalog").status_code == 401


def test_put_replaces_every_field_and_omitted_ones_take_defaults(
    client: httpx.Client, tenant: TenantContext
) -> None:
    post(client, tenant, product("lamp", attributes={"watts": 40}, description="Bright"))
    response = client.put(
        "/api/v1/catalog/lamp",
        json={"name": "Lamp v2", "price": 20},
        headers=tenant.write_headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Lamp v2" and body["price"] == 20
    assert body["attributes"] == {} and body["description"] is None and body["category"] == ""


def test_put_is_validated_like_post_and_refuses_another_product_id(
    client: httpx.Client, tenant: TenantContext
) -> None:
    post(client, tenant, product("vase"))
    bad_url = client.put(
        "/api/v1/catalog/vase",
        json=product("vase", url="ftp://x.y/z"),
        headers=tenant.write_headers,
    )
    other_id = client.put("/api/v1/catalog/vase", json=product("jar"), headers=tenant.write_headers)
    assert bad_url.status_code == 422 and other_id.status_code == 422
    assert client.get("/api/v1/catalog/vase", headers=tenant.read_headers).json()["url"] == (
        "https://shop.example.com/mug"
    )


def test_put_on_an_unknown_product_is_a_404(client: httpx.Client, tenant: TenantContext) -> None:
    response = client.put(
        "/api/v1/catalog/ghost", json=product("ghost"), headers=tenant.write_headers
    )
    assert response.status_code == 404


def test_a_product_id_with_slashes_and_spaces_works_url_encoded(
    client: httpx.Client, tenant: TenantContext
) -> None:
    product_id = "shoes/men's size 42?#"
    assert post(client, tenant, product(product_id)).status_code == 201
    path = "/api/v1/catalog/" + quote(product_id, safe="")
    read = client.get(path, headers=tenant.read_headers)
    assert read.status_code == 200, read.text
    assert read.json()["productId"] == product_id
    assert client.delete(path, headers=tenant.write_headers).status_code == 204
    assert client.get(path, headers=tenant.read_headers).status_code == 404


async def test_delete_removes_the_card_and_the_available_membership(
    client: httpx.Client, tenant: TenantContext, redis: Redis
) -> None:
    post(client, tenant, product("gone"))
    assert await redis.hexists(keys.catalog_cards(tenant.tenant_id), "gone")
    assert await redis.sismember(keys.catalog_available(tenant.tenant_id), "gone")
    assert remove(client, tenant, "gone").status_code == 204
    assert not await redis.hexists(keys.catalog_cards(tenant.tenant_id), "gone")
    assert not await redis.sismember(keys.catalog_available(tenant.tenant_id), "gone")
    assert remove(client, tenant, "gone").status_code == 404


async def test_the_card_holds_what_recommendations_show_for_every_product(
    client: httpx.Client, tenant: TenantContext, redis: Redis
) -> None:
    post(client, tenant, product("shown", price=3.25))
    post(client, tenant, product("hidden", available=False))
    cards = await redis.hmget(keys.catalog_cards(tenant.tenant_id), ["shown", "hidden"])
    shown, hidden = (json.loads(card or b"null") for card in cards)
    assert shown == {
        "name": "Blue ceramic mug",
        "price": 3.25,
        "currency": "EUR",
        "imageUrl": "https://cdn.example.com/mug.png",
        "url": "https://shop.example.com/mug",
        "category": "kitchen",
        "available": True,
    }
    assert hidden["available"] is False
    available = await redis.smembers(keys.catalog_available(tenant.tenant_id))
    assert available == {b"shown"}


def test_search_finds_products_by_a_word_of_name_description_or_attributes(
    client: httpx.Client, tenant: TenantContext
) -> None:
    post(client, tenant, product("a", name="Espresso machine", description="Makes coffee"))
    post(client, tenant, product("b", name="Teapot", description="For loose tea"))
    post(client, tenant, product("c", name="Grinder", attributes={"use": "coffee beans"}))

    def ids(q: str) -> list[str]:
        response = client.get("/api/v1/catalog", params={"q": q}, headers=tenant.read_headers)
        assert response.status_code == 200
        return [item["productId"] for item in response.json()["data"]]

    assert ids("coffee") == ["a", "c"]
    assert ids("TEAPOT") == ["b"]
    assert ids("espresso machine") == ["a"]
    assert ids("nothing-like-this") == []


def test_listing_filters_by_category_and_availability(
    client: httpx.Client, tenant: TenantContext
) -> None:
    post(client, tenant, product("k1", category="kitchen"))
    post(client, tenant, product("k2", category="kitchen", available=False))
    post(client, tenant, product("g1", category="garden"))

    def ids(**params: str) -> list[str]:
        response = client.get("/api/v1/catalog", params=params, headers=tenant.read_headers)
        assert response.status_code == 200
        return [item["productId"] for item in response.json()["data"]]

    assert ids(category="kitchen") == ["k1", "k2"]
    assert ids(available="true") == ["g1", "k1"]
    assert ids(available="false") == ["k2"]
    assert ids(category="kitchen", available="true") == ["k1"]
    assert ids(q="kitchen") == ["k1", "k2"]


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"cursor": "garbage!"}, {"sort": "x"}],
)
def test_bad_listing_parameters_are_a_422(
    client: httpx.Client, tenant: TenantContext, params: dict[str, str]
) -> None:
    response = client.get("/api/v1/catalog", params=params, headers=tenant.read_headers)
    assert response.status_code == 422


def test_paging_is_stable_while_products_are_inserted(
    client: httpx.Client, tenant: TenantContext
) -> None:
    existing = {f"item-{n:03d}" for n in range(0, 50, 2)}
    for product_id in sorted(existing):
        post(client, tenant, product(product_id))
    seen: list[str] = []
    cursor: str | None = None
    inserted = 0
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/catalog", params=params, headers=tenant.read_headers).json()
        seen.extend(item["productId"] for item in page["data"])
        # Insert before and after the reading position between pages.
        for product_id in (f"item-{inserted * 2 + 1:03d}", f"aaa-{inserted}", f"zzz-{inserted}"):
            post(client, tenant, product(product_id))
        inserted += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "an item was served twice"
    assert existing <= set(seen), "a pre-existing item was skipped"
    assert seen == sorted(seen)


def test_another_tenants_key_never_sees_or_changes_a_product_with_the_same_id(
    client: httpx.Client, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    post(client, tenant, product("shared-id", name="Mine"))
    other = other_tenant
    assert client.get("/api/v1/catalog/shared-id", headers=other.read_headers).status_code == 404
    listed = client.get("/api/v1/catalog", headers=other.read_headers).json()
    assert listed["data"] == []
    assert (
        client.put(
            "/api/v1/catalog/shared-id", json=product("shared-id"), headers=other.write_headers
        ).status_code
        == 404
    )
    assert (
        client.delete("/api/v1/catalog/shared-id", headers=other.write_headers).status_code == 404
    )
    # The other tenant's own product with the same id is a separate product.
    assert post(client, other, product("shared-id", name="Theirs")).status_code == 201
    mine = client.get("/api/v1/catalog/shared-id", headers=tenant.read_headers).json()
    theirs = client.get("/api/v1/catalog/shared-id", headers=other.read_headers).json()
    assert (mine["name"], theirs["name"]) == ("Mine", "Theirs")


def test_every_catalog_route_is_in_the_openapi_document(client: httpx.Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"post", "get"} <= paths["/api/v1/catalog"].keys()
    assert "post" in paths["/api/v1/catalog/batch"]
    assert {"get", "put", "delete"} <= paths["/api/v1/catalog/{product_id}"].keys()
    assert "get" in paths["/api/v1/tenants/{tenant_id}/catalog"]
