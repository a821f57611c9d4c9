"""Runs of the real api and worker pools on broker and projection databases of their own, for
the tests that kill, stop or hang them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from conftest import Process, Services, settings_env, wait_for

from cli.localservices import free_port
from store.settings import Settings

FAST_WRITES = {"rateLimits": {"writesPerMinute": 1_000_000}}


def run_settings(base: Settings, services: Services, *, broker_db: int, redis_db: int) -> Settings:
    """Settings with broker and projection databases of their own and a free api port (the
    session worker must not take these messages)."""
    return base.model_copy(
        update={
            "broker_url": services.redis.url(broker_db),
            "redis_url": services.redis.url(redis_db),
            "api_port": free_port(),
        }
    )


def start(settings: Settings, args: list[str], log: Path) -> Process:
    """Start `recomengine <args>` with these settings."""
    return Process(args, settings_env(settings), log).start()


def stop(process: Process) -> None:
    """SIGTERM to the main process only: Dramatiq forwards it to its worker processes, and a
    second copy of the signal (as a process-group kill sends) makes them hang until killed."""
    if process.popen is None or process.popen.poll() is not None:
        return
    process.popen.send_signal(signal.SIGTERM)
    try:
        process.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.stop(kill=True)


def start_api(settings: Settings, log: Path) -> Process:
    """Start an api with these settings and wait until it answers."""
    api = start(settings, ["api"], log)
    wait_for(f"http://127.0.0.1:{settings.api_port}/health", timeout=60, process=api)
    return api


def batch(run: str, number: int, size: int = 100) -> list[dict[str, Any]]:
    """`size` distinct product views of one user of the run, a minute old."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    return [
        {
            "eventType": "product_viewed",
            "userId": f"{run}-u{number}",
            "productId": f"sku-{i}",
            "timestamp": (now - timedelta(milliseconds=i)).isoformat(),
        }
        for i in range(size)
    ]


async def landed(pool: asyncpg.Pool, tenant_id: str) -> tuple[int, int]:
    """The tenant's stored events: rows and distinct event ids."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events WHERE tenant_id = $1",
        tenant_id,
    )
    assert row is not None
    return int(row["n"]), int(row["d"])


async def wait_landed(pool: asyncpg.Pool, tenant_id: str, expected: int, within: float) -> int:
    """Wait until `expected` events are stored or `within` seconds pass; the count seen last."""
    deadline = time.monotonic() + within
    while True:
        try:
            count, _ = await landed(pool, tenant_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            count = -1
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.25)
