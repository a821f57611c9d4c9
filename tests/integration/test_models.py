"""Model versions through the real api and worker: a retrain is evaluated and its metrics
listed, the publish gate keeps a broken retrain out while the old version serves, an admin
publishes it on purpose, and nobody else sees a tenant's models."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT, Process, TenantContext, make_tenant, settings_env
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from store import keys
from store.models import make_current_unless_superseded
from store.settings import Settings
from workers.broker import build_broker
from workers.metrics import queue_stats

USERS = 120
DAY = timedelta(days=1)

# A retrain in its own process whose collaborative model answers shuffled lists: the gate
# must refuse it. Both the evaluation and the served fit use the broken model.
BROKEN_RETRAIN = """
import asyncio, json, sys
import numpy as np
from domain.strategies import collaborative
from domain.strategies.collaborative import CollaborativeModel

class Shuffled(CollaborativeModel):
    def recommend_indices(self, users, *, n=10):
        idx, val = super().recommend_indices(users, n=n)
        rng = np.random.default_rng(0)
        return rng.integers(0, self.values_.shape[1], idx.shape), np.ones_like(val)

collaborative.CollaborativeModel = Shuffled  # what its training and its evaluation fit
from workers.actors.training import _recorded, train_and_publish

async def main():
    holder = {}
    async def run():
        holder["summary"] = await train_and_publish(tenant_id=sys.argv[1])
        return holder["summary"]
    await _recorded(sys.argv[1], "full", run())
    print(json.dumps(holder["summary"]))

asyncio.run(main())
"""


def shop_catalog() -> list[dict[str, Any]]:
    return [
        {
            "productId": f"{block}{i}",
            "name": f"{block} item {i}",
            "category": "Shoes" if block == "a" else "Bags" if block == "b" else "Misc",
            "price": 5 + i,
            "available": True,
        }
        for block in "abc"
        for i in range(10)
    ]


def shop_events(now: datetime) -> list[dict[str, Any]]:
    """Two tastes over four weeks; in the last week each user buys two new products of its
    own block in one basket (what the evaluation holds out)."""
    events: list[dict[str, Any]] = []

    def buy(user: str, product: str, at: datetime, basket: str) -> None:
        events.append(
            {
                "eventType": "purchase",
                "userId": user,
                "productId": product,
                "sessionId": basket,
                "timestamp": at.isoformat(),
                "metadata": {"price": 5},
            }
        )

    for u in range(USERS):
        block = "a" if u % 2 == 0 else "b"
        user = f"user-{u}"
        for k in range(4):
            moment = now - (27 - k) * DAY + timedelta(minutes=u)
            buy(user, f"{block}{(u + k) % 10}", moment, f"{user}-{k}")
        buy(user, "c0", now - 20 * DAY + timedelta(minutes=u), f"{user}-c")
        late = now - 2 * DAY + timedelta(minutes=u)
        buy(user, f"{block}{(u + 5) % 10}", late, f"{user}-new")
        buy(user, f"{block}{(u + 6) % 10}", late + timedelta(seconds=1), f"{user}-new")
    return events


def models_of(client: httpx.Client, tenant: TenantContext) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/tenants/{tenant.tenant_id}/models", headers=tenant.admin_headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def served_version(client: httpx.Client, tenant: TenantContext) -> str | None:
    answer = client.get(
        "/api/v1/recommendations",
        params={"userId": "user-0", "strategy": "collaborative"},
        headers=tenant.read_headers,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["meta"]["modelVersion"]


@pytest.fixture(scope="module")
def trained(
    migrated: Settings, api_url: str, worker_process: Process, db: asyncpg.Pool
) -> Iterator[TenantContext]:
    """A tenant whose history went in through the api, retrained once by the worker."""
    loop = asyncio.get_event_loop_policy().get_event_loop()
    shop = loop.run_until_complete(make_tenant(db, migrated))
    events = shop_events(datetime.now(UTC) - timedelta(minutes=5))
    with httpx.Client(base_url=api_url, timeout=60) as http:
        for start in range(0, len(events), 100):
            answer = http.post(
                "/api/v1/events/batch",
                json={"events": events[start : start + 100]},
                headers=shop.write_headers,
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["accepted"] == len(events[start : start + 100]), answer.text

        def count(table: str) -> int:
            query = f"SELECT count(*) FROM {table} WHERE tenant_id = $1"
            return int(loop.run_until_complete(db.fetchval(query, shop.tenant_id)))

        deadline = time.monotonic() + 60
        while count("events") < len(events) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert count("events") == len(events), worker_process.log()[-3000:]
        # The catalog after the events: the first training it may set off sees them all.
        answer = http.post(
            "/api/v1/catalog/batch", json={"items": shop_catalog()}, headers=shop.write_headers
        )
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 60
        while not models_of(http, shop) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert count("catalog_items") == 30
        # Catalog writes may have set off first trainings: let them finish (a late one would
        # supersede ours), then wait for the one we send.
        broker_client: Any = SyncRedis.from_url(migrated.broker_url)
        try:
            deadline = time.monotonic() + 120
            stats = queue_stats(broker_client, ["training"])[0]
            while (stats.ready, stats.unacked) != (0, 0) and time.monotonic() < deadline:
                time.sleep(0.3)
                stats = queue_stats(broker_client, ["training"])[0]
        finally:
            broker_client.close()
        before = {row["version"] for row in models_of(http, shop)}
        from workers.actors.training import train_tenant

        build_broker(migrated.broker_url).enqueue(train_tenant.message(shop.tenant_id))
        deadline = time.monotonic() + 120
        fresh: list[dict[str, Any]] = []
        while not fresh and time.monotonic() < deadline:
            time.sleep(0.5)
            fresh = [r for r in models_of(http, shop) if r["version"] not in before]
        assert fresh, "the retrain never recorded a model version"
    yield shop


def test_the_models_endpoint_returns_the_evaluation_of_a_real_retrain(
    client: httpx.Client, trained: TenantContext
) -> None:
    newest = models_of(client, trained)[0]
    assert newest["status"] == "published"
    assert newest["sizes"] == {"users": USERS, "products": 30, "events": USERS * 7}
    assert newest["seconds"] > 0 and newest["trainedAt"]
    metrics = newest["metrics"]
    assert {"collaborative", "content_based", "trending", "popularity"} <= set(metrics)
    assert "frequently_bought_together" in metrics
    for values in metrics.values():
        assert {"ndcg10", "recall10", "hr10", "coverage"} <= set(values)
        assert all(0.0 <= values[m] <= 1.0 for m in ("ndcg10", "recall10", "hr10", "coverage"))
    # Two tastes and one misleading best-seller: learning the taste beats the crowd.
    assert metrics["collaborative"]["ndcg10"] > metrics["popularity"]["ndcg10"]
    assert newest["gate"] == {"passed": True, "reasons": []}
    assert newest["evaluation"]["details"]["evalUsers"] == USERS
    assert served_version(client, trained) == newest["version"]


@pytest.fixture(scope="module")
def rejected(trained: TenantContext, migrated: Settings) -> dict[str, Any]:
    """The summary of a retrain with a broken collaborative model."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", BROKEN_RETRAIN, trained.tenant_id],
        env=settings_env(migrated),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_gate_rejects_a_broken_model_and_the_old_version_keeps_serving(
    client: httpx.Client, trained: TenantContext, rejected: dict[str, Any], db: asyncpg.Pool
) -> None:
    assert rejected["published"] is False
    rows = {row["version"]: row for row in models_of(client, trained)}
    broken = rows[rejected["version"]]
    assert broken["status"] == "rejected" and broken["gate"]["passed"] is False
    assert any(r.startswith("collaborative: NDCG@10") for r in broken["gate"]["reasons"])
    published = [row for row in rows.values() if row["status"] == "published"]
    assert len(published) == 1
    assert served_version(client, trained) == published[0]["version"]


def test_the_operator_sees_the_rejection_in_the_models_view(
    client: httpx.Client,
    trained: TenantContext,
    rejected: dict[str, Any],
    db: asyncpg.Pool,
    migrated: Settings,
) -> None:
    loop = asyncio.get_event_loop_policy().get_event_loop()
    operator = loop.run_until_complete(make_tenant(db, migrated))
    loop.run_until_complete(
        db.execute("UPDATE admins SET is_operator = true WHERE id = $1", operator.admin_id)
    )
    answer = client.get("/api/v1/ops/models", headers=operator.admin_headers)
    assert answer.status_code == 200
    row = next(r for r in answer.json()["data"] if r["tenantId"] == trained.tenant_id)
    assert row["lastGate"]["passed"] is False and row["lastGate"]["kind"] == "full"
    assert row["lastGate"]["version"] == rejected["version"]
    assert row["modelVersion"] != rejected["version"] and row["failures"] == 0


def test_another_admins_tenant_models_are_not_found(
    client: httpx.Client, trained: TenantContext, other_tenant: TenantContext
) -> None:
    path = f"/api/v1/tenants/{trained.tenant_id}/models"
    assert client.get(path, headers=other_tenant.admin_headers).status_code == 404
    version = models_of(client, trained)[0]["version"]
    refused = client.post(f"{path}/{version}/publish", headers=other_tenant.admin_headers)
    assert refused.status_code == 404
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.get(path, headers=trained.read_headers).status_code == 401
    unknown = client.post(f"{path}/20990101T000000-abcdef/publish", headers=trained.admin_headers)
    assert unknown.status_code == 404


async def test_an_incremental_retrain_whose_lists_lose_to_popularity_is_not_written(
    client: httpx.Client, trained: TenantContext, migrated: Settings, redis: Redis
) -> None:
    tenant_id = trained.tenant_id
    current = await redis.get(f"reco:{tenant_id}:model:current")
    version = current.decode() if isinstance(current, bytes) else str(current)
    base = f"reco:{tenant_id}:m:{version}"
    users = [f"user-{u}" for u in range(30)]
    events = []
    for u in range(30):
        block = "a" if u % 2 == 0 else "b"
        events.append(
            {
                "eventType": "purchase",
                "userId": f"user-{u}",
                "productId": f"{block}{(u + 7) % 10}",
                "metadata": {"price": 5},
            }
        )
    answer = await asyncio.to_thread(
        client.post, "/api/v1/events/batch", json={"events": events}, headers=trained.write_headers
    )
    assert answer.status_code == 202 and answer.json()["accepted"] == 30
    deadline = time.monotonic() + 30
    while await redis.scard(f"reco:{tenant_id}:touched:users") < 30:
        assert time.monotonic() < deadline, "the new events never touched their users"
        await asyncio.sleep(0.2)
    # A broken neighbour projection: every product's neighbours are one product nobody buys.
    products = [
        p.decode() if isinstance(p, bytes) else p for p in await redis.hkeys(f"{base}:cfitem")
    ]
    await redis.hset(f"{base}:cfitem", mapping={p: '[["c9", 1.0, ["x"]]]' for p in products})
    before = await redis.hmget(f"{base}:cf", users)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "train", "--tenant", tenant_id, "--incremental"],
        env=settings_env(migrated),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    outcome = json.loads(done.stdout)
    assert outcome["refreshedUsers"] == 0 and outcome["rejectedUsers"] == 30
    assert outcome["gate"]["passed"] is False
    assert any("popularity" in reason for reason in outcome["gate"]["reasons"])
    assert await redis.hmget(f"{base}:cf", users) == before


def test_an_admin_publishes_a_rejected_version_on_purpose(
    client: httpx.Client, trained: TenantContext, rejected: dict[str, Any]
) -> None:
    before = served_version(client, trained)
    path = f"/api/v1/tenants/{trained.tenant_id}/models/{rejected['version']}/publish"
    answer = client.post(path, headers=trained.admin_headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "published"
    assert answer.json()["gate"]["passed"] is False  # what the gate said stays on record
    assert served_version(client, trained) == rejected["version"]
    rows = {row["version"]: row for row in models_of(client, trained)}
    assert rows[rejected["version"]]["status"] == "published"
    assert rows[before]["status"] == "previous"


def test_the_tolerance_is_a_validated_tenant_setting(
    client: httpx.Client, tenant: TenantContext
) -> None:
    path = f"/api/v1/tenants/{tenant.tenant_id}"
    bad = client.patch(
        path, json={"config": {"publishGate": {"ndcgTolerance": 2}}}, headers=tenant.admin_headers
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    good = client.patch(
        path,
        json={"config": {"publishGate": {"ndcgTolerance": 0.25}}},
        headers=tenant.admin_headers,
    )
    assert good.status_code == 200
    assert good.json()["config"]["publishGate"] == {"ndcgTolerance": 0.25}


async def test_of_two_overlapping_trainings_the_one_that_read_older_data_never_replaces_the_newer(
    redis: Redis,
) -> None:
    tenant_id = f"overlap-{uuid.uuid4().hex[:8]}"
    current_key = keys.model_current(tenant_id)
    older, newer = "20261201T100000-aaaaaa", "20261201T100005-bbbbbb"
    await redis.set(f"{keys.model_prefix(tenant_id)}{older}:meta", "{}")
    try:
        assert await make_current_unless_superseded(redis, tenant_id=tenant_id, version=newer)
        # The training that read its data first finishes last: it is kept out and expires.
        assert not await make_current_unless_superseded(redis, tenant_id=tenant_id, version=older)
        assert await redis.get(current_key) == newer.encode()
        assert 0 < await redis.ttl(f"{keys.model_prefix(tenant_id)}{older}:meta")
    finally:
        await redis.delete(current_key, f"{keys.model_prefix(tenant_id)}{older}:meta")
