"""More than one machine: a data host, an api host and two worker hosts, each in a network
namespace of its own, with load through them while one worker host is cut off and brought back.

    python -m bench.multihost [--events 200000] [--rate 1000] [--keep]

Run as root (network namespaces). PostgreSQL and Redis run on the data host, listening on its
address; the api on the api host; one ingest worker pool on each worker host; every process is
pointed at the data host's address, and the bench posts from the machine's own namespace to the
api host's. Events go at a steady rate (batches of 50 and, one request in five, single events;
every request retried until it is answered 202). Once a third of them are acknowledged, and while
worker-a holds messages, worker-a's link goes down; the load goes on. After the heartbeat timeout
worker-b puts worker-a's claimed messages back on their queue and processes them: the bench waits
until every message worker-a held is acknowledged (worker-a cannot reach Redis, so worker-b did
it) and every event in them is a row. Then worker-a's link comes back, the rest of the events
are posted, the queues drain, and the bench prints what `bench.chaos` checks: every acknowledged
event stored exactly once, projections and experiment counts equal to a recount from PostgreSQL,
no dead letters. It exits 1 unless all of those are 0 and worker-b took worker-a's messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx
from redis import Redis as SyncRedis

from api.security import issue_access_token
from bench.chaos.__main__ import (
    Run,
    make_event,
    post_until_acknowledged,
    start_experiment,
    until,
    verify,
    wait_drained,
)
from bench.harness import ROOT, Platform, ingest_queues, make_bench_tenant, platform_env
from bench.multihost.datahost import servers
from bench.multihost.network import Network, hosts_network, unavailable_reason
from cli.commands.database import upgrade
from store.db import create_pool
from store.settings import Settings
from workers.broker import HEARTBEAT_TIMEOUT_MS
from workers.metrics import queue_stats
from workers.watchdog import WORKERS_KEY

ROLES = ("data", "api", "worker-a", "worker-b")
WORKER_HOSTS = ("worker-a", "worker-b")
# Each worker host's pool, as bench.chaos runs them.
POOL = ("--processes", "1", "--threads", "4")
BATCH = 50
API_PORT = 5008
METRICS_PORT = 9191
# Cuts tried until one catches worker-a holding messages (each a blip of half a second).
CUT_ATTEMPTS = 5
# The data host's PostgreSQL drops a client that stops answering after about 10 s (5 s idle,
# then 3 probes 2 s apart; or data unacknowledged for 10 s). Without it, a transaction that the
# cut-off host had open keeps the locks on its rows, and the host taking over its messages
# waits on them until the link comes back (the kernel's defaults take two hours).
SILENT_CLIENT_SETTINGS = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


@dataclass
class Takeover:
    """What happened to the messages worker-a held when it was cut off."""

    messages: int = 0
    events: int = 0
    open_transactions: int = 0  # worker-a's, holding row locks in PostgreSQL
    seconds: float | None = None  # from the cut until worker-b had acknowledged and stored all
    processed_by_b_during_cut: int = 0
    b_waiting_on_locks: float = 0.0  # seconds of the takeover worker-b's sessions waited on locks
    back_at_work: float | None = None  # from the reconnection until worker-a heartbeats again
    restored_at: float = 0.0
    # Messages waiting in the ingest lanes just before the cut and at the reconnection, and the
    # seconds from the reconnection until no more waited than before the cut.
    backlog_before: int = 0
    backlog_at_restore: int = 0
    caught_up: float | None = None


@contextmanager
def data_host(network: Network, workdir: Path) -> Iterator[Platform]:
    """PostgreSQL (migrated) and Redis on the data host; a Platform whose settings point every
    process at them, the api at the api host's address. Servers stopped on leaving."""
    host = network.hosts["data"]
    postgres, redis_server = servers(workdir, host.address, str(network.subnet))
    platform: Platform | None = None
    where = [str(workdir), host.address, str(network.subnet)]
    try:
        subprocess.run(
            [*host.prefix, sys.executable, "-m", "bench.multihost.datahost", *where],
            cwd=ROOT,
            check=True,
        )
        settings = Settings(
            environment="test",
            database_url=postgres.url,
            migration_database_url=postgres.owner_url,
            redis_url=redis_server.url(1),
            broker_url=redis_server.url(0),
            jwt_secret=secrets.token_urlsafe(32),
            api_key_secret=secrets.token_urlsafe(32),
            bcrypt_rounds=4,
            api_host=network.hosts["api"].address,
            api_port=API_PORT,
            log_level="WARNING",
        )
        # Alembic's env.py calls asyncio.run, which refuses a thread with a running loop.
        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(upgrade, settings.migration_database_url).result()
        asyncio.run(_drop_silent_clients(postgres.superuser_url))
        platform = Platform(
            settings=settings,
            workdir=workdir,
            env=platform_env(settings),
            postgres=postgres,
            redis_server=redis_server,
        )
        yield platform
    finally:
        if platform is not None:
            platform.stop_all()
        redis_server.stop()
        postgres.stop(mode="immediate")


async def _drop_silent_clients(superuser_url: str) -> None:
    connection = await asyncpg.connect(superuser_url)
    try:
        for name, value in SILENT_CLIENT_SETTINGS.items():
            await connection.execute(f"ALTER SYSTEM SET {name} = {value}")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


def start_hosts(platform: Platform, network: Network) -> dict[str, subprocess.Popen[bytes]]:
    """The api on its host and an ingest worker pool on each worker host."""
    started = {"api": platform.start_api(prefix=network.hosts["api"].prefix)}
    for role in WORKER_HOSTS:
        host = network.hosts[role]
        started[role] = platform.start(
            ["cli.main", "worker", "--queues", ingest_queues(), *POOL],
            f"{role}.log",
            env={
                "RECOMENGINE_WORKER_METRICS_HOST": host.address,
                "RECOMENGINE_WORKER_METRICS_PORT": str(METRICS_PORT),
            },
            prefix=host.prefix,
        )
    return started


def consumers_of(broker: Any, pools: dict[str, subprocess.Popen[bytes]]) -> dict[str, set[str]]:
    """Each worker host's Dramatiq consumer ids, found by the process group of its pool."""
    found: dict[str, set[str]] = {role: set() for role in WORKER_HOSTS}
    for consumer, about in broker.hgetall(WORKERS_KEY).items():
        try:
            group = os.getpgid(int(json.loads(about)["pid"]))
        except (ProcessLookupError, KeyError, ValueError):
            continue
        for role in WORKER_HOSTS:
            if group == pools[role].pid:
                found[role].add(consumer.decode())
    return found


def claimed(broker: Any, consumers: set[str]) -> dict[str, set[str]]:
    """The messages the consumers have fetched and not acknowledged, by queue."""
    queues = [q for lane in ingest_queues().split(",") for q in (lane, f"{lane}.DQ")]
    pairs = [(queue, consumer) for queue in queues for consumer in consumers]
    pipe = broker.pipeline(transaction=False)
    for queue, consumer in pairs:
        pipe.smembers(f"dramatiq:__acks__.{consumer}.{queue}")
    held: dict[str, set[str]] = {}
    for (queue, _), ids in zip(pairs, pipe.execute(), strict=True):
        if ids:
            held.setdefault(queue, set()).update(m.decode() for m in ids)
    return held


def processed(address: str) -> int | None:
    """Messages the pool on `address` has processed (its metrics), None when out of reach."""
    try:
        text = httpx.get(f"http://{address}:{METRICS_PORT}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("recomengine_messages_processed_total{")
        )
    )


async def steady_load(
    http: httpx.AsyncClient,
    run: Run,
    headers: dict[str, str],
    *,
    total: int,
    rate: float,
    clients: int,
) -> int:
    """Post events 0..total-1 at `rate` events a second (a request is sent when its events are
    due, at most `clients` at once); returns how many were sent."""
    now = datetime.now(UTC)
    rng = random.Random(21)
    slots = asyncio.Semaphore(clients)
    started = time.monotonic()
    following = 0
    pending: set[asyncio.Task[None]] = set()

    async def post(events: list[dict[str, Any]]) -> None:
        try:
            await post_until_acknowledged(http, run, headers, events)
        finally:
            slots.release()

    while following < total:
        size = 1 if rng.random() < 0.2 else BATCH
        numbers = range(following, min(following + size, total))
        following = numbers[-1] + 1
        await asyncio.sleep(max(0.0, started + following / rate - time.monotonic()))
        await slots.acquire()
        task = asyncio.create_task(post([make_event(n, now, run.experiment_id) for n in numbers]))
        pending.add(task)
        task.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))
    return following


async def cut_and_restore(
    network: Network,
    platform: Platform,
    pools: dict[str, subprocess.Popen[bytes]],
    pool: asyncpg.Pool,
    run: Run,
    *,
    cut_after: int,
    limit: float,
) -> Takeover:
    """Cut worker-a off while it holds messages, wait until worker-b has taken them over, put
    worker-a back and wait until it heartbeats again."""
    found = Takeover()
    broker: Any = SyncRedis.from_url(platform.settings.broker_url)
    worker_b = network.hosts["worker-b"].address
    address_a = network.hosts["worker-a"].address
    try:
        await until(lambda: len(run.acknowledged) >= cut_after)
        mine = consumers_of(broker, pools)["worker-a"]
        deadline = time.monotonic() + limit
        found.backlog_before = waiting(broker)
        held: dict[str, set[str]] = {}
        for attempt in range(1, CUT_ATTEMPTS + 1):
            # The hard case: cut the moment worker-a holds messages and has written rows it
            # has not committed (a message takes it some milliseconds).
            while time.monotonic() < deadline:
                if claimed(broker, mine) and await _in_transaction(pool, address_a):
                    break
                await asyncio.sleep(0.001)
            network.cut("worker-a")
            cut = time.monotonic()
            # What was on the wire has landed or is lost by now; worker-a reaches nothing after.
            await asyncio.sleep(0.5)
            held = claimed(broker, mine)
            found.open_transactions = await _in_transaction(pool, address_a)
            if (held and found.open_transactions) or attempt == CUT_ATTEMPTS:
                break
            # It finished just before the link went: a blip far shorter than the heartbeat
            # timeout, which changes nothing, and another try.
            network.restore("worker-a")
            print("  worker-a was between messages when cut off: link back, again", flush=True)
            await asyncio.sleep(1)
        before_b = await asyncio.to_thread(processed, worker_b)
        print(f"  worker-a cut off at {len(run.acknowledged):,} acknowledged events", flush=True)
        bodies = [
            body
            for queue, ids in held.items()
            for body in broker.hmget(f"dramatiq:{queue}.msgs", list(ids))
            if body is not None
        ]
        event_ids = {event["id"] for body in bodies for event in json.loads(body)["args"][1]}
        found.messages = sum(len(ids) for ids in held.values())
        found.events = len(event_ids)
        print(
            f"  worker-a held {found.messages} messages ({found.events} events) and "
            f"{found.open_transactions} open transactions",
            flush=True,
        )
        while found.messages and time.monotonic() < deadline:
            acknowledged = all(
                not any(broker.hmget(f"dramatiq:{queue}.msgs", list(ids)))
                for queue, ids in held.items()
            )
            if acknowledged and await _all_stored(pool, run.tenant_id, event_ids):
                found.seconds = time.monotonic() - cut
                break
            if await _waiting_on_locks(pool, worker_b):
                found.b_waiting_on_locks += 0.2
            await asyncio.sleep(0.2)
        after_b = await asyncio.to_thread(processed, worker_b)
        if before_b is not None and after_b is not None:
            found.processed_by_b_during_cut = after_b - before_b
        # Past the heartbeat timeout, whatever happened: the cut must be one a host notices.
        await asyncio.sleep(max(0.0, cut + HEARTBEAT_TIMEOUT_MS / 1000 + 2 - time.monotonic()))
        network.restore("worker-a")
        found.restored_at, restored_wall = time.monotonic(), time.time()
        found.backlog_at_restore = waiting(broker)
        print(f"  worker-a back after {found.restored_at - cut:.1f} s cut off", flush=True)
        while time.monotonic() < found.restored_at + limit:
            beats = [broker.zscore("dramatiq:__heartbeats__", consumer) for consumer in mine]
            if any(beat is not None and beat >= restored_wall * 1000 for beat in beats):
                found.back_at_work = time.monotonic() - found.restored_at
                break
            await asyncio.sleep(0.1)
        while time.monotonic() < found.restored_at + limit:
            if waiting(broker) <= max(found.backlog_before, 2):
                found.caught_up = time.monotonic() - found.restored_at
                break
            await asyncio.sleep(0.1)
    finally:
        network.restore("worker-a")  # when stopped while it was cut off
        broker.close()
    return found


def waiting(broker: Any) -> int:
    """Messages waiting in the ingest lanes (their tenants' sub-queues included)."""
    return sum(stats.ready for stats in queue_stats(broker, ingest_queues().split(",")))


async def _waiting_on_locks(pool: asyncpg.Pool, address: str) -> int:
    """Sessions of the host at `address` waiting for a lock another session holds."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::inet"
        " AND wait_event_type = 'Lock'"
    )
    return int(await pool.fetchval(query, address))


async def _in_transaction(pool: asyncpg.Pool, address: str) -> int:
    """Transactions that the host at `address` has open and that have written something."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::inet"
        " AND backend_xid IS NOT NULL"
    )
    return int(await pool.fetchval(query, address))


async def _all_stored(pool: asyncpg.Pool, tenant_id: str, event_ids: set[str]) -> bool:
    query = "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_id = ANY($2::text[])"
    return int(await pool.fetchval(query, tenant_id, list(event_ids))) == len(event_ids)


async def multihost(platform: Platform, network: Network, args: argparse.Namespace) -> int:
    """Start the hosts, load through them with worker-a cut off midway, verify, print."""
    settings = platform.settings
    # The bench's own connections: as the superuser, which sees every tenant's rows.
    assert platform.postgres is not None
    admin = settings.model_copy(update={"database_url": platform.postgres.superuser_url})
    pool = await create_pool(admin, min_size=1, max_size=4)
    try:
        tenant = await make_bench_tenant(
            pool,
            settings,
            config={"rateLimits": {"writesPerMinute": 10_000_000}},
            permissions=["read_write"],
        )
        pools = await asyncio.to_thread(start_hosts, platform, network)
        await _until_registered(platform, pools)
        token, _ = issue_access_token(admin_id=tenant.admin_id, settings=settings)
        experiment_id = await start_experiment(
            platform.base_url, tenant_id=tenant.tenant_id, token=token
        )
        run = Run(tenant_id=tenant.tenant_id, experiment_id=experiment_id)
        headers = {"X-API-Key": tenant.keys["read_write"]}
        hosts = ", ".join(f"{h.role} {h.address}" for h in network.hosts.values())
        print(f"hosts on {network.subnet}: {hosts}")
        print(
            f"posting {args.events:,} events at {args.rate:,.0f} a second to the api host; "
            f"heartbeat timeout {HEARTBEAT_TIMEOUT_MS / 1000:.0f} s "
            "(workers.broker.HEARTBEAT_TIMEOUT_MS); PostgreSQL drops silent clients after "
            "about 10 s (tcp_keepalives_*, tcp_user_timeout)",
            flush=True,
        )
        started = time.monotonic()
        limits = httpx.Limits(max_connections=args.clients)
        async with httpx.AsyncClient(base_url=platform.base_url, timeout=30, limits=limits) as http:
            loader = asyncio.create_task(
                steady_load(
                    http, run, headers, total=args.events, rate=args.rate, clients=args.clients
                )
            )
            takeover = await cut_and_restore(
                network,
                platform,
                pools,
                pool,
                run,
                cut_after=args.events // 3,
                limit=args.drain_limit,
            )
            sent = await loader
        posting = time.monotonic() - started
        last = time.monotonic()
        await wait_drained(platform, pool, run, limit=args.drain_limit)
        drained = time.monotonic()
        figures = await verify(platform, pool, run, poison=set())
        per_host = {role: processed(network.hosts[role].address) for role in WORKER_HOSTS}
    finally:
        await pool.close()
    figures["dead letters"] = figures.pop("dead letters not poison")
    figures.pop("poison not dead-lettered")
    print(
        f"sent {sent:,} events in {run.requests:,} requests ({run.retries:,} retried) in "
        f"{posting:.1f} s; {len(run.acknowledged):,} acknowledged"
    )
    print(
        f"  worker-b took over worker-a's {takeover.messages} messages ({takeover.events} events) "
        f"{_seconds(takeover.seconds)} after the cut, processing "
        f"{takeover.processed_by_b_during_cut:,} messages meanwhile (its sessions waited on "
        f"row locks for about {takeover.b_waiting_on_locks:.0f} s of it)"
    )
    print(f"  worker-a heartbeating again {_seconds(takeover.back_at_work)} after reconnection")
    print(
        f"  backlog: {takeover.backlog_at_restore:,} messages waiting at reconnection "
        f"({takeover.backlog_before:,} before the cut), caught up "
        f"{_seconds(takeover.caught_up)} after reconnection"
    )
    print(
        f"  drained {drained - last:.1f} s after the last event was acknowledged "
        f"({drained - takeover.restored_at:.1f} s after reconnection)"
    )
    for role, count in per_host.items():
        print(f"  {role} processed {count if count is not None else 'unknown'} messages")
    for name, value in figures.items():
        print(f"  {name}: {value}")
    took_over = takeover.messages > 0 and takeover.seconds is not None
    return 0 if took_over and not any(figures.values()) else 1


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


async def _until_registered(platform: Platform, pools: dict[str, subprocess.Popen[bytes]]) -> None:
    """Until each worker host's pool has a consumer registered in the broker."""
    broker: Any = SyncRedis.from_url(platform.settings.broker_url)
    deadline = time.monotonic() + 60
    try:
        while not all(consumers_of(broker, pools).values()):
            for role, process in pools.items():
                if process.poll() is not None:
                    log = (platform.workdir / f"{role}.log").read_text(errors="replace")
                    raise RuntimeError(f"{role}'s pool exited:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("the worker pools did not register in 60 s")
            await asyncio.sleep(0.2)
    finally:
        broker.close()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # a SIGTERM tears down like Ctrl-C


def main() -> None:
    """Parse the arguments, build the hosts, run, tear everything down."""
    parser = argparse.ArgumentParser(prog="python -m bench.multihost", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1_000, help="events a second")
    parser.add_argument("--clients", type=int, default=16, help="requests in flight at most")
    parser.add_argument(
        "--drain-limit", type=float, default=600, help="seconds to wait for each phase"
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder and logs")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot make network namespaces here: {reason}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="recomengine-multihost-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (the postgres account must reach it as root)
    code = 1
    try:
        with hosts_network(ROLES) as network, data_host(network, workdir) as platform:
            code = asyncio.run(multihost(platform, network, args))
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
