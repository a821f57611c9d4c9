"""The operators' console endpoints: only for operators, and each shows the real state."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext, make_tenant
from dramatiq import Message
from redis import Redis

from store.settings import Settings
from workers.broker import build_broker

OPS_PATHS = ["/api/v1/ops/queues", "/api/v1/ops/workers", "/api/v1/ops/dead-letters"]
OPS_PATHS += ["/api/v1/ops/models"]


@pytest.fixture
async def operator(db: asyncpg.Pool, migrated: Settings) -> TenantContext:
    """An admin with the operator role (and a tenant of its own)."""
    made = await make_tenant(db, migrated)
    await db.execute("UPDATE admins SET is_operator = true WHERE id = $1", made.admin_id)
    return made


@pytest.mark.parametrize("path", OPS_PATHS)
def test_an_admin_without_the_operator_role_is_refused_every_ops_endpoint(
    client: httpx.Client, tenant: TenantContext, path: str
) -> None:
    refused = client.get(path, headers=tenant.admin_headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.get(path).status_code == 401
    assert client.get(path, headers=tenant.read_headers).status_code == 401


def test_me_says_whether_the_admin_is_an_operator(
    client: httpx.Client, tenant: TenantContext, operator: TenantContext
) -> None:
    assert client.get("/api/v1/auth/me", headers=tenant.admin_headers).json()["isOperator"] is False
    assert client.get("/api/v1/auth/me", headers=operator.admin_headers).json()["isOperator"]


def test_the_queue_view_lists_every_queue_with_its_ages(
    client: httpx.Client, operator: TenantContext
) -> None:
    answer = client.get("/api/v1/ops/queues", headers=operator.admin_headers)
    assert answer.status_code == 200
    rows = {row["queue"]: row for row in answer.json()["data"]}
    assert set(rows) == {
        "ingest",
        "ingest_bulk",
        "catalog",
        "projections",
        "training",
        "maintenance",
    }
    for row in rows.values():
        assert row["oldestClaimedSeconds"] >= 0 and row["lagSeconds"] >= 0
        assert {"ready", "inProgress", "delayed", "deadLetters", "requeuedFromStuck"} <= set(row)


def test_the_worker_view_shows_the_running_pool_alive_with_its_queues(
    client: httpx.Client, operator: TenantContext, worker_process: Process
) -> None:
    deadline = time.monotonic() + 30
    alive: list[dict[str, Any]] = []
    while not alive and time.monotonic() < deadline:
        answer = client.get("/api/v1/ops/workers", headers=operator.admin_headers).json()
        alive = [w for w in answer["data"] if w["alive"] and w["pid"] is not None]
        time.sleep(0.5)
    assert alive, "the session's worker pool never showed as alive"
    assert "ingest" in alive[0]["queues"] and alive[0]["threads"] == 4
    assert answer["scheduler"]["alive"] in (True, False)


def test_an_operator_sees_a_dead_letter_and_replays_it(
    client: httpx.Client, operator: TenantContext, migrated: Settings, worker_process: Process
) -> None:
    broker = build_broker(migrated.broker_url)
    marker = uuid.uuid4().hex
    # An ingest message whose events are not events: refused at once, without retries.
    message: Message[Any] = Message(
        queue_name="ingest",
        actor_name="ingest_events",
        args=(str(uuid.uuid4()), [{"not": marker}]),
        kwargs={},
        options={},
    )
    broker.enqueue(message)

    def ours() -> list[dict[str, Any]]:
        answer = client.get(
            "/api/v1/ops/dead-letters?queue=ingest&limit=1000", headers=operator.admin_headers
        )
        assert answer.status_code == 200
        return [row for row in answer.json()["data"] if marker in row["args"]]

    deadline = time.monotonic() + 30
    found = ours()
    while not found and time.monotonic() < deadline:
        time.sleep(0.25)
        found = ours()
    assert found, "the malformed message never reached the dead letters"
    assert found[0]["actor"] == "ingest_events" and found[0]["queue"] == "ingest"
    replayed = client.post(
        "/api/v1/ops/dead-letters/replay",
        json={"ids": [found[0]["id"]], "queue": "ingest"},
        headers=operator.admin_headers,
    )
    assert replayed.status_code == 200 and replayed.json() == {"replayed": 1}
    # It ran again (and, still malformed, died again under a new id).
    deadline = time.monotonic() + 30
    again = ours()
    while (not again or again[0]["id"] == found[0]["id"]) and time.monotonic() < deadline:
        time.sleep(0.25)
        again = ours()
    assert again and again[0]["id"] != found[0]["id"]
    bad = client.post(
        "/api/v1/ops/dead-letters/replay", json={"queue": "nope"}, headers=operator.admin_headers
    )
    assert bad.status_code in (400, 422)


def test_the_model_view_shows_every_tenant_with_its_retrains(
    client: httpx.Client,
    operator: TenantContext,
    tenant: TenantContext,
    migrated: Settings,
    worker_process: Process,
) -> None:
    from workers.actors.training import train_tenant

    broker = build_broker(migrated.broker_url)
    broker.enqueue(train_tenant.message(tenant.tenant_id))

    def row() -> dict[str, Any]:
        answer = client.get("/api/v1/ops/models", headers=operator.admin_headers)
        assert answer.status_code == 200
        return next(r for r in answer.json()["data"] if r["tenantId"] == tenant.tenant_id)

    deadline = time.monotonic() + 60
    seen = row()
    while seen["lastFullRetrainAt"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = row()
    assert seen["lastFullRetrainAt"] is not None, seen
    assert seen["modelVersion"] and seen["lastDurationSeconds"] >= 0
    assert seen["failures"] == 0


def _ingest_row(client: httpx.Client, operator: TenantContext) -> dict[str, Any]:
    answer = client.get("/api/v1/ops/queues", headers=operator.admin_headers)
    assert answer.status_code == 200
    return next(row for row in answer.json()["data"] if row["queue"] == "ingest")


def test_the_queue_view_counts_what_the_workers_processed_and_failed_per_minute(
    client: httpx.Client,
    operator: TenantContext,
    tenant: TenantContext,
    migrated: Settings,
    worker_process: Process,
) -> None:
    before = _ingest_row(client, operator)
    sent = 3
    for number in range(sent):
        event = {"eventType": "product_viewed", "userId": f"u{number}", "productId": "sku-1"}
        accepted = client.post("/api/v1/events", json=event, headers=tenant.write_headers)
        assert accepted.status_code == 202, accepted.text
    marker = uuid.uuid4().hex
    # An ingest message whose events are not events: it fails once and is dead-lettered.
    build_broker(migrated.broker_url).enqueue(
        Message(
            queue_name="ingest",
            actor_name="ingest_events",
            args=(str(uuid.uuid4()), [{"not": marker}]),
            kwargs={},
            options={},
        )
    )
    try:
        deadline = time.monotonic() + 30
        row = _ingest_row(client, operator)
        while time.monotonic() < deadline and (
            row["processedLastHour"] < before["processedLastHour"] + sent
            or row["failedLastHour"] < before["failedLastHour"] + 1
        ):
            time.sleep(0.5)
            row = _ingest_row(client, operator)
        assert row["processedLastHour"] >= before["processedLastHour"] + sent, row
        assert row["failedLastHour"] >= before["failedLastHour"] + 1, row
        assert row["processedPerMinute"] > 0 and row["failedPerMinute"] > 0
        minutes = row["throughput"]
        assert len(minutes) == 60
        assert sum(m["processed"] for m in minutes) == row["processedLastHour"]
        assert sum(m["failed"] for m in minutes) == row["failedLastHour"]
        starts = [datetime.fromisoformat(m["minute"]) for m in minutes]
        assert all(b - a == timedelta(minutes=1) for a, b in pairwise(starts))
        now = datetime.now(UTC)
        assert starts[-1] <= now < starts[-1] + timedelta(minutes=1, seconds=5)
        # What just ran is in the last two minutes (the current one and, past a minute's
        # turn, the one before); nothing of it lands on another queue.
        assert minutes[-1]["processed"] + minutes[-2]["processed"] >= sent
    finally:
        _drop_dead_letters(migrated.broker_url, marker)


def _drop_dead_letters(broker_url: str, marker: str) -> None:
    """Remove the ingest dead letters whose message contains `marker` (other tests count the
    dead-letter queue)."""
    client = Redis.from_url(broker_url)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            messages = client.hgetall("dramatiq:ingest.XQ.msgs")
            ours = [mid for mid, body in messages.items() if marker.encode() in body]
            if ours:
                client.zrem("dramatiq:ingest.XQ", *ours)
                client.hdel("dramatiq:ingest.XQ.msgs", *ours)
                return
            time.sleep(0.25)
    finally:
        client.close()
