"""Worker pools under an operator's worst day: a parent killed, a consumer that hangs while it
heartbeats, Redis killed mid-load. Real processes, real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT, Process, Services, make_tenant, settings_env
from redis import Redis as SyncRedis
from redis.asyncio import Redis
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

from cli.localservices import RedisServer, free_port
from cli.process_groups import group_alive, start_group, stop_group
from domain.events import parse_event
from store.counters import read_counters
from store.settings import Settings
from workers.actors.ingest import ingest_events
from workers.broker import build_broker
from workers.metrics import queue_stats
from workers.watchdog import REQUEUED_KEY, WORKERS_KEY


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The parent pid is the 2nd field after the parenthesised command name.
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _post_batches(base: str, headers: dict[str, str], run: str, numbers: range) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def post(number: int) -> int:
            response = await http.post(
                "/api/v1/events/batch", json={"events": batch(run, number)}, headers=headers
            )
            assert response.status_code == 202, response.text
            return int(response.json()["accepted"])

        return sum(await asyncio.gather(*(post(number) for number in numbers)))


async def test_a_pool_whose_parent_is_killed_leaves_no_worker_behind_and_loses_nothing(
    migrated: Settings, services: Services, db: asyncpg.Pool
) -> None:
    settings = run_settings(migrated, services, broker_db=10, redis_db=11)
    tenant = await make_tenant(db, settings, config=FAST_WRITES)
    api = start_api(settings, services.workdir / "orphan-api.log")
    pool_args = ["worker", "--queues", "ingest,ingest_bulk", "--processes", "2", "--threads", "2"]
    pool = start(settings, pool_args, services.workdir / "orphan-pool.log")
    base = f"http://127.0.0.1:{settings.api_port}"
    try:
        assert pool.popen is not None
        deadline = time.monotonic() + 30
        while len(_children(pool.popen.pid)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        workers = _children(pool.popen.pid)
        assert len(workers) >= 2, "the pool's worker processes never started"
        # Each worker process is a consumer of its own (id, heartbeat, claims) in the broker.
        broker_client: Any = SyncRedis.from_url(settings.broker_url)
        registered: dict[bytes, bytes] = {}
        while len(registered) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            registered = broker_client.hgetall(WORKERS_KEY)
        broker_client.close()
        pids = {json.loads(about)["pid"] for about in registered.values()}
        assert len(registered) == 2 and pids == set(workers), (registered, workers)
        accepted = await _post_batches(base, tenant.write_headers, "orphan", range(20))
        while await landed(db, tenant.tenant_id) == (0, 0):
            await asyncio.sleep(0.02)
        os.kill(pool.popen.pid, signal.SIGKILL)  # the parent only, as the OOM killer would
        killed = time.monotonic()
        while any(_running(pid) for pid in workers) and time.monotonic() - killed < 10:
            await asyncio.sleep(0.05)
        gone_after = time.monotonic() - killed
        assert not any(_running(pid) for pid in workers), "a worker outlived its parent"
        assert gone_after < 5
        accepted += await _post_batches(base, tenant.write_headers, "orphan", range(20, 30))
        pool = start(settings, pool_args, services.workdir / "orphan-pool-2.log")
        assert await wait_landed(db, tenant.tenant_id, accepted, within=60) == accepted
        await asyncio.sleep(1)  # anything redelivered late would show up as an extra row
        assert await landed(db, tenant.tenant_id) == (accepted, accepted)
        # A new batch goes through the new pool at once.
        posted = time.monotonic()
        accepted += await _post_batches(base, tenant.write_headers, "orphan", range(30, 31))
        assert await wait_landed(db, tenant.tenant_id, accepted, within=15) == accepted
        assert time.monotonic() - posted < 15
    finally:
        stop(pool)
        stop(api)


def test_stopping_a_group_whose_leader_died_stops_the_survivors(tmp_path: Path) -> None:
    pid_file = tmp_path / "pool.pid"
    leader = start_group(
        ["sh", "-c", "sleep 300 & sleep 300 & wait"],
        pid_file=pid_file,
        log_path=tmp_path / "pool.log",
        env=dict(os.environ),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 10
    while len(_children(leader)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = _children(leader)
    assert len(survivors) == 2
    os.kill(leader, signal.SIGKILL)
    os.waitpid(leader, 0)
    assert group_alive(leader), "the children outlive their leader until stopped"
    stop_group(pid_file, timeout=5)
    assert not group_alive(leader)
    assert not pid_file.exists()


@pytest.fixture
def release_file() -> Iterator[Path]:
    """The file whose existence lets the hanging consumer go on."""
    folder = Path(tempfile.mkdtemp(prefix="recomengine-hang-"))
    yield folder / "release"
    (folder / "release").unlink(missing_ok=True)
    folder.rmdir()


def _events(tenant_id: str, run: str, number: int, size: int = 10) -> list[Any]:
    now = datetime.now(UTC)
    return [
        parse_event(
            {"eventType": "product_viewed", "userId": f"{run}-{number}", "productId": f"p{i}"},
            tenant_id=tenant_id,
            now=now,
        ).to_message()
        for i in range(size)
    ]


def _claimed(client: Any, queue: str = "ingest") -> dict[str, set[bytes]]:
    return {
        key.decode(): client.smembers(key)
        for key in client.scan_iter(f"dramatiq:__acks__.*.{queue}")
        if client.scard(key)
    }


async def test_messages_held_by_a_consumer_that_hangs_while_heartbeating_are_requeued_once(
    migrated: Settings, services: Services, db: asyncpg.Pool, release_file: Path
) -> None:
    settings = run_settings(migrated, services, broker_db=12, redis_db=13)
    tenant = await make_tenant(db, settings)
    env = {
        **settings_env(settings),
        "RECOMENGINE_WATCHDOG_MARGIN_SECONDS": "1",
        "RECOMENGINE_WATCHDOG_INTERVAL_SECONDS": "0.5",
        "RECOMENGINE_TEST_RELEASE_FILE": str(release_file),
        "RECOMENGINE_WORKER_METRICS_PORT": str(free_port()),
    }
    hanging = subprocess.Popen(
        [
            *(sys.executable, "-m", "dramatiq", "workers.main", "tests.support.hanging_worker"),
            *("--processes", "1", "--threads", "1", "--queues", "ingest"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = build_broker(settings.broker_url)
    client: Any = SyncRedis.from_url(settings.broker_url)
    healthy: subprocess.Popen[bytes] | None = None
    try:
        # Short time limits, so that the test waits seconds rather than the actor's minute.
        for number in range(6):
            broker.enqueue(
                ingest_events.message_with_options(
                    args=(tenant.tenant_id, _events(tenant.tenant_id, "hang", number)),
                    time_limit=2_000,
                )
            )
        deadline = time.monotonic() + 30
        while not _claimed(client) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        held = _claimed(client)
        assert held, "the hanging consumer never claimed a message"
        # While it hangs, its claims show as the queue's oldest claimed message.
        deadline = time.monotonic() + 15
        stats = queue_stats(client, ["ingest"])[0]
        while stats.oldest_claimed_seconds < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = queue_stats(client, ["ingest"])[0]
        assert stats.oldest_claimed_seconds >= 1
        healthy = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--queues", "ingest,ingest_bulk"],
            env={**env, "RECOMENGINE_WORKER_METRICS_PORT": str(free_port())},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert await wait_landed(db, tenant.tenant_id, 60, within=30) == 60
        assert int(client.hget(REQUEUED_KEY, "ingest") or 0) >= 1
        # The hanging consumer wakes up and runs its own copies: nothing is stored twice.
        release_file.touch()
        await asyncio.sleep(3)
        assert await landed(db, tenant.tenant_id) == (60, 60)
        projections = Redis.from_url(settings.redis_url)
        try:
            day = datetime.now(UTC).strftime("%Y%m%d")
            counters = await read_counters(projections, tenant_id=tenant.tenant_id, day=day)
        finally:
            await projections.aclose()
        assert counters["type|product_viewed"] == 60
        assert not _claimed(client), "a message stayed claimed"
    finally:
        for process in (hanging, healthy):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        client.close()


@pytest.fixture
def own_redis(services: Services) -> Iterator[RedisServer]:
    """A Redis of this test alone, so killing it never disturbs the session's."""
    folder = Path(tempfile.mkdtemp(prefix="recomengine-rediskill-", dir=services.workdir))
    server = RedisServer(data_dir=folder, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_killed_and_restarted_mid_load_leaves_nothing_lost_or_stuck(
    migrated: Settings, services: Services, db: asyncpg.Pool, own_redis: RedisServer
) -> None:
    settings = migrated.model_copy(
        update={
            "broker_url": own_redis.url(0),
            "redis_url": own_redis.url(1),
            "api_port": free_port(),
        }
    )
    tenant = await make_tenant(db, settings, config=FAST_WRITES)
    api = start_api(settings, services.workdir / "rediskill-api.log")
    pool_args = ["worker", "--queues", "ingest,ingest_bulk", "--processes", "1", "--threads", "4"]
    pool = start(settings, pool_args, services.workdir / "rediskill-pool.log")
    base = f"http://127.0.0.1:{settings.api_port}"
    # Ids of the events answered 202. A post that failed (503, a dropped connection) may still
    # have been queued; the client would retry it and dedupe would keep one copy.
    accepted: list[str] = []
    killed = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def post(number: int) -> None:
            try:
                response = await http.post(
                    "/api/v1/events/batch",
                    json={"events": batch("rediskill", number, size=50)},
                    headers=tenant.write_headers,
                )
            except httpx.HTTPError:
                return
            if response.status_code == 202:
                results = response.json()["results"]
                accepted.extend(r["eventId"] for r in results if r["status"] == "accepted")
            else:
                assert response.status_code == 503, response.text

        async def kill_and_restart() -> None:
            while len(accepted) < 1_000:
                await asyncio.sleep(0.01)
            pid = int((own_redis.data_dir / "redis.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            killed.set()
            await asyncio.sleep(1)
            await asyncio.to_thread(own_redis.start)

        try:
            killer = asyncio.create_task(kill_and_restart())
            number = 0
            while not killer.done():
                await asyncio.gather(*(post(number + i) for i in range(4)))
                number += 4
            await killer
            # The api takes events again once Redis is back.
            accepted_at_restart = len(accepted)
            deadline = time.monotonic() + 30
            while len(accepted) < accepted_at_restart + 1_000 and time.monotonic() < deadline:
                await asyncio.gather(*(post(number + i) for i in range(4)))
                number += 4
            assert killed.is_set()
            assert len(accepted) >= accepted_at_restart + 1_000, "the api did not recover"

            async def stored_of_accepted() -> int:
                found = await db.fetchval(
                    "SELECT count(*) FROM events WHERE tenant_id = $1 "
                    "AND event_id::text = ANY($2::text[])",
                    tenant.tenant_id,
                    accepted,
                )
                return int(found)

            deadline = time.monotonic() + 90
            while await stored_of_accepted() < len(accepted) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert await stored_of_accepted() == len(accepted), "an accepted event was lost"
            client: Any = SyncRedis.from_url(settings.broker_url)
            try:
                deadline = time.monotonic() + 30
                stats = queue_stats(client, ["ingest"])[0]
                while (stats.ready, stats.unacked) != (0, 0) and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    stats = queue_stats(client, ["ingest"])[0]
                assert (stats.ready, stats.unacked) == (0, 0), stats
            finally:
                client.close()
            rows, distinct = await landed(db, tenant.tenant_id)
            assert rows == distinct, "an event was stored twice"
            assert rows <= number * 50
        finally:
            stop(pool)
            stop(api)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_pool_of_two_processes_serves_its_metrics_on_one_loopback_port(
    migrated: Settings, services: Services
) -> None:
    settings = run_settings(migrated, services, broker_db=14, redis_db=15)
    port = free_port()
    pool = Process(
        ["worker", "--queues", "maintenance", "--processes", "2", "--threads", "1"],
        {**settings_env(settings), "RECOMENGINE_WORKER_METRICS_PORT": str(port)},
        services.workdir / "metrics-pool.log",
    ).start()
    try:
        deadline = time.monotonic() + 30
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        # The pool's parent serves the page at once; its worker processes write their part
        # once they are up.
        page = ""
        while "recomengine_log_lines_dropped_total" not in page and time.monotonic() < deadline:
            page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            time.sleep(0.2)
        assert "recomengine_queue_depth" in page
        assert "recomengine_log_lines_dropped_total" in page  # written by the worker processes
        assert not _listening(port + 1), "a second process opened a port of its own"
        listeners = Path("/proc/net/tcp").read_text()
        # Bound to 127.0.0.1 (0100007F), not to every address (00000000).
        assert f"0100007F:{port:04X}" in listeners
        assert f"00000000:{port:04X}" not in listeners
    finally:
        stop(pool)
