"""API keys over real HTTP: issued once, listed without secrets, capped, revoked at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from conftest import Process, Services, TenantContext, settings_env, wait_for
from redis.asyncio import Redis

from api.security import ApiKeyAuthenticator
from cli.localservices import free_port
from domain import apikeys
from domain.errors import Forbidden, Unauthorized
from store import keys
from store.api_keys import flush_last_used
from store.ratelimit import RateLimiter
from store.settings import Settings


def _authenticator(db: asyncpg.Pool, redis: Redis, settings: Settings) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(settings=settings, pool=db, limiter=RateLimiter(redis))


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async HTTP client for the api (async tests must not block the loop)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def _create(http: httpx.AsyncClient, ctx: TenantContext, **body: str) -> httpx.Response:
    payload = {"name": "server", "permission": "read", "environment": "live", **body}
    return await http.post(
        f"/api/v1/tenants/{ctx.tenant_id}/api-keys", json=payload, headers=ctx.admin_headers
    )


async def test_a_new_key_is_shown_once_and_stored_only_as_an_hmac(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, migrated: Settings
) -> None:
    response = await _create(
        http, tenant, name="Backend", permission="read_write", environment="test"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert {"id", "name", "permission", "prefix", "key", "createdAt"} <= body.keys()
    assert body["name"] == "Backend" and body["permission"] == "read_write"
    assert body["key"].startswith("rk_test_") and apikeys.parse_key(body["key"]) is not None
    assert body["key"].startswith(body["prefix"]) and len(body["prefix"]) < len(body["key"])
    assert response.headers["cache-control"] == "no-store"
    stored = await db.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", uuid.UUID(body["id"]))
    assert bytes(stored) == apikeys.hash_key(body["key"], secret=migrated.api_key_secret)
    listed_response = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys", headers=tenant.admin_headers
    )
    listed = listed_response.json()["data"]
    assert body["key"] not in str(listed)
    mine = next(item for item in listed if item["id"] == body["id"])
    assert mine == {
        "id": body["id"],
        "name": "Backend",
        "permission": "read_write",
        "environment": "test",
        "prefix": body["prefix"],
        "createdAt": body["createdAt"],
        "lastUsedAt": None,
        "revokedAt": None,
    }


async def test_a_new_key_with_a_bad_permission_or_environment_is_refused(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    for body in ({"permission": "admin"}, {"environment": "staging"}, {"name": ""}):
        response = await _create(http, tenant, **body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    listed = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys", headers=tenant.admin_headers
    )
    assert len(listed.json()["data"]) == 2


async def test_the_eleventh_active_key_is_a_409_and_revoking_one_makes_room(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    created = [await _create(http, tenant, name=f"k{i}") for i in range(8)]  # 2 from the fixture
    assert [r.status_code for r in created] == [201] * 8
    refused = await _create(http, tenant, name="eleventh")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    active = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
        uuid.UUID(tenant.tenant_id),
    )
    assert active == 10
    revoke = await http.delete(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys/{created[0].json()['id']}",
        headers=tenant.admin_headers,
    )
    assert revoke.status_code == 204
    assert (await _create(http, tenant, name="replacement")).status_code == 201


async def test_concurrent_creations_never_pass_the_limit(
    api_url: str, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"/api/v1/tenants/{tenant.tenant_id}/api-keys",
                    json={"name": f"race{i}", "permission": "read", "environment": "live"},
                    headers=tenant.admin_headers,
                )
                for i in range(16)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 8 and statuses.count(409) == 8
    active = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
        uuid.UUID(tenant.tenant_id),
    )
    assert active == 10


async def test_a_revoked_key_fails_on_the_very_next_call_in_every_worker(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
) -> None:
    # Two authenticators stand for two api workers, each with its own warm in-process cache.
    workers = [_authenticator(db, redis, migrated) for _ in range(2)]
    for worker in workers:
        for _ in range(3):
            await worker.authenticate(tenant.read_key, write=False)
    key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND permission = 'read'",
        uuid.UUID(tenant.tenant_id),
    )
    response = await http.delete(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys/{key_id}", headers=tenant.admin_headers
    )
    assert response.status_code == 204
    for worker in workers:
        for _ in range(3):
            with pytest.raises(Unauthorized):
                await worker.authenticate(tenant.read_key, write=False)
    # The tenant's other key is untouched.
    record, _ = await workers[0].authenticate(tenant.write_key, write=True)
    assert record.permission == "read_write"
    listed_response = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys", headers=tenant.admin_headers
    )
    listed = listed_response.json()["data"]
    assert next(k for k in listed if k["id"] == str(key_id))["revokedAt"] is not None


async def test_a_read_key_on_a_write_call_is_forbidden(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    authenticator = _authenticator(db, redis, migrated)
    with pytest.raises(Forbidden):
        await authenticator.authenticate(tenant.read_key, write=True)
    record, _ = await authenticator.authenticate(tenant.read_key, write=False)
    assert record.permission == "read"


async def test_only_a_key_the_cache_can_vouch_for_is_admitted_uncounted(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    authenticator = _authenticator(db, redis, migrated)
    # Loaded without a known epoch: it must be counted (and its epoch read) the usual way.
    assert await authenticator.admit(tenant.write_key, write=True) is None
    await authenticator.authenticate(tenant.write_key, write=True)
    admission = await authenticator.admit(tenant.write_key, write=True)
    assert admission is not None and admission.record.tenant_id == tenant.tenant_id
    assert admission.window.limit == migrated.write_limit_per_minute
    # A key whose cached copy is refused may have been allowed since: not admitted either.
    await authenticator.authenticate(tenant.read_key, write=False)
    assert await authenticator.admit(tenant.read_key, write=True) is None
    # Counted elsewhere under another epoch, the admitted key is read again before it is used.
    await redis.incr(keys.auth_epoch(tenant.tenant_id))
    decision = await RateLimiter(redis).hit(admission.window)
    record, settled = await authenticator.settle(admission, decision)
    assert record.key_id == admission.record.key_id and settled.allowed
    readmitted = await authenticator.admit(tenant.write_key, write=True)
    assert readmitted is not None and readmitted.epoch == settled.epoch != admission.epoch


async def test_unknown_and_malformed_keys_are_unauthorized(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    authenticator = _authenticator(db, redis, migrated)
    unknown = apikeys.generate_key(environment="live").raw
    broken = tenant.read_key[:-1] + ("A" if tenant.read_key[-1] != "A" else "B")
    for raw in (unknown, broken, "rk_live_short", ""):
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(raw, write=False)


async def test_last_used_is_current_in_the_list_without_a_database_write(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await _authenticator(db, redis, migrated).authenticate(tenant.read_key, write=False)
    column = await db.fetchval(
        "SELECT last_used_at FROM api_keys WHERE tenant_id = $1 AND permission = 'read'",
        uuid.UUID(tenant.tenant_id),
    )
    assert column is None
    listed_response = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys", headers=tenant.admin_headers
    )
    listed = listed_response.json()["data"]
    by_permission = {k["permission"]: k for k in listed}
    used = datetime.fromisoformat(by_permission["read"]["lastUsedAt"])
    assert used >= before
    assert by_permission["read_write"]["lastUsedAt"] is None


async def test_flushing_last_used_writes_the_column_and_keeps_newer_marks(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis, migrated: Settings
) -> None:
    authenticator = _authenticator(db, redis, migrated)
    await authenticator.authenticate(tenant.read_key, write=False)
    await flush_last_used(db, redis)
    column = await db.fetchval(
        "SELECT last_used_at FROM api_keys WHERE tenant_id = $1 AND permission = 'read'",
        uuid.UUID(tenant.tenant_id),
    )
    assert column is not None
    assert await redis.hlen(keys.api_key_last_used(tenant.tenant_id)) == 0
    assert not await redis.sismember(keys.API_KEY_LAST_USED_TENANTS, tenant.tenant_id)
    # An older mark (e.g. flushed twice) never moves the column back.
    key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND permission = 'read'",
        uuid.UUID(tenant.tenant_id),
    )
    await redis.hset(
        keys.api_key_last_used(tenant.tenant_id), str(key_id), "2001-01-01T00:00:00+00:00"
    )
    await redis.sadd(keys.API_KEY_LAST_USED_TENANTS, tenant.tenant_id)
    await flush_last_used(db, redis)
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id) == column


@pytest.mark.parametrize("bad_key_id", ["nope", "1", str(uuid.uuid4())])
def test_revoking_an_unknown_or_malformed_key_id_is_a_404(
    client: httpx.Client, tenant: TenantContext, bad_key_id: str
) -> None:
    response = client.delete(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys/{bad_key_id}", headers=tenant.admin_headers
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def _enqueue(settings: Settings, actor_name: str, **kwargs: object) -> None:
    """Send one message to the real broker, as the scheduler would."""
    import dramatiq

    from workers.broker import build_broker

    broker = build_broker(settings.broker_url)
    try:
        broker.declare_queue("maintenance")
        broker.enqueue(
            dramatiq.Message(
                queue_name="maintenance",
                actor_name=actor_name,
                args=(),
                kwargs=kwargs,
                options={},
            )
        )
    finally:
        broker.close()


async def test_the_last_used_flush_job_writes_last_used_at(
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker_process: Process,
) -> None:
    await _authenticator(db, redis, migrated).authenticate(tenant.write_key, write=True)
    _enqueue(migrated, "flush_api_key_last_used")
    deadline = time.monotonic() + 30
    written = None
    while written is None and time.monotonic() < deadline:
        written = await db.fetchval(
            "SELECT last_used_at FROM api_keys WHERE tenant_id = $1 AND permission = 'read_write'",
            uuid.UUID(tenant.tenant_id),
        )
        await asyncio.sleep(0.2)
    assert written is not None, worker_process.log()[-3000:]
    assert written > datetime.now(UTC) - timedelta(minutes=1)


async def test_over_http_a_read_key_on_a_write_route_is_a_403(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    event = {"eventType": "product_viewed", "userId": "u1", "productId": "p1"}
    refused = await http.post("/api/v1/events", json=event, headers=tenant.read_headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    allowed = await http.post("/api/v1/events", json=event, headers=tenant.write_headers)
    assert allowed.status_code in (200, 202), allowed.text


@pytest.fixture
def two_worker_api(migrated: Settings, services: Services) -> Iterator[str]:
    """A second api, started with `--workers 2`, on a free port of its own."""
    port = free_port()
    env = {**settings_env(migrated), "RECOMENGINE_API_PORT": str(port)}
    process = Process(["api", "--workers", "2"], env, services.workdir / "api-2workers.log")
    process.start()
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", timeout=60, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def _fresh_connection_get(base_url: str, headers: dict[str, str]) -> httpx.Response:
    # A new connection per call lets the kernel hand it to either Sanic worker.
    with httpx.Client(base_url=base_url, timeout=10) as one_shot:
        return one_shot.get("/api/v1/catalog", headers={**headers, "Connection": "close"})


async def test_over_http_a_revoked_key_fails_on_the_very_next_call_with_two_api_workers(
    two_worker_api: str, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    def hits(count: int) -> list[int]:
        return [
            _fresh_connection_get(two_worker_api, tenant.read_headers).status_code
            for _ in range(count)
        ]

    # Warm the key into the cache of both workers.
    assert await asyncio.to_thread(hits, 30) == [200] * 30
    key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND permission = 'read'",
        uuid.UUID(tenant.tenant_id),
    )

    def revoke_then_hit() -> tuple[int, list[int]]:
        with httpx.Client(base_url=two_worker_api, timeout=10) as admin:
            revoked = admin.delete(
                f"/api/v1/tenants/{tenant.tenant_id}/api-keys/{key_id}",
                headers=tenant.admin_headers,
            )
        return revoked.status_code, hits(30)

    status, after = await asyncio.to_thread(revoke_then_hit)
    assert status == 204
    assert after == [401] * 30
    # The tenant's other key still works in both workers.
    others = await asyncio.to_thread(
        lambda: [
            _fresh_connection_get(two_worker_api, tenant.write_headers).status_code
            for _ in range(10)
        ]
    )
    assert others == [200] * 10
