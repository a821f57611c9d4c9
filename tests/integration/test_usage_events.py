"""Events metered through the real api and worker: the meter equals a SQL count of the stored
rows under concurrent load with duplicates, and after a worker is killed mid-stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from conftest import Process, Services, TenantContext, make_tenant
from redis.asyncio import Redis
from support.ingest_runs import FAST_WRITES, batch, landed, run_settings, start, start_api, stop

from store import keys
from store.settings import Settings
from store.usage import month_of


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as client:
        yield client


async def _metered(redis: Redis, tenant_id: str, field: str = "live:events") -> int:
    value = await redis.hget(keys.usage_meter(tenant_id, month_of(datetime.now(UTC))), field)
    return int(value or 0)


async def _stored(db: asyncpg.Pool, tenant_id: str, *, test: bool = False) -> int:
    """What SQL counts: the tenant's rows received this month (UTC), live or test."""
    first = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return int(
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND received_at >= $2 "
            "AND ('test' = ANY(flags)) = $3",
            tenant_id,
            first,
            test,
        )
    )


async def _settle(check: object, *, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.25)


def _events(run: str, number: int, size: int = 40) -> list[dict]:
    now = datetime.now(UTC) - timedelta(minutes=2)
    found = []
    for i in range(size):
        event = {
            "eventType": "product_viewed" if i % 4 else "add_to_cart",
            "userId": f"{run}-u{number % 6}",
            "productId": f"sku-{i}",
            "timestamp": (now - timedelta(seconds=number, milliseconds=i)).isoformat(),
        }
        if i % 5 == 0:
            event["eventId"] = f"{run}-{number % 10}-{i}"  # repeats across batches
        found.append(event)
    return found


async def test_the_event_meter_equals_the_stored_rows_under_concurrent_load_with_duplicates(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    worker_process: Process,
) -> None:
    # 40 batches at once, each sent twice at once (a client's retries), with client eventIds
    # repeated across batches: the api's fast dedupe cannot see every duplicate in flight.
    numbers = [n for n in range(40) for _ in range(2)]

    async def post(number: int) -> dict:
        response = await http.post(
            "/api/v1/events/batch",
            json={"events": _events("load", number)},
            headers=tenant.write_headers,
        )
        assert response.status_code == 202, response.text
        return response.json()

    answers = await asyncio.gather(*(post(n) for n in numbers))
    said_accepted = sum(a["accepted"] for a in answers)

    async def quiet() -> bool:
        before = await _stored(db, tenant.tenant_id)
        await asyncio.sleep(1.0)
        return before > 0 and before == await _stored(db, tenant.tenant_id)

    await _settle(quiet)
    stored = await _stored(db, tenant.tenant_id)
    distinct = await db.fetchval(
        "SELECT count(DISTINCT event_id) FROM events WHERE tenant_id = $1", tenant.tenant_id
    )
    assert stored == distinct
    assert 0 < stored <= said_accepted
    assert await _metered(redis, tenant.tenant_id) == stored
    day = datetime.now(UTC).day
    assert await _metered(redis, tenant.tenant_id, f"live:events:{day:02d}") == stored
    usage = (
        await http.get(f"/api/v1/tenants/{tenant.tenant_id}/usage", headers=tenant.admin_headers)
    ).json()
    assert usage["events"] == stored


async def test_the_event_meter_equals_the_stored_rows_after_a_worker_is_killed_mid_stream(
    migrated: Settings, services: Services, db: asyncpg.Pool
) -> None:
    settings = run_settings(migrated, services, broker_db=8, redis_db=9)
    tenant = await make_tenant(db, settings, config=FAST_WRITES)
    api = start_api(settings, services.workdir / "meter-kill-api.log")
    worker_args = ["worker", "--queues", "ingest,ingest_bulk", "--processes", "1", "--threads", "2"]
    worker = start(settings, worker_args, services.workdir / "meter-kill-worker.log")
    redis = Redis.from_url(settings.redis_url)
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def post(number: int) -> int:
                response = await http.post(
                    "/api/v1/events/batch",
                    json={"events": batch("meter-kill", number)},
                    headers=tenant.write_headers,
                )
                assert response.status_code == 202, response.text
                return int(response.json()["accepted"])

            accepted = sum(await asyncio.gather(*(post(number) for number in range(20))))
            for _ in range(1000):
                if await landed(db, tenant.tenant_id) != (0, 0):
                    break
                await asyncio.sleep(0.02)
            worker.stop(kill=True)
            landed_at_kill, _ = await landed(db, tenant.tenant_id)
            accepted += sum(await asyncio.gather(*(post(number) for number in range(20, 30))))
        assert 0 < landed_at_kill < accepted, "the kill must come in the middle of the stream"
        worker = start(settings, worker_args, services.workdir / "meter-kill-worker-2.log")

        async def all_landed_and_metered() -> bool:
            # The killed worker's message is delivered again only after its heartbeat timeout;
            # its rows may have been stored before the kill, its meter step not yet.
            stored = await _stored(db, tenant.tenant_id)
            return stored >= accepted and await _metered(redis, tenant.tenant_id) >= stored

        await _settle(all_landed_and_metered, within=120)
        await asyncio.sleep(1)  # a late redelivery would show up as an extra count
        stored = await _stored(db, tenant.tenant_id)
        assert stored == accepted
        assert await _metered(redis, tenant.tenant_id) == stored
    finally:
        await redis.aclose()
        stop(worker)
        stop(api)


async def test_test_key_events_are_flagged_metered_apart_and_kept_out_of_analytics_and_training(
    http: httpx.AsyncClient,
    tenant: TenantContext,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Settings,
    worker_process: Process,
) -> None:
    from store.api_keys import issue_api_key
    from store.training import load_events

    _, test_key = await issue_api_key(
        db,
        tenant_id=tenant.tenant_id,
        name="sandbox",
        permission="read_write",
        environment="test",
        secret=migrated.api_key_secret,
    )
    test_events = _events("sandbox", 1, size=12)
    live_events = _events("live", 2, size=5)
    sent = await http.post(
        "/api/v1/events/batch", json={"events": test_events}, headers={"X-API-Key": test_key}
    )
    assert sent.status_code == 202, sent.text
    assert all("test" not in r.get("warnings", []) for r in sent.json()["results"])
    single = await http.post(
        "/api/v1/events",
        json={**test_events[0], "productId": "solo", "eventId": None},
        headers={"X-API-Key": test_key},
    )
    assert single.status_code == 202, single.text
    assert single.json()["warnings"] == ["unknown_product"]
    live = await http.post(
        "/api/v1/events/batch", json={"events": live_events}, headers=tenant.write_headers
    )
    assert live.status_code == 202

    async def landed_all() -> bool:
        return await _stored(db, tenant.tenant_id, test=True) == 13 and (
            await _stored(db, tenant.tenant_id) == 5
        )

    await _settle(landed_all, within=30)
    assert await _stored(db, tenant.tenant_id, test=True) == 13
    assert await _metered(redis, tenant.tenant_id, "test:events") == 13
    assert await _metered(redis, tenant.tenant_id) == 5
    # Analytics counts the live events only; training reads them only unless asked for.
    overview = (
        await http.get(
            f"/api/v1/tenants/{tenant.tenant_id}/analytics/overview",
            headers=tenant.admin_headers,
        )
    ).json()
    assert overview["events"] == 5
    trained_on = await load_events(db, tenant_id=tenant.tenant_id)
    assert len(trained_on.user_ids) == 5
    asked = await load_events(db, tenant_id=tenant.tenant_id, include_test=True)
    assert len(asked.user_ids) == 18
    viewer = (
        await http.get(
            f"/api/v1/tenants/{tenant.tenant_id}/events",
            params={"limit": 100},
            headers=tenant.admin_headers,
        )
    ).json()["data"]
    assert sum("test" in e["flags"] for e in viewer) == 13
