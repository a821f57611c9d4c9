"""Ingestion when processes die: a SIGKILLed worker, a stopped PostgreSQL, a poison message."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT, Process, Services, as_owner, make_tenant, settings_env
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from redis import Redis as SyncRedis
from support.ingest_runs import (
    FAST_WRITES,
    batch,
    landed,
    run_settings,
    start,
    start_api,
    stop,
    wait_landed,
)

from cli.commands.database import upgrade
from cli.localservices import PostgresServer, free_port
from domain.events import parse_event
from store.db import create_pool
from store.settings import Settings


async def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(
    migrated: Settings, services: Services, db: asyncpg.Pool
) -> None:
    settings = run_settings(migrated, services, broker_db=6, redis_db=7)
    tenant = await make_tenant(db, settings, config=FAST_WRITES)
    api = start_api(settings, services.workdir / "kill-api.log")
    worker_args = ["worker", "--queues", "ingest,ingest_bulk", "--processes", "1", "--threads", "2"]
    worker = start(settings, worker_args, services.workdir / "kill-worker.log")
    accepted = 0
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def post(number: int) -> int:
                response = await http.post(
                    "/api/v1/events/batch",
                    json={"events": batch("kill", number)},
                    headers=tenant.write_headers,
                )
                assert response.status_code == 202, response.text
                return int(response.json()["accepted"])

            # Posted at once, so that a backlog forms even when the worker keeps up with
            # batches posted one after another.
            accepted += sum(await asyncio.gather(*(post(number) for number in range(20))))
            # Kill the worker while it works through the backlog, keep posting, restart it.
            for _ in range(1000):
                if await landed(db, tenant.tenant_id) != (0, 0):
                    break
                await asyncio.sleep(0.02)
            worker.stop(kill=True)
            landed_at_kill, _ = await landed(db, tenant.tenant_id)
            for number in range(20, 40):
                accepted += await post(number)
        assert 0 < landed_at_kill < accepted, "the kill must come in the middle of the stream"
        started = time.monotonic()
        worker = start(settings, worker_args, services.workdir / "kill-worker-2.log")
        landed_count = await wait_landed(db, tenant.tenant_id, accepted, within=60)
        await asyncio.sleep(1)  # anything redelivered late would show up as an extra row
        assert await landed(db, tenant.tenant_id) == (accepted, accepted)
        assert landed_count == accepted
        # Redelivery of the dead worker's messages takes seconds (heartbeat), not minutes.
        assert time.monotonic() - started < 45
    finally:
        stop(worker)
        stop(api)


@pytest.fixture
def own_postgres(services: Services) -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone, so stopping it never disturbs the session cluster."""
    folder = Path(tempfile.mkdtemp(prefix="recomengine-pgstop-", dir=services.workdir))
    os.chmod(folder, 0o755)  # noqa: S103 (the postgres account must reach it when run as root)
    server = PostgresServer(data_dir=folder / "postgres", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(folder, ignore_errors=True)


async def test_the_api_keeps_accepting_while_postgresql_is_down_and_everything_lands_later(
    migrated: Settings, services: Services, own_postgres: PostgresServer
) -> None:
    settings = run_settings(migrated, services, broker_db=8, redis_db=9).model_copy(
        update={"database_url": own_postgres.url, "migration_database_url": own_postgres.owner_url}
    )
    await asyncio.to_thread(upgrade, settings.migration_database_url)
    pool = await create_pool(settings, min_size=1, max_size=2)
    tenant = await make_tenant(pool, settings, config=FAST_WRITES)
    await pool.close()
    api = start_api(settings, services.workdir / "pgstop-api.log")
    worker = start(
        settings, ["worker", "--queues", "ingest,ingest_bulk"], services.workdir / "pgstop-w.log"
    )
    accepted = 0
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def post(number: int) -> None:
                nonlocal accepted
                response = await http.post(
                    "/api/v1/events/batch",
                    json={"events": batch("pgstop", number, size=50)},
                    headers=tenant.write_headers,
                )
                assert response.status_code == 202, response.text
                accepted += response.json()["accepted"]

            await post(0)  # also warms the api's key cache, as in normal operation
            own_postgres.stop(mode="fast")
            for number in range(1, 11):
                await post(number)
            single = await http.post(
                "/api/v1/events",
                json={"eventType": "add_to_cart", "userId": "pgstop", "productId": "sku-s"},
                headers=tenant.write_headers,
            )
            assert single.status_code == 202
            accepted += 1
            # What needs PostgreSQL says so with a retryable problem, never a 500.
            listing = await http.get("/api/v1/catalog", headers=tenant.write_headers)
            assert listing.status_code == 503, listing.text
            assert listing.headers["retry-after"] == "1"
            assert listing.headers["content-type"].startswith("application/problem+json")
            await asyncio.sleep(3)  # the worker fails and retries meanwhile
        own_postgres.start()
        pool = await create_pool(as_owner(settings), min_size=1, max_size=2)
        try:
            assert await wait_landed(pool, tenant.tenant_id, accepted, within=90) == accepted
            assert await landed(pool, tenant.tenant_id) == (accepted, accepted)
        finally:
            await pool.close()
    finally:
        stop(worker)
        stop(api)


def _dead(client: Any, queue: str = "ingest") -> list[bytes]:
    return list(client.zrange(f"dramatiq:{queue}.XQ", 0, -1))


def test_a_poison_message_is_dead_lettered_after_a_few_tries_and_replay_requeues_it(
    migrated: Settings, worker_process: Process
) -> None:
    tenant_id = str(uuid.uuid4())
    event = parse_event(
        {"eventType": "product_viewed", "userId": "u", "productId": "p"},
        tenant_id=tenant_id,
        now=datetime.now(UTC),
    ).to_message()
    event["user"] = "nul\x00byte"  # PostgreSQL refuses it on every try
    broker = RedisBroker(url=migrated.broker_url)
    client: Any = SyncRedis.from_url(migrated.broker_url)
    try:
        message: Message[Any] = Message(
            queue_name="ingest",
            actor_name="ingest_events",
            args=(tenant_id, [event]),
            kwargs={},
            options={},
        )
        broker.enqueue(message)
        deadline = time.monotonic() + 40
        dead: list[bytes] = []
        while time.monotonic() < deadline and not dead:
            dead = [
                d
                for d in _dead(client)
                if Message.decode(client.hget("dramatiq:ingest.XQ.msgs", d)).message_id
                == message.message_id
            ]
            time.sleep(0.25)
        assert dead, "the poison message never reached the dead-letter queue"
        stored = Message.decode(client.hget("dramatiq:ingest.XQ.msgs", dead[0]))
        assert stored.options["retries"] >= 3
        env = settings_env(migrated)
        listing = subprocess.run(
            [sys.executable, "-m", "cli.main", "dlq", "list", "--queue", "ingest"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert dead[0].decode() in listing.stdout and "ingest_events" in listing.stdout
        replayed = subprocess.run(
            [sys.executable, "-m", "cli.main", "dlq", "replay", "--queue", "ingest"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "1 message(s) replayed" in replayed.stdout
        assert dead[0] not in _dead(client)
        # Back in circulation: the worker tries it again from a reset retry count.
        seen_again = threading.Event()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen_again.is_set():
            for queue_key in ("dramatiq:ingest.msgs", "dramatiq:ingest.DQ.msgs"):
                for body in client.hvals(queue_key):
                    again = Message.decode(body)
                    if again.message_id == message.message_id:
                        assert again.options.get("retries", 0) < stored.options["retries"]
                        seen_again.set()
            time.sleep(0.05)
        assert seen_again.is_set()
    finally:
        client.close()
        broker.close()
