"""Tenants over real HTTP: owner-scoped CRUD, config validation, lifecycle and soft delete."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext, make_tenant
from redis.asyncio import Redis

from api.security import ApiKeyAuthenticator
from domain.errors import Forbidden, Unauthorized
from store import keys
from store.ratelimit import RateLimiter
from store.settings import Settings


def _is_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    return body


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async HTTP client for the api (async tests must not block the loop)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
async def roomy_tenant(db: asyncpg.Pool, tenant: TenantContext) -> TenantContext:
    """The tenant on a plan that lets its admin hold more tenants (Growth: 20)."""
    await db.execute("UPDATE tenants SET plan = 'growth' WHERE id = $1", tenant.tenant_id)
    return tenant


def _authenticator(db: asyncpg.Pool, redis: Redis, settings: Settings) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(settings=settings, pool=db, limiter=RateLimiter(redis))


def test_creating_a_tenant_answers_201_with_an_active_tenant(
    client: httpx.Client, roomy_tenant: TenantContext
) -> None:
    response = client.post(
        "/api/v1/tenants",
        json={"name": "Shoe Shop", "config": {"currency": "EUR", "timezone": "Europe/Paris"}},
        headers=roomy_tenant.admin_headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert uuid.UUID(body["id"])
    assert body["name"] == "Shoe Shop"
    assert body["status"] == "active"
    assert body["config"] == {"currency": "EUR", "timezone": "Europe/Paris"}
    assert body["createdAt"].endswith(("Z", "+00:00"))


def test_creating_a_tenant_without_a_token_is_a_401_problem(client: httpx.Client) -> None:
    _is_problem(client.post("/api/v1/tenants", json={"name": "x"}), 401)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"colour": "red"}, "config.colour"),
        ({"currency": "euro"}, "config.currency"),
        ({"allowedOrigins": ["ftp://shop.example"]}, "config.allowedOrigins"),
        ({"allowedOrigins": ["https://shop.example/path"]}, "config.allowedOrigins"),
        ({"timezone": "Mars/Olympus"}, "config.timezone"),
        ({"rateLimits": {"readsPerMinute": 0}}, "config.rateLimits.readsPerMinute"),
        ({"rateLimits": {"writesPerMinute": 10_000_000}}, "config.rateLimits.writesPerMinute"),
        ({"defaultStrategy": "random"}, "config.defaultStrategy"),
    ],
)
async def test_an_invalid_config_is_refused_with_field_errors_and_creates_nothing(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, config: dict, field: str
) -> None:
    before = await db.fetchval("SELECT count(*) FROM tenants WHERE owner_id = $1", tenant.admin_id)
    response = await http.post(
        "/api/v1/tenants", json={"name": "Bad", "config": config}, headers=tenant.admin_headers
    )
    body = _is_problem(response, 422)
    assert any(error["field"].startswith(field) for error in body["errors"]), body
    after = await db.fetchval("SELECT count(*) FROM tenants WHERE owner_id = $1", tenant.admin_id)
    assert after == before


def test_a_blank_name_is_refused(client: httpx.Client, tenant: TenantContext) -> None:
    body = _is_problem(
        client.post("/api/v1/tenants", json={"name": "   "}, headers=tenant.admin_headers), 422
    )
    assert body["errors"][0]["field"] == "name"


def test_malformed_json_is_a_400_problem(client: httpx.Client, tenant: TenantContext) -> None:
    response = client.post(
        "/api/v1/tenants",
        content=b'{"name": "x",',
        headers={**tenant.admin_headers, "Content-Type": "application/json"},
    )
    _is_problem(response, 400)


def test_an_oversized_body_is_a_413_problem(
    client: httpx.Client, tenant: TenantContext, migrated: Settings
) -> None:
    padding = "x" * (migrated.request_max_bytes + 10)
    response = client.post("/api/v1/tenants", json={"name": padding}, headers=tenant.admin_headers)
    _is_problem(response, 413)


def test_an_unknown_route_and_a_wrong_method_are_problems(
    client: httpx.Client, tenant: TenantContext
) -> None:
    _is_problem(client.get("/api/v1/tenants-nope", headers=tenant.admin_headers), 404)
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    _is_problem(client.post(url, headers=tenant.admin_headers), 405)


async def test_the_list_holds_only_the_callers_tenants_that_are_not_deleted(
    http: httpx.AsyncClient, roomy_tenant: TenantContext, other_tenant: TenantContext
) -> None:
    tenant = roomy_tenant
    headers = tenant.admin_headers
    second = (await http.post("/api/v1/tenants", json={"name": "Second"}, headers=headers)).json()
    doomed = (await http.post("/api/v1/tenants", json={"name": "Doomed"}, headers=headers)).json()
    deleted = await http.delete(f"/api/v1/tenants/{doomed['id']}", headers=headers)
    assert deleted.status_code == 204
    listed = (await http.get("/api/v1/tenants", headers=headers)).json()["data"]
    assert [t["id"] for t in listed] == [tenant.tenant_id, second["id"]]
    assert other_tenant.tenant_id not in {t["id"] for t in listed}


def test_a_tenant_is_answered_with_its_usage(client: httpx.Client, tenant: TenantContext) -> None:
    body = client.get(f"/api/v1/tenants/{tenant.tenant_id}", headers=tenant.admin_headers).json()
    assert body["id"] == tenant.tenant_id and body["status"] == "active"
    assert body["usage"]["apiKeys"] == 2  # the fixture's read and read_write keys
    assert body["usage"]["catalogItems"] == 0
    assert body["usage"]["eventsThisMonth"] == 0


async def test_usage_counts_follow_the_data(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    await db.execute(
        "INSERT INTO catalog_items (tenant_id, product_id, name, price) VALUES ($1, 'p1', 'A', 1)",
        uuid.UUID(tenant.tenant_id),
    )
    await db.execute(
        "INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, occurred_at) "
        "VALUES ($1, 'e1', 'product_viewed', 'u1', 'p1', now())",
        uuid.UUID(tenant.tenant_id),
    )
    response = await http.get(f"/api/v1/tenants/{tenant.tenant_id}", headers=tenant.admin_headers)
    usage = response.json()["usage"]
    assert (usage["catalogItems"], usage["eventsThisMonth"]) == (1, 1)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_rename_and_replace_the_config(
    client: httpx.Client, tenant: TenantContext, method: str
) -> None:
    response = client.request(
        method,
        f"/api/v1/tenants/{tenant.tenant_id}",
        json={"name": "Renamed", "config": {"defaultStrategy": "trending"}},
        headers=tenant.admin_headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Renamed"
    assert response.json()["config"] == {"defaultStrategy": "trending"}
    again = client.get(f"/api/v1/tenants/{tenant.tenant_id}", headers=tenant.admin_headers).json()
    assert again["name"] == "Renamed" and again["config"] == {"defaultStrategy": "trending"}


def test_an_update_that_changes_nothing_or_sets_an_unknown_status_is_refused(
    client: httpx.Client, tenant: TenantContext
) -> None:
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    _is_problem(client.patch(url, json={}, headers=tenant.admin_headers), 422)
    _is_problem(client.patch(url, json={"status": "deleted"}, headers=tenant.admin_headers), 422)
    assert client.get(url, headers=tenant.admin_headers).json()["status"] == "active"


async def test_a_suspended_tenant_refuses_key_calls_and_admin_writes_but_allows_reads(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
) -> None:
    authenticator = _authenticator(db, redis, migrated)
    await authenticator.authenticate(tenant.read_key, write=False)  # cached while active
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    before_epoch = int(await redis.get(keys.auth_epoch(tenant.tenant_id)) or 0)
    suspended = await http.patch(url, json={"status": "suspended"}, headers=tenant.admin_headers)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert int(await redis.get(keys.auth_epoch(tenant.tenant_id)) or 0) == before_epoch + 1

    for raw, write in ((tenant.read_key, False), (tenant.write_key, True)):
        with pytest.raises(Forbidden):
            await authenticator.authenticate(raw, write=write)
    _is_problem(await http.patch(url, json={"name": "Nope"}, headers=tenant.admin_headers), 403)
    created = await http.post(
        f"{url}/api-keys",
        json={"name": "k", "permission": "read", "environment": "live"},
        headers=tenant.admin_headers,
    )
    _is_problem(created, 403)
    assert (await http.get(url, headers=tenant.admin_headers)).status_code == 200
    assert (await http.get(f"{url}/api-keys", headers=tenant.admin_headers)).status_code == 200
    names = await db.fetchval("SELECT name FROM tenants WHERE id = $1", uuid.UUID(tenant.tenant_id))
    assert names == "Test Shop"

    reactivated = await http.patch(url, json={"status": "active"}, headers=tenant.admin_headers)
    assert reactivated.status_code == 200 and reactivated.json()["status"] == "active"
    record, _ = await authenticator.authenticate(tenant.write_key, write=True)
    assert record.tenant_id == tenant.tenant_id


async def test_a_suspended_tenant_can_still_be_deleted(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    await http.patch(url, json={"status": "suspended"}, headers=tenant.admin_headers)
    assert (await http.delete(url, headers=tenant.admin_headers)).status_code == 204


async def test_deleting_a_tenant_is_soft_and_its_keys_stop_at_once(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
) -> None:
    authenticator = _authenticator(db, redis, migrated)
    await authenticator.authenticate(tenant.read_key, write=False)
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    response = await http.delete(url, headers=tenant.admin_headers)
    assert response.status_code == 204 and response.content == b""
    _is_problem(await http.get(url, headers=tenant.admin_headers), 404)
    _is_problem(await http.delete(url, headers=tenant.admin_headers), 404)
    row = await db.fetchrow(
        "SELECT deleted_at, (SELECT count(*) FROM api_keys WHERE tenant_id = $1) AS keys "
        "FROM tenants WHERE id = $1",
        uuid.UUID(tenant.tenant_id),
    )
    assert row["deleted_at"] is not None and row["keys"] == 2
    with pytest.raises(Unauthorized):
        await authenticator.authenticate(tenant.read_key, write=False)


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_a_malformed_tenant_id_is_a_404_problem(
    client: httpx.Client, tenant: TenantContext, bad_id: str
) -> None:
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = client.request(
            method, f"/api/v1/tenants/{bad_id}", json={"name": "x"}, headers=tenant.admin_headers
        )
        _is_problem(response, 404)


async def test_a_config_change_of_rate_limits_applies_on_the_next_call(
    http: httpx.AsyncClient, db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated)
    authenticator = _authenticator(db, redis, migrated)
    headers = (await authenticator.authenticate(shop.read_key, write=False))[1].headers
    assert headers["RateLimit-Limit"] == str(migrated.read_limit_per_minute)
    response = await http.patch(
        f"/api/v1/tenants/{shop.tenant_id}",
        json={"config": {"rateLimits": {"readsPerMinute": 7}}},
        headers=shop.admin_headers,
    )
    assert response.status_code == 200, response.text
    headers = (await authenticator.authenticate(shop.read_key, write=False))[1].headers
    assert headers["RateLimit-Limit"] == "7"


def _enqueue(settings: Settings, actor_name: str, **kwargs: object) -> None:
    """Send one message to the real broker, as the scheduler would."""
    import dramatiq

    from workers.broker import build_broker

    broker = build_broker(settings.broker_url)
    try:
        broker.declare_queue("maintenance")
        broker.enqueue(
            dramatiq.Message(
                queue_name="maintenance", actor_name=actor_name, args=(), kwargs=kwargs, options={}
            )
        )
    finally:
        broker.close()


async def _fill(db: asyncpg.Pool, redis: Redis, tenant_id: str) -> None:
    """Rows in several tables and a few Redis keys for the tenant."""
    tid = uuid.UUID(tenant_id)
    await db.execute(
        "INSERT INTO catalog_items (tenant_id, product_id, name, price) VALUES ($1, 'p1', 'A', 1)",
        tid,
    )
    await db.execute(
        "INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, occurred_at) "
        "VALUES ($1, 'e1', 'product_viewed', 'u1', 'p1', now()), "
        "($1, 'e2', 'product_viewed', 'u1', 'p1', '2001-01-01')",
        tid,
    )
    await db.execute(
        "INSERT INTO widget_configs (tenant_id, placement_id) VALUES ($1, 'home')", tid
    )
    await db.execute("INSERT INTO analytics_daily (tenant_id, day) VALUES ($1, '2026-01-01')", tid)
    await db.execute(
        "INSERT INTO experiments (tenant_id, name, placement_id, control_strategy, "
        "variant_strategy, traffic_split, metric) "
        "VALUES ($1, 'x', 'home', 'trending', 'collaborative', 50, 'ctr')",
        tid,
    )
    await redis.sadd(keys.catalog_available(tenant_id), "p1")
    await redis.set(f"{keys.PREFIX}:{tenant_id}:anything", "1")


async def _rows(db: asyncpg.Pool, tenant_id: str) -> dict[str, int]:
    tid = uuid.UUID(tenant_id)
    counts = {}
    for table in (
        "tenants",
        "api_keys",
        "catalog_items",
        "events",
        "widget_configs",
        "analytics_daily",
        "experiments",
    ):
        column = "id" if table == "tenants" else "tenant_id"
        counts[table] = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1",
            tid,
        )
    return counts


async def test_the_purge_job_deletes_a_tenant_deleted_31_days_ago_and_keeps_a_29_day_one(
    db: asyncpg.Pool, redis: Redis, migrated: Settings, worker_process: Process
) -> None:
    old = await make_tenant(db, migrated)
    young = await make_tenant(db, migrated)
    for shop, days in ((old, 31), (young, 29)):
        await _fill(db, redis, shop.tenant_id)
        await db.execute(
            "UPDATE tenants SET deleted_at = now() - make_interval(days => $2) WHERE id = $1",
            uuid.UUID(shop.tenant_id),
            days,
        )
    young_before = await _rows(db, young.tenant_id)
    assert all(count >= 1 for count in young_before.values())

    _enqueue(migrated, "purge_deleted_tenants")
    for _ in range(150):
        if not (await _rows(db, old.tenant_id))["tenants"]:
            break
        await asyncio.sleep(0.2)

    assert all(count == 0 for count in (await _rows(db, old.tenant_id)).values()), (
        worker_process.log()[-3000:]
    )
    assert [k async for k in redis.scan_iter(match=f"reco:{old.tenant_id}:*")] == []
    assert await _rows(db, young.tenant_id) == young_before
    assert await redis.sismember(keys.catalog_available(young.tenant_id), "p1")
    assert await redis.get(f"{keys.PREFIX}:{young.tenant_id}:anything") == b"1"


async def test_over_http_a_suspended_tenants_keys_get_403_until_it_is_reactivated(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    event = {"eventType": "product_viewed", "userId": "u1", "productId": "p1"}
    assert (await http.get("/api/v1/catalog", headers=tenant.read_headers)).status_code == 200
    url = f"/api/v1/tenants/{tenant.tenant_id}"
    await http.patch(url, json={"status": "suspended"}, headers=tenant.admin_headers)
    _is_problem(await http.get("/api/v1/catalog", headers=tenant.read_headers), 403)
    _is_problem(await http.post("/api/v1/events", json=event, headers=tenant.write_headers), 403)
    await http.patch(url, json={"status": "active"}, headers=tenant.admin_headers)
    assert (await http.get("/api/v1/catalog", headers=tenant.read_headers)).status_code == 200
    accepted = await http.post("/api/v1/events", json=event, headers=tenant.write_headers)
    assert accepted.status_code in (200, 202), accepted.text


def test_the_openapi_document_lists_every_tenant_and_key_route(client: httpx.Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"get", "post"} <= paths["/api/v1/tenants"].keys()
    assert {"get", "put", "patch", "delete"} <= paths["/api/v1/tenants/{tenant_id}"].keys()
    assert {"get", "post"} <= paths["/api/v1/tenants/{tenant_id}/api-keys"].keys()
    assert "delete" in paths["/api/v1/tenants/{tenant_id}/api-keys/{key_id}"]
    created = paths["/api/v1/tenants/{tenant_id}/api-keys"]["post"]
    assert created["security"] == [{"bearer": []}] and "201" in created["responses"]
