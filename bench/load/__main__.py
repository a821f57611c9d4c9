"""Open-model load: requests arrive at a constant rate whether or not earlier ones are answered.

    python -m bench.load [--minutes 10] [--shares 0.5,0.8]

On its own PostgreSQL, Redis, api and ingest worker, with a tenant whose catalog and events are
loaded and whose models are trained, it first measures each path's maximum (closed loop, 32
connections, 15 s): `GET /recommendations` for rotating shoppers (read) and `POST /events`
(write: the events answered 202 over the time until the worker has stored them all). Then,
for each share of that maximum, it sends each path's requests on a fixed schedule for
`--minutes`, once the ingest queues are empty: a request waits for a free connection (at most
256) but its latency runs from its scheduled moment, so a slow answer is never hidden by the
client sending less. It prints p50/p95/p99, the error rate, the ingest queue's largest lag,
and each process's resident memory before and after each phase (a leak shows as growth phase
after phase).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis import Redis as SyncRedis

from bench.harness import (
    KeepAliveAnswers,
    Platform,
    ingest_queues,
    local_platform,
    make_bench_tenant,
)
from store.db import create_pool
from workers.metrics import queue_stats

MAX_CONNECTIONS = 256
# An answer not read whole by then counts as failed (its connection is dropped), so that a lost
# answer cannot hold a connection, and the phase, for ever.
ANSWER_TIMEOUT_SECONDS = 30.0
USERS = 5_000
PRODUCTS = 1_000


class Connection(KeepAliveAnswers):
    """One keep-alive HTTP/1.1 connection to the api."""

    async def send(self, request: bytes) -> int:
        """Write one request; its answer's status once it is read whole."""
        assert self.transport is not None
        answered = self.expect()
        self.transport.write(request)
        status, _, _ = await asyncio.wait_for(answered, ANSWER_TIMEOUT_SECONDS)
        return status


@dataclass(frozen=True)
class LoadPath:
    """One path under load: how to make its n-th request."""

    name: str
    host: str
    key: str

    def request(self, number: int) -> bytes:
        """The n-th request of this path, as bytes on the wire."""
        rng = random.Random(number)
        user = f"u{rng.randrange(USERS)}"
        if self.name == "read":
            return (
                f"GET /api/v1/recommendations?userId={user}&limit=10 HTTP/1.1\r\n"
                f"Host: {self.host}\r\nX-API-Key: {self.key}\r\n\r\n"
            ).encode()
        body = orjson.dumps(
            {
                "eventType": "product_viewed",
                "userId": user,
                "productId": f"p{rng.randrange(PRODUCTS)}",
            }
        )
        return (
            f"POST /api/v1/events HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body


class Pool:
    """Idle connections to the api, opened on demand up to MAX_CONNECTIONS."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._idle: list[Connection] = []
        self._opened = 0
        self._freed = asyncio.Condition()

    async def take(self) -> Connection:
        """An idle connection still open, a new one, or the next one freed."""
        async with self._freed:
            while True:
                while self._idle and not self._idle[-1].open:
                    self._idle.pop()  # the api closed it while it waited here
                    self._opened -= 1
                if self._idle:
                    return self._idle.pop()
                if self._opened < MAX_CONNECTIONS:
                    break
                await self._freed.wait()
            self._opened += 1
        _, connection = await asyncio.get_running_loop().create_connection(
            Connection, *self._address
        )
        return connection

    async def give_back(self, connection: Connection, *, healthy: bool) -> None:
        """Return a connection (or forget a broken one)."""
        async with self._freed:
            if healthy:
                self._idle.append(connection)
            else:
                if connection.transport is not None:
                    connection.transport.close()
                self._opened -= 1
            self._freed.notify()


async def closed_loop_rate(
    pool: Pool, path: LoadPath, *, seconds: float, connections: int
) -> float:
    """Requests per second `connections` loops get answered, each sending once answered."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(seed: int) -> None:
        nonlocal done
        connection = await pool.take()
        number = seed * 10_000_000
        while time.perf_counter() < deadline:
            await connection.send(path.request(number))
            number += 1
            done += 1
        await pool.give_back(connection, healthy=True)

    started = time.perf_counter()
    await asyncio.gather(*(loop(seed) for seed in range(connections)))
    return done / (time.perf_counter() - started)


async def open_model(
    pool: Pool, path: LoadPath, *, rate: float, seconds: float
) -> tuple[list[float], int]:
    """Send `rate` requests a second for `seconds` on a fixed schedule; each one's latency (ms)
    from its scheduled moment, and how many failed (a 5xx, a 429 or a broken connection)."""
    latencies: list[float] = []
    failed = 0
    statuses: dict[int, int] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def one(number: int, scheduled: float) -> None:
        nonlocal failed
        connection = await pool.take()
        healthy = True
        try:
            status = await connection.send(path.request(number))
            if status >= 429:
                failed += 1
                statuses[status] = statuses.get(status, 0) + 1
        except (OSError, TimeoutError):
            healthy = False
            failed += 1
            statuses[0] = statuses.get(0, 0) + 1  # no answer: a broken or silent connection
        finally:
            await pool.give_back(connection, healthy=healthy)
        latencies.append((time.perf_counter() - scheduled) * 1000)

    started = time.perf_counter()
    total = int(rate * seconds)
    for number in range(total):
        scheduled = started + number / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(number, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    if statuses:
        print(f"  failed answers by status (0: none read): {statuses}")
    return latencies, failed


def resident_mb(roots: dict[str, int]) -> dict[str, float]:
    """Resident memory (MB) of each named process with its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields["PPid"])
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    found = {}
    for name, root in roots.items():
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            total += rss.get(pid, 0)
            stack.extend(child for child, parent in parents.items() if parent == pid)
        found[name] = total / 1024
    return found


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def seed_tenant(platform: Platform) -> str:
    """A tenant with a catalog, a few weeks of events and trained models; its read_write key."""
    settings = platform.settings
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        tenant = await make_bench_tenant(
            pool,
            settings,
            config={"rateLimits": {"readsPerMinute": 10_000_000, "writesPerMinute": 10_000_000}},
            permissions=["read_write"],
        )
    finally:
        await pool.close()
    key = tenant.keys["read_write"]
    catalog = [
        {
            "productId": f"p{n}",
            "name": f"Product {n}",
            "category": f"c{n % 20}",
            "price": 5 + n % 50,
        }
        for n in range(PRODUCTS)
    ]
    events = [
        {
            "eventType": random.Random(n).choice(["product_viewed", "add_to_cart", "purchase"]),
            "userId": f"u{n % USERS}",
            "productId": f"p{(n * 7919) % PRODUCTS}",
            "timestamp": f"2026-{10 + n % 2:02d}-{1 + n % 28:02d}T12:00:00+00:00",
            "metadata": {"price": 9.5},
        }
        for n in range(30_000)
    ]
    import httpx

    async with httpx.AsyncClient(base_url=platform.base_url, timeout=60) as http:
        for start in range(0, len(catalog), 1000):
            answer = await http.post(
                "/api/v1/catalog/batch",
                json={"items": catalog[start : start + 1000]},
                headers={"X-API-Key": key},
            )
            assert answer.status_code == 202, answer.text
        for start in range(0, len(events), 100):
            answer = await http.post(
                "/api/v1/events/batch",
                json={"events": events[start : start + 100]},
                headers={"X-API-Key": key},
            )
            assert answer.status_code == 202, answer.text
    await asyncio.sleep(5)  # the worker stores the last batches
    trained = platform.run_cli(["train", "--tenant", tenant.tenant_id])
    if trained.returncode != 0:
        raise SystemExit(trained.stderr)
    return key


async def drain(broker: Any, queues: list[str]) -> float:
    """Wait until the ingest queues hold nothing (what earlier phases queued is stored), so
    that a phase does not pay for the one before it; the seconds it took."""
    started = time.perf_counter()
    while True:
        stats = await asyncio.to_thread(queue_stats, broker, queues)
        if all(q.ready + q.unacked + q.delayed == 0 for q in stats):
            return time.perf_counter() - started
        await asyncio.sleep(0.5)


async def open_model_phase(
    pool: Pool,
    path: LoadPath,
    broker: Any,
    roots: dict[str, int],
    *,
    rate: float,
    minutes: float,
) -> None:
    """One path at one rate: latency quantiles, errors, the ingest lag and memory, printed."""
    before = resident_mb(roots)
    lag = 0.0

    async def sample_lag() -> None:
        nonlocal lag
        while True:
            stats = await asyncio.to_thread(queue_stats, broker, ["ingest"])
            lag = max(lag, stats[0].lag_seconds)
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_lag())
    latencies, failed = await open_model(pool, path, rate=rate, seconds=minutes * 60)
    sampler.cancel()
    after = resident_mb(roots)
    p50, p95, p99 = (quantile(latencies, q) for q in (0.5, 0.95, 0.99))
    errors = failed / max(1, len(latencies))
    print(f"  p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, errors {errors:.2%}")
    print(f"  ingest queue lag at most {lag:.2f} s")
    memory = ", ".join(f"{name} {before[name]:.0f} -> {after[name]:.0f}" for name in roots)
    print(f"  resident MB before -> after: {memory}", flush=True)


async def run(args: argparse.Namespace) -> None:
    """Bring the stack up, measure the maxima, then each share of them."""
    with local_platform("recomengine-load-") as platform:
        ingest = ingest_queues().split(",")
        queues = ",".join([*ingest, "catalog"])
        worker = platform.start(["cli.main", "worker", "--queues", queues], "worker.log")
        api = await asyncio.to_thread(platform.start_api)
        key = await seed_tenant(platform)
        host, port = "127.0.0.1", platform.settings.api_port
        pool = Pool(host, port)
        paths = [LoadPath("read", host, key), LoadPath("write", host, key)]
        roots = {"api": api.pid, "worker": worker.pid, "bench": os.getpid()}
        for server in ("postgres", "redis"):
            pid_file = (
                platform.workdir
                / server
                / ("postmaster.pid" if server == "postgres" else "redis.pid")
            )
            roots[server] = int(pid_file.read_text().split()[0])
        broker: Any = SyncRedis.from_url(platform.settings.broker_url)
        maxima = {}
        for path in paths:
            answered = await closed_loop_rate(pool, path, seconds=args.max_seconds, connections=32)
            how = "closed loop, 32 connections"
            maxima[path.name] = answered
            if path.name == "write":
                # Accepting is not the whole path: the maximum is what gets stored by the time
                # the queue is empty again (a share of the api's rate alone could outrun the
                # worker and grow the queue for the whole phase).
                draining = await drain(broker, ingest)
                maxima["write"] = answered * args.max_seconds / (args.max_seconds + draining)
                how += f", stored end to end: {answered:,.0f}/s answered, {draining:.1f} s to drain"
            print(f"{path.name}: maximum {maxima[path.name]:,.0f}/s ({how})")
        for share in args.shares:
            for path in paths:
                rate = share * maxima[path.name]
                waited = await drain(broker, ingest)
                print(
                    f"{path.name} at {share:.0%} ({rate:,.0f}/s for {args.minutes:g} min, "
                    f"after {waited:.1f} s for the ingest queues to drain):"
                )
                await open_model_phase(pool, path, broker, roots, rate=rate, minutes=args.minutes)
        print(f"the ingest queues drained {await drain(broker, ingest):.1f} s after the last phase")
        broker.close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes per share and path")
    parser.add_argument(
        "--shares", type=lambda text: [float(s) for s in text.split(",")], default=[0.5, 0.8]
    )
    parser.add_argument(
        "--max-seconds", type=float, default=15.0, help="seconds of the closed-loop maximum"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
