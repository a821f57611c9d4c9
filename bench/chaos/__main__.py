"""Chaos: events posted through the api while processes die, then proof that nothing accepted
was lost or counted twice.

    python -m bench.chaos [--events 1000000] [--keep]

On its own PostgreSQL and Redis, with an api and two worker pools, it posts `--events` events
(singles and batches of 100, with repeated events and retried requests among them; a client
retries every request until it is answered 202, as the SDK does) and, in turn: SIGKILLs a worker
pool mid-transaction, SIGSTOPs one past its heartbeat and resumes it, kills Redis with -9 and
restarts it from its AOF, restarts PostgreSQL, restarts the api. Poison messages are queued at the
start. When the queues are empty it prints how many acknowledged events are lost or stored twice,
how many projections and experiment counts differ from a recount from PostgreSQL
(`recomengine rebuild --check`'s code), what the dead-letter queue holds beyond the poison, and the
recovery time after each fault: from the fault's end until an event posted then is stored. It
exits 1 unless all of those are 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import httpx
from redis import Redis as SyncRedis

from api.security import issue_access_token
from bench.harness import Platform, ingest_queues, local_platform, make_bench_tenant, stop_process
from store.db import create_pool
from store.rebuild import check_database_url, check_tenant
from store.redis import create_redis
from workers.broker import HEARTBEAT_TIMEOUT_MS
from workers.dead_letters import dead_messages
from workers.metrics import queue_stats

BATCH = 100
USERS = 2_000
PRODUCTS = 300
POISON = 3
KINDS = (
    ("product_viewed", 55),
    ("recommendation_impressed", 20),
    ("recommendation_clicked", 8),
    ("add_to_cart", 9),
    ("purchase", 8),
)
FAULTS = ("worker SIGKILL", "worker SIGSTOP", "Redis kill -9", "PostgreSQL restart", "api restart")


@dataclass
class Run:
    """What the clients sent and what the api acknowledged."""

    tenant_id: str
    experiment_id: str
    acknowledged: set[str] = field(default_factory=set)
    # Events numbered below this may be posted: the load waits for each fault before it goes
    # past the next one's share, so that every fault meets events in flight.
    allowed: int = 0
    requests: int = 0
    retries: int = 0
    repeats: int = 0
    recovery: dict[str, float] = field(default_factory=dict)


def make_event(number: int, now: datetime, experiment_id: str) -> dict[str, Any]:
    """Event `number` of the run: the same number always makes the same event."""
    rng = random.Random(number)
    kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    user, product = f"u{rng.randrange(USERS)}", f"p{rng.randrange(PRODUCTS)}"
    event: dict[str, Any] = {
        "eventId": f"chaos-{number}",
        "eventType": kind,
        "userId": user,
        "productId": product,
        # 3 ms apart: two events of one user, type and product at one moment would be one
        # event by the dedupe rule, stored once however many ids they came with.
        "timestamp": (now - timedelta(milliseconds=3 * (number % 1_000_000))).isoformat(),
    }
    if kind.startswith("recommendation_"):
        variant = "variant" if int(user[1:]) % 2 else "control"
        event["metadata"] = {
            "placementId": "home",
            "strategy": "trending",
            "experimentId": experiment_id,
            "variant": variant,
        }
    elif kind == "purchase":
        event["metadata"] = {"price": round(5 + rng.random() * 50, 2)}
    return event


async def post_until_acknowledged(
    http: httpx.AsyncClient, run: Run, headers: dict[str, str], events: list[dict[str, Any]]
) -> None:
    """POST one request (a single or a batch) again and again until it is answered 202."""
    single = len(events) == 1
    path, body = ("/api/v1/events", events[0]) if single else ("/api/v1/events/batch", None)
    payload = body if single else {"events": events}
    delay = 0.05
    while True:
        run.requests += 1
        try:
            answer = await http.post(path, json=payload, headers=headers)
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 202:
            if single:
                run.acknowledged.add(events[0]["eventId"])
            else:
                for result in answer.json()["results"]:
                    if result["status"] in ("accepted", "duplicate"):
                        run.acknowledged.add(result["eventId"])
            return
        if answer is not None and answer.status_code not in (429, 502, 503, 504):
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
        run.retries += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def stored(pool: asyncpg.Pool, tenant_id: str, event_id: str) -> bool:
    """Whether the event is a row."""
    query = "SELECT 1 FROM events WHERE tenant_id = $1 AND event_id = $2"
    return bool(await pool.fetchval(query, tenant_id, event_id))


class Faults:
    """The processes and servers of the run, and how each fault is done to them."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.api = platform.start_api()
        self.pools = [self._start_pool("a"), self._start_pool("b")]

    def _start_pool(self, name: str) -> subprocess.Popen[bytes]:
        # Both ingestion lanes: batches of more than 20 events are bulk traffic.
        queues = ["--queues", ingest_queues()]
        args = ["cli.main", "worker", *queues, "--processes", "1", "--threads", "4"]
        return self.platform.start(args, f"worker-{name}.log")

    async def inject(self, fault: str) -> None:
        """Do `fault` and undo it (restart what was stopped)."""
        platform = self.platform
        if fault == "worker SIGKILL":
            os.killpg(self.pools[0].pid, signal.SIGKILL)
            self.pools[0].wait()
            self.pools[0] = self._start_pool("a")
        elif fault == "worker SIGSTOP":
            os.killpg(self.pools[1].pid, signal.SIGSTOP)
            # Past the heartbeat: the other pool takes the stopped one's messages.
            await asyncio.sleep(HEARTBEAT_TIMEOUT_MS / 1000 + 5)
            os.killpg(self.pools[1].pid, signal.SIGCONT)
        elif fault == "Redis kill -9":
            redis_server = platform.redis_server
            assert redis_server is not None
            pid = int((redis_server.data_dir / "redis.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(1)
            await asyncio.to_thread(redis_server.start)
        elif fault == "PostgreSQL restart":
            postgres = platform.postgres
            assert postgres is not None
            await asyncio.to_thread(postgres.stop, mode="fast")
            await asyncio.sleep(1)
            await asyncio.to_thread(postgres.start)
        elif fault == "api restart":
            stop_process(self.api)
            self.api = await asyncio.to_thread(platform.start_api)


async def load(
    http: httpx.AsyncClient, run: Run, headers: dict[str, str], *, total: int, clients: int
) -> None:
    """Post events 0..total-1 from `clients` concurrent clients: batches, one request in five
    a single event, and one in fifty repeating events of an earlier request."""
    now = datetime.now(UTC)
    following = 0

    async def client(seed: int) -> None:
        nonlocal following
        rng = random.Random(seed)
        while following < total:
            size = 1 if rng.random() < 0.2 else BATCH - 5
            if following >= run.allowed:
                await asyncio.sleep(0.05)
                continue
            end = min(following + size, run.allowed, total)
            taken, following = list(range(following, end)), end
            events = [make_event(n, now, run.experiment_id) for n in taken]
            if taken[0] > BATCH and rng.random() < 0.02:
                # Room for them: a batch holds 100 at most.
                earlier = rng.sample(range(taken[0]), k=min(5, BATCH - len(taken), taken[0]))
                events += [make_event(n, now, run.experiment_id) for n in earlier]
                run.repeats += len(earlier)
            await post_until_acknowledged(http, run, headers, events)

    await asyncio.gather(*(client(seed) for seed in range(clients)))


async def faults_during(
    faults: Faults,
    run: Run,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    total: int,
) -> None:
    """Each fault in turn, spread over the load; then the time until a new event lands."""
    share = total // (len(FAULTS) + 1)
    run.allowed = 2 * share
    for index, fault in enumerate(FAULTS):
        await until(partial(_at_least, run.acknowledged, (index + 1) * share))
        print(f"  {fault} at {len(run.acknowledged):,} acknowledged events", flush=True)
        await faults.inject(fault)
        healed = time.monotonic()
        probe = make_event(index, datetime.now(UTC), run.experiment_id)
        probe.update(eventId=f"probe-{index}", userId=f"probe-{index}")
        await post_until_acknowledged(http, run, headers, [probe])
        while True:
            if await _stored_or_retry(pool, run.tenant_id, probe["eventId"]):
                break
            await asyncio.sleep(0.05)
        run.recovery[fault] = time.monotonic() - healed
        run.allowed = total if index == len(FAULTS) - 1 else (index + 3) * share


def _at_least(items: set[str], count: float) -> bool:
    return len(items) >= count


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (which other tasks make true) every 50 ms."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.05)


async def _stored_or_retry(pool: asyncpg.Pool, tenant_id: str, event_id: str) -> bool:
    try:
        return await stored(pool, tenant_id, event_id)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False  # PostgreSQL is still coming back


async def wait_drained(platform: Platform, pool: asyncpg.Pool, run: Run, *, limit: float) -> float:
    """Until every acknowledged event is a row and both ingest lanes are empty, retries waiting
    for their delay included (a message whose rows are stored may still owe its projections,
    when Redis was down as it ran); seconds taken."""
    started = time.monotonic()
    broker: Any = SyncRedis.from_url(platform.settings.broker_url)
    lanes = ingest_queues().split(",")
    try:
        while time.monotonic() - started < limit:
            rows = await pool.fetchval(
                "SELECT count(*) FROM events WHERE tenant_id = $1", run.tenant_id
            )
            busy = sum(s.ready + s.unacked for s in queue_stats(broker, lanes))
            # Every delayed message, also those a worker has already fetched to wait out.
            busy += sum(broker.hlen(f"dramatiq:{lane}.DQ.msgs") for lane in lanes)
            if rows >= len(run.acknowledged) and busy == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        broker.close()
    # The last messages' side effects run right after their rows commit.
    await asyncio.sleep(1)
    return time.monotonic() - started


async def verify(
    platform: Platform, pool: asyncpg.Pool, run: Run, poison: set[str]
) -> dict[str, int]:
    """Lost, duplicated and mismatched figures, and dead letters that were not poison."""
    ids = [
        r["event_id"]
        for r in await pool.fetch("SELECT event_id FROM events WHERE tenant_id = $1", run.tenant_id)
    ]
    stored_ids = set(ids)
    live = create_redis(platform.settings)
    scratch_url = check_database_url(platform.settings.redis_url)
    scratch = create_redis(platform.settings.model_copy(update={"redis_url": scratch_url}))
    try:
        *_, projection_differences = await check_tenant(
            pool, live, scratch, tenant_id=run.tenant_id
        )
    finally:
        await live.aclose()
        await scratch.aclose()
    for line in projection_differences[:10]:
        print(f"  differs: {line}")
    experiment_differences = await pool.fetchval(
        EXPERIMENT_RECOUNT, run.tenant_id, run.experiment_id
    )
    broker: Any = SyncRedis.from_url(platform.settings.broker_url)
    try:
        dead = {
            d.message.message_id
            for lane in ingest_queues().split(",")
            for d in dead_messages(broker, queue=lane, limit=10_000)
        }
    finally:
        broker.close()
    return {
        "lost": len(run.acknowledged - stored_ids),
        "duplicated": len(ids) - len(stored_ids),
        "unacknowledged stored": len(stored_ids - run.acknowledged),
        "projections mismatched": len(projection_differences),
        "experiment counts mismatched": int(experiment_differences),
        "dead letters not poison": len(dead - poison),
        "poison not dead-lettered": len(poison - dead),
    }


# Users whose per-user experiment counts differ from the raw events and attributions.
EXPERIMENT_RECOUNT = """
WITH recount AS (
    SELECT user_id, metadata->>'variant' AS variant,
           count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS impressions,
           count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
           0::bigint AS purchases, 0::numeric AS revenue
    FROM events WHERE tenant_id = $1 AND metadata->>'experimentId' = $2::text
      AND event_type IN ('recommendation_impressed', 'recommendation_clicked')
    GROUP BY 1, 2
    UNION ALL
    SELECT user_id, variant, 0, 0, count(*), sum(revenue)
    FROM revenue_attributions WHERE tenant_id = $1 AND experiment_id = $2::uuid
    GROUP BY 1, 2
), expected AS (
    SELECT user_id, variant, sum(impressions) AS impressions, sum(clicks) AS clicks,
           sum(purchases) AS purchases, sum(revenue) AS revenue
    FROM recount GROUP BY 1, 2
), counted AS (
    SELECT user_id, variant, impressions, clicks, purchases, revenue
    FROM experiment_user_metrics WHERE tenant_id = $1 AND experiment_id = $2::uuid
)
SELECT count(*) FROM expected e FULL JOIN counted c USING (user_id)
WHERE e.user_id IS NULL OR c.user_id IS NULL OR e.variant <> c.variant
   OR e.impressions <> c.impressions OR e.clicks <> c.clicks
   OR e.purchases <> c.purchases OR e.revenue <> c.revenue
"""


async def start_experiment(base_url: str, *, tenant_id: str, token: str) -> str:
    """A running experiment on the `home` placement, made through the api."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as http:
        made = await http.post(
            f"/api/v1/tenants/{tenant_id}/experiments",
            json={
                "name": "chaos",
                "placementId": "home",
                "controlStrategy": "trending",
                "variantStrategy": "collaborative",
                "trafficSplit": 50,
                "metric": "ctr",
            },
        )
        assert made.status_code == 201, made.text
        experiment_id = str(made.json()["id"])
        started = await http.patch(
            f"/api/v1/tenants/{tenant_id}/experiments/{experiment_id}", json={"status": "running"}
        )
        assert started.status_code == 200, started.text
    return experiment_id


def queue_poison(platform: Platform, tenant_id: str) -> set[str]:
    """Messages no retry can store (not a list of events): they must end dead-lettered."""
    from dramatiq import Message

    from workers.broker import build_broker

    broker = build_broker(platform.settings.broker_url)
    ids = set()
    for n in range(POISON):
        message: Message[Any] = Message(
            queue_name="ingest",
            actor_name="ingest_events",
            args=(tenant_id, f"poison {n}"),
            kwargs={},
            options={},
        )
        ids.add(broker.enqueue(message).message_id)
    broker.close()
    return ids


async def chaos(args: argparse.Namespace) -> int:
    """Bring the stack up, post under faults, verify, print."""
    with local_platform("recomengine-chaos-", keep=args.keep) as platform:
        settings = platform.settings
        pool = await create_pool(settings, min_size=1, max_size=4)
        bench_tenant = await make_bench_tenant(
            pool,
            settings,
            config={"rateLimits": {"writesPerMinute": 10_000_000}},
            permissions=["read_write"],
        )
        tenant_id = bench_tenant.tenant_id
        faults = Faults(platform)
        token, _ = issue_access_token(admin_id=bench_tenant.admin_id, settings=settings)
        experiment_id = await start_experiment(platform.base_url, tenant_id=tenant_id, token=token)
        run = Run(tenant_id=tenant_id, experiment_id=experiment_id)
        poison = queue_poison(platform, tenant_id)
        headers = {"X-API-Key": bench_tenant.keys["read_write"]}
        print(f"posting {args.events:,} events under {len(FAULTS)} faults", flush=True)
        started = time.monotonic()
        limits = httpx.Limits(max_connections=args.clients)
        async with httpx.AsyncClient(base_url=platform.base_url, timeout=30, limits=limits) as http:
            loader = asyncio.create_task(
                load(http, run, headers, total=args.events, clients=args.clients)
            )
            await faults_during(faults, run, pool, http, headers, total=args.events)
            await loader
        posting = time.monotonic() - started
        await pool.close()
        pool = await create_pool(settings, min_size=1, max_size=4)  # connections of before died
        drained = await wait_drained(platform, pool, run, limit=args.drain_limit)
        figures = await verify(platform, pool, run, poison)
        await pool.close()
        print(
            f"posted {args.events:,} events ({run.repeats:,} repeated) in {run.requests:,} "
            f"requests ({run.retries:,} retried) in {posting:.1f} s; drained "
            f"{drained:.1f} s later; {len(run.acknowledged):,} acknowledged"
        )
        for fault in FAULTS:
            print(f"  recovery after {fault}: {run.recovery.get(fault, float('nan')):.1f} s")
        for name, value in figures.items():
            print(f"  {name}: {value}")
        return 0 if not any(figures.values()) else 1


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=6, help="concurrent HTTP clients")
    parser.add_argument(
        "--drain-limit", type=float, default=1800, help="seconds to wait at the end"
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder and logs")
    sys.exit(asyncio.run(chaos(parser.parse_args())))


if __name__ == "__main__":
    main()
