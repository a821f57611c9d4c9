"""Operator tools of ingestion: the events backfill import and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from conftest import ROOT, Process, Services, TenantContext, make_tenant, settings_env, wait_for

from cli.localservices import RedisServer, free_port
from store.settings import Settings


def _import(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "import", "events", *args, "--no-progress"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


async def _count(db: asyncpg.Pool, tenant_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id))


async def test_the_events_import_validates_dedupes_and_resumes(
    migrated: Settings, tenant: TenantContext, db: asyncpg.Pool, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(days=10)
    lines = [
        json.dumps(
            {
                "eventType": "purchase" if i % 5 == 0 else "product_viewed",
                "userId": f"u{i % 7}",
                "productId": f"sku-{i}",
                "timestamp": (start + timedelta(minutes=i)).isoformat(),
                **({"metadata": {"price": 10 + i}} if i % 5 == 0 else {}),
            }
        )
        for i in range(30)
    ]
    lines.insert(3, json.dumps({"eventType": "purchase", "userId": "u", "productId": "p"}))
    lines.insert(7, "{not json")
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + "\n")
    first = _import(migrated, str(path), "--tenant", tenant.tenant_id, "--chunk-size", "8")
    assert first.returncode == 1, first.stderr
    assert "line 4: rejected: metadata.price" in first.stderr
    assert "line 8: rejected" in first.stderr
    assert "stored 30 events" in first.stdout
    assert await _count(db, tenant.tenant_id) == 30
    resumed = _import(migrated, str(path), "--tenant", tenant.tenant_id)
    assert resumed.returncode == 0 and "stored 0 events" in resumed.stdout
    assert "resumed after 32 lines" in resumed.stdout
    again = _import(migrated, str(path), "--tenant", tenant.tenant_id, "--restart")
    assert "stored 0 events, 30 already stored" in again.stdout
    assert await _count(db, tenant.tenant_id) == 30


async def test_the_events_import_reads_csv_with_json_metadata(
    migrated: Settings, tenant: TenantContext, db: asyncpg.Pool, tmp_path: Path
) -> None:
    moment = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    path = tmp_path / "events.csv"
    path.write_text(
        "eventType,userId,productId,timestamp,sessionId,eventId,metadata\n"
        f'purchase,u1,sku-1,{moment},s1,order-1,"{{""price"": 12.5}}"\n'
        f"product_viewed,u1,sku-2,{moment},,,\n"
    )
    result = _import(migrated, str(path), "--tenant", tenant.tenant_id)
    assert result.returncode == 0, result.stderr
    price = await db.fetchval(
        "SELECT price::float8 FROM events WHERE tenant_id = $1 AND event_id = 'order-1'",
        tenant.tenant_id,
    )
    assert price == 12.5 and await _count(db, tenant.tenant_id) == 2


def test_the_events_import_refuses_an_unknown_tenant(migrated: Settings, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    result = _import(migrated, str(path), "--tenant", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 2 and "no tenant" in result.stderr


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
        elif wanted == "" and line.startswith(f"{name} "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_queue_depth_lag_and_processed_counts_are_prometheus_metrics(
    migrated: Settings, services: Services, db: asyncpg.Pool
) -> None:
    settings = migrated.model_copy(
        update={
            "broker_url": services.redis.url(10),
            "redis_url": services.redis.url(11),
            "api_port": free_port(),
        }
    )
    tenant = await make_tenant(db, settings)
    env = settings_env(settings)
    api = Process(["api"], env, services.workdir / "metrics-api.log").start()
    metrics_port = free_port()
    worker = Process(
        ["worker", "--queues", "ingest,ingest_bulk"],
        {**env, "RECOMENGINE_WORKER_METRICS_PORT": str(metrics_port)},
        services.workdir / "metrics-worker.log",
    )
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        wait_for(f"{base}/health", timeout=60, process=api)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for number in range(3):
                events = [
                    {"eventType": "product_viewed", "userId": f"m{number}", "productId": f"p{i}"}
                    for i in range(10)
                ]
                response = await http.post(
                    "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
                )
                assert response.status_code == 202
            await asyncio.sleep(1.1)
            text = (await http.get("/metrics")).text
        assert _metric(text, "recomengine_queue_depth", queue="ingest") == 3
        assert _metric(text, "recomengine_queue_lag_seconds", queue="ingest") >= 1
        worker.start()
        for _ in range(150):
            if await _count(db, tenant.tenant_id) >= 30:
                break
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5) as http:
            scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            after = (await http.get(f"{base}/metrics")).text
        processed = _metric(
            scraped, "recomengine_messages_processed_total", queue="ingest", actor="ingest_events"
        )
        assert processed == 3
        assert _metric(after, "recomengine_queue_depth", queue="ingest") == 0
    finally:
        for process in (worker, api):
            if process.popen is not None and process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)  # the main process forwards it
                try:
                    process.popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.stop(kill=True)


async def test_with_the_broker_on_its_own_redis_server_events_are_queued_in_a_second_call(
    migrated: Settings, services: Services, db: asyncpg.Pool
) -> None:
    broker = RedisServer(data_dir=services.workdir / "broker-redis", port=free_port())
    broker.start()
    settings = migrated.model_copy(
        update={
            "broker_url": broker.url(0),
            "redis_url": services.redis.url(12),
            "api_port": free_port(),
        }
    )
    tenant = await make_tenant(db, settings)
    env = settings_env(settings)
    api = Process(["api"], env, services.workdir / "own-broker-api.log").start()
    worker = Process(
        ["worker", "--queues", "ingest,ingest_bulk"],
        {**env, "RECOMENGINE_WORKER_METRICS_PORT": str(free_port())},
        services.workdir / "own-broker-worker.log",
    ).start()
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        wait_for(f"{base}/health", timeout=60, process=api)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # The first single event loads the key; the next ones are counted in their
            # pre-check call, then queued in a call to the broker's server.
            for number in range(3):
                single = {"eventType": "product_viewed", "userId": f"s{number}", "productId": "p"}
                response = await http.post(
                    "/api/v1/events", json=single, headers=tenant.write_headers
                )
                assert response.status_code == 202
            events = [
                {"eventType": "add_to_cart", "userId": f"b{i}", "productId": "p"} for i in range(5)
            ]
            response = await http.post(
                "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
            )
            assert response.status_code == 202 and response.json()["accepted"] == 5
        for _ in range(150):
            if await _count(db, tenant.tenant_id) >= 8:
                break
            await asyncio.sleep(0.2)
        assert await _count(db, tenant.tenant_id) == 8
    finally:
        for process in (worker, api):
            if process.popen is not None and process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
                try:
                    process.popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.stop(kill=True)
        broker.stop()
