"""`recomengine rebuild`: a tenant whose Redis projections are lost gets them back from
PostgreSQL, equal to what ingestion had built, and `--check` tells live projections that drifted."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT, Process, TenantContext, settings_env
from redis.asyncio import Redis

from store import keys
from store.rebuild import (
    EVENT_DERIVED_PATTERNS,
    delete_matching,
    snapshot_event_projections,
)
from store.settings import Settings


def shop_events(run: str) -> list[dict[str, Any]]:
    """Views, carts, recommendation impressions and clicks, and purchases that the clicks earn
    (attributed revenue), over two days, with a repeated event among them."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    events: list[dict[str, Any]] = []
    for n in range(120):
        user, product = f"{run}-u{n % 9}", f"p{n % 13}"
        at = now - timedelta(days=n % 2, minutes=n)
        kind = ("product_viewed", "add_to_cart", "recommendation_impressed")[n % 3]
        event: dict[str, Any] = {
            "eventId": f"{run}-{n}",
            "eventType": kind,
            "userId": user,
            "productId": product,
            "timestamp": at.isoformat(),
        }
        if kind == "recommendation_impressed":
            event["metadata"] = {"placementId": "home", "strategy": "trending"}
        events.append(event)
        if n % 10 == 0:
            clicked = at + timedelta(seconds=5)
            events.append(
                {
                    "eventId": f"{run}-{n}-click",
                    "eventType": "recommendation_clicked",
                    "userId": user,
                    "productId": product,
                    "timestamp": clicked.isoformat(),
                    "metadata": {"placementId": "home", "strategy": "trending"},
                }
            )
            events.append(
                {
                    "eventId": f"{run}-{n}-buy",
                    "eventType": "purchase",
                    "userId": user,
                    "productId": product,
                    "timestamp": (clicked + timedelta(seconds=30)).isoformat(),
                    "metadata": {"price": 12.5},
                }
            )
    return events + events[:5]  # a retry of a few: counted once


def rebuild(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `recomengine rebuild` against the test platform."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "rebuild", *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
async def ingested(
    api_url: str,
    worker_process: Process,
    tenant: TenantContext,
    db: asyncpg.Pool,
) -> TenantContext:
    """The tenant with its events stored and projected by the real api and worker."""
    events = shop_events(uuid.uuid4().hex[:6])
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for start in range(0, len(events), 50):
            answer = await http.post(
                "/api/v1/events/batch",
                json={"events": events[start : start + 50]},
                headers=tenant.write_headers,
            )
            assert answer.status_code == 202, answer.text
    distinct = len({e["eventId"] for e in events})
    deadline = time.monotonic() + 30
    stored = 0
    while time.monotonic() < deadline:
        stored = await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1", tenant.tenant_id
        )
        if stored == distinct:
            break
        await asyncio.sleep(0.2)
    assert stored == distinct, worker_process.log()[-2000:]
    # The attributions' counters are applied right after the rows: let the message finish.
    await asyncio.sleep(0.5)
    return tenant


async def test_projections_lost_with_redis_come_back_equal_from_postgresql(
    ingested: TenantContext, migrated: Settings, redis: Redis, db: asyncpg.Pool
) -> None:
    tenant_id = ingested.tenant_id
    before = await snapshot_event_projections(redis, tenant_id=tenant_id)
    assert any(":attributed:" in key for key in before)  # the purchases were attributed
    assert await db.fetchval(
        "SELECT count(*) FROM revenue_attributions WHERE tenant_id = $1", tenant_id
    )

    await delete_matching(redis, tenant_id=tenant_id, patterns=(*EVENT_DERIVED_PATTERNS, "*"))
    assert await snapshot_event_projections(redis, tenant_id=tenant_id) == {}

    done = rebuild(migrated, "--tenant", tenant_id)
    assert done.returncode == 0, done.stderr
    assert "events and" in done.stdout and "no model: retrain queued" in done.stdout
    assert await snapshot_event_projections(redis, tenant_id=tenant_id) == before
    assert await redis.exists(keys.catalog_cards(tenant_id)) == 0  # no catalog: nothing made


async def test_the_check_passes_on_live_projections_and_names_a_counter_that_drifted(
    ingested: TenantContext, migrated: Settings, redis: Redis
) -> None:
    tenant_id = ingested.tenant_id
    clean = rebuild(migrated, "--tenant", tenant_id, "--check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 differ" in clean.stdout

    today = datetime.now(UTC).strftime("%Y%m%d")
    await redis.hincrby(keys.realtime_counters(tenant_id, today), "events", 1)  # a double count
    drifted = rebuild(migrated, "--tenant", tenant_id, "--check")
    assert drifted.returncode == 1
    assert f"{keys.realtime_counters(tenant_id, today)} events" in drifted.stdout
    # The check changed nothing: the drift is still there.
    again = rebuild(migrated, "--tenant", tenant_id, "--check")
    assert again.returncode == 1


async def test_a_rebuild_over_live_projections_changes_no_count_and_leaves_usage_alone(
    ingested: TenantContext, migrated: Settings, redis: Redis
) -> None:
    tenant_id = ingested.tenant_id
    before = await snapshot_event_projections(redis, tenant_id=tenant_id)
    month = datetime.now(UTC).strftime("%Y%m")
    usage_before = await redis.hgetall(keys.usage_meter(tenant_id, month))
    assert usage_before  # the events were metered
    done = rebuild(migrated, "--tenant", tenant_id)
    assert done.returncode == 0, done.stderr
    assert await snapshot_event_projections(redis, tenant_id=tenant_id) == before
    # The meter also counts requests, which no table holds: a rebuild does not recount it.
    assert await redis.hgetall(keys.usage_meter(tenant_id, month)) == usage_before
