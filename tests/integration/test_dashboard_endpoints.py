"""The endpoints the dashboard's pages added: account (profile, password change, sign out
everywhere), "retrain now", the live event stream (SSE) and an experiment's daily results."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import TEST_PASSWORD, Process, TenantContext

from domain.experiments.assignment import assign_variant
from store.event_stream import encode_position
from store.training import record_training_run


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An asynchronous client on the api."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def _session(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_an_admin_renames_themself_and_me_says_the_new_name(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    answer = await http.patch(
        "/api/v1/auth/me", json={"name": "Renamed Admin"}, headers=tenant.admin_headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "Renamed Admin"
    me = await http.get("/api/v1/auth/me", headers=tenant.admin_headers)
    assert me.json()["name"] == "Renamed Admin"
    assert answer.json()["isOperator"] is False


async def test_a_blank_name_is_a_422_problem(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    answer = await http.patch("/api/v1/auth/me", json={"name": "  "}, headers=tenant.admin_headers)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_signing_out_everywhere_revokes_every_refresh_and_access_token(
    api_url: str, tenant: TenantContext
) -> None:
    browsers = [httpx.AsyncClient(base_url=api_url, timeout=30) for _ in range(2)]
    try:
        for browser in browsers:
            assert (await _session(browser, tenant.admin_email, TEST_PASSWORD)).status_code == 200
        answer = await browsers[0].post("/api/v1/auth/logout-all", headers=tenant.admin_headers)
        assert answer.status_code == 204
        # The access token it was called with is refused too.
        me = await browsers[0].get("/api/v1/auth/me", headers=tenant.admin_headers)
        assert me.status_code == 401
        for browser in browsers:
            csrf = browser.cookies.get("recomengine_csrf") or ""
            refused = await browser.post("/api/v1/auth/refresh", headers={"X-CSRF-Token": csrf})
            assert refused.status_code == 401
    finally:
        for browser in browsers:
            await browser.aclose()


async def test_retrain_now_queues_a_training_message_for_the_owner_only(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext, broker: Any
) -> None:
    before = await broker.llen("dramatiq:training")
    answer = await http.post(
        f"/api/v1/tenants/{tenant.tenant_id}/retrain", headers=tenant.admin_headers
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"status": "queued", "tenantId": tenant.tenant_id}
    assert await broker.llen("dramatiq:training") == before + 1
    foreign = await http.post(
        f"/api/v1/tenants/{tenant.tenant_id}/retrain", headers=other_tenant.admin_headers
    )
    assert foreign.status_code == 404


async def test_the_last_retrains_are_read_by_the_owner_only(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext, redis: Any
) -> None:
    path = f"/api/v1/tenants/{tenant.tenant_id}/retrain"
    empty = await http.get(path, headers=tenant.admin_headers)
    assert empty.status_code == 200
    assert empty.json()["lastFullRetrainAt"] is None and empty.json()["failures"] == 0
    await record_training_run(redis, tenant_id=tenant.tenant_id, kind="full", seconds=12.5)
    await record_training_run(
        redis, tenant_id=tenant.tenant_id, kind="incremental", seconds=0.25, error="boom"
    )
    answer = (await http.get(path, headers=tenant.admin_headers)).json()
    assert answer["lastFullRetrainSeconds"] == 12.5
    assert answer["lastFullRetrainAt"] is not None
    assert answer["lastIncrementalRetrainAt"] is None
    assert answer["failures"] == 1
    assert (await http.get(path, headers=other_tenant.admin_headers)).status_code == 404


async def test_retrain_now_is_refused_for_a_suspended_tenant(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    suspended = await http.patch(
        f"/api/v1/tenants/{tenant.tenant_id}",
        json={"status": "suspended"},
        headers=tenant.admin_headers,
    )
    assert suspended.status_code == 200
    answer = await http.post(
        f"/api/v1/tenants/{tenant.tenant_id}/retrain", headers=tenant.admin_headers
    )
    assert answer.status_code == 403


@pytest.fixture
async def broker(services: Any) -> AsyncIterator[Any]:
    """A client on the broker's Redis (database 0)."""
    from redis.asyncio import Redis

    client = Redis.from_url(services.redis.url(0))
    yield client
    await client.aclose()


async def _read_sse(
    response: httpx.Response, *, until: int, within: float
) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of the stream's messages until `until` "event" messages came."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    buffer = ""
    deadline = time.monotonic() + within

    async def read() -> None:
        nonlocal buffer
        async for text in response.aiter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                fields: dict[str, str] = {}
                for line in block.split("\n"):
                    if line and not line.startswith(":") and ":" in line:
                        name, value = line.split(":", 1)
                        fields[name] = value.strip()
                if "data" in fields:
                    found.append(
                        (fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"]))
                    )
            if sum(1 for _, kind, _ in found if kind == "event") >= until:
                return

    try:
        await asyncio.wait_for(read(), timeout=max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        pass
    return found


def _event(user: str, product: str, **extra: Any) -> dict[str, Any]:
    return {"eventType": "product_viewed", "userId": user, "productId": product, **extra}


async def test_the_event_stream_sends_new_events_of_the_tenant_only(
    api_url: str,
    tenant: TenantContext,
    other_tenant: TenantContext,
    worker_process: Process,
) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        async with http.stream(
            "GET",
            f"/api/v1/tenants/{tenant.tenant_id}/events/stream",
            headers=tenant.admin_headers,
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            await http.post(
                "/api/v1/events",
                json=_event("u-other", "p-other"),
                headers=other_tenant.write_headers,
            )
            posted = await http.post(
                "/api/v1/events", json=_event("u-live", "p-live"), headers=tenant.write_headers
            )
            assert posted.status_code == 202
            messages = await _read_sse(stream, until=1, within=20)
    kinds = [kind for _, kind, _ in messages]
    assert kinds[0] == "ready"
    events = [data for _, kind, data in messages if kind == "event"]
    assert [(e["userId"], e["productId"]) for e in events] == [("u-live", "p-live")]


async def test_the_event_stream_resumes_after_the_last_event_id_and_filters_by_type(
    api_url: str, tenant: TenantContext, db: asyncpg.Pool, worker_process: Process
) -> None:
    async def landed(expected: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            count = await db.fetchval(
                "SELECT count(*) FROM events WHERE tenant_id = $1", uuid.UUID(tenant.tenant_id)
            )
            if count == expected:
                return
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        # u-1 lands first, so the others are received (stamped) after it.
        await http.post("/api/v1/events", json=_event("u-1", "p-1"), headers=tenant.write_headers)
        await landed(1)
        await http.post("/api/v1/events", json=_event("u-2", "p-1"), headers=tenant.write_headers)
        await http.post(
            "/api/v1/events",
            json={**_event("u-3", "p-1"), "eventType": "add_to_cart"},
            headers=tenant.write_headers,
        )
        await landed(3)
        first = await db.fetchrow(
            "SELECT received_at, event_id FROM events WHERE tenant_id = $1 AND user_id = 'u-1'",
            uuid.UUID(tenant.tenant_id),
        )
        # Resuming from just before the first event replays the product views after it only.
        position = encode_position(first["received_at"], first["event_id"])
        async with http.stream(
            "GET",
            f"/api/v1/tenants/{tenant.tenant_id}/events/stream?eventType=product_viewed",
            headers={**tenant.admin_headers, "Last-Event-ID": position},
        ) as stream:
            messages = await _read_sse(stream, until=1, within=10)
    events = [data for _, kind, data in messages if kind == "event"]
    assert [e["userId"] for e in events] == ["u-2"]


async def test_an_event_received_between_two_streams_is_not_missed(
    api_url: str, tenant: TenantContext, db: asyncpg.Pool, worker_process: Process
) -> None:
    path = f"/api/v1/tenants/{tenant.tenant_id}/events/stream"
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        async with http.stream("GET", path, headers=tenant.admin_headers) as stream:
            ready = await _read_sse(stream, until=0, within=3)
        start_id = ready[0][0]
        assert ready[0][1] == "ready" and start_id
        # Nothing listens while this event arrives.
        await http.post("/api/v1/events", json=_event("u-gap", "p-1"), headers=tenant.write_headers)
        async with http.stream(
            "GET", path, headers={**tenant.admin_headers, "Last-Event-ID": start_id}
        ) as stream:
            messages = await _read_sse(stream, until=1, within=20)
    assert [d["userId"] for _, kind, d in messages if kind == "event"] == ["u-gap"]


async def test_the_event_stream_needs_an_admin_token_and_the_owner_and_a_valid_id(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    path = f"/api/v1/tenants/{tenant.tenant_id}/events/stream"
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers=tenant.write_headers)).status_code == 401
    assert (await http.get(path, headers=other_tenant.admin_headers)).status_code == 404
    bad = await http.get(path, headers={**tenant.admin_headers, "Last-Event-ID": "nonsense"})
    assert bad.status_code == 422
    unknown_type = await http.get(path + "?eventType=teleported", headers=tenant.admin_headers)
    assert unknown_type.status_code == 422


async def _running_experiment(http: httpx.AsyncClient, tenant: TenantContext) -> str:
    created = await http.post(
        f"/api/v1/tenants/{tenant.tenant_id}/experiments",
        json={
            "name": "Daily",
            "placementId": "home",
            "controlStrategy": "trending",
            "variantStrategy": "collaborative",
            "trafficSplit": 50,
            "metric": "ctr",
        },
        headers=tenant.admin_headers,
    )
    assert created.status_code == 201, created.text
    exp_id = str(created.json()["id"])
    started = await http.patch(
        f"/api/v1/tenants/{tenant.tenant_id}/experiments/{exp_id}",
        json={"status": "running"},
        headers=tenant.admin_headers,
    )
    assert started.status_code == 200
    return exp_id


async def test_daily_results_add_up_each_variants_impressions_and_clicks_per_day(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker_process: Process
) -> None:
    exp_id = await _running_experiment(http, tenant)
    now = datetime.now(UTC)

    def exposure(kind: str, user: str, variant: str, product: str) -> dict[str, Any]:
        return {
            "eventType": kind,
            "userId": user,
            "productId": product,
            "timestamp": now.isoformat(),
            "metadata": {
                "placementId": "home",
                "recommendationId": "r1",
                "experimentId": exp_id,
                "variant": variant,
                "position": 1,
            },
        }

    # The api sets each event's variant from the user's assignment (the server's, not the
    # client's): pick one user of each arm.
    users: dict[str, str] = {}
    for n in range(100):
        arm = assign_variant(experiment_id=exp_id, user_id=f"u{n}", traffic_split=50)
        users.setdefault(arm, f"u{n}")
    control, variant = users["control"], users["variant"]
    batch = [
        exposure("recommendation_impressed", control, "control", "p1"),
        exposure("recommendation_impressed", control, "control", "p2"),
        exposure("recommendation_clicked", control, "control", "p1"),
        exposure("recommendation_impressed", variant, "variant", "p1"),
    ]
    posted = await http.post(
        "/api/v1/events/batch", json={"events": batch}, headers=tenant.write_headers
    )
    assert posted.status_code == 202, posted.text
    # The worker may still be starting (a fresh pool imports numpy and scipy) on a busy machine.
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and stored < 4:
        stored = await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1", uuid.UUID(tenant.tenant_id)
        )
        await asyncio.sleep(0.2)
    assert stored == 4, f"{stored} of 4 events stored"
    answer = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/experiments/{exp_id}/results/daily",
        headers=tenant.admin_headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["metric"] == "ctr"
    today = body["days"][-1]
    assert today["date"] == now.date().isoformat()
    assert today["control"]["users"] == 1, body
    assert today["control"]["impressions"] == 2
    assert today["control"]["clicks"] == 1
    assert today["control"]["ctr"] == pytest.approx(0.5)
    assert today["variant"]["impressions"] == 1
    assert today["variant"]["ctr"] == 0


async def test_daily_results_of_a_draft_have_no_days_and_foreign_ids_are_404(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    created = await http.post(
        f"/api/v1/tenants/{tenant.tenant_id}/experiments",
        json={
            "name": "Draft",
            "placementId": "pdp",
            "controlStrategy": "trending",
            "variantStrategy": "collaborative",
            "trafficSplit": 50,
            "metric": "ctr",
        },
        headers=tenant.admin_headers,
    )
    exp_id = created.json()["id"]
    path = f"/api/v1/tenants/{tenant.tenant_id}/experiments/{exp_id}/results/daily"
    draft = await http.get(path, headers=tenant.admin_headers)
    assert draft.status_code == 200
    assert draft.json()["days"] == []
    assert (await http.get(path, headers=other_tenant.admin_headers)).status_code == 404
    missing = await http.get(
        f"/api/v1/tenants/{tenant.tenant_id}/experiments/{uuid.uuid4()}/results/daily",
        headers=tenant.admin_headers,
    )
    assert missing.status_code == 404
    assert (
        await http.get(
            f"/api/v1/tenants/{tenant.tenant_id}/experiments/not-a-uuid/results/daily",
            headers=tenant.admin_headers,
        )
    ).status_code == 404
