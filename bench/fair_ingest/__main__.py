"""Fair ingestion benchmark: one tenant floods, another posts a trickle of single events.

    .venv/bin/python -m bench.fair_ingest [--duration 30] [--import-events 100000]
        [--a-writes-per-minute 1000] [--compare main]

Starts its own PostgreSQL and Redis, the api, a worker pool per ingestion lane (one pool on
`ingest` for trees from before the lanes), then, for each code tree:

1. A alone: tenant A posts batches of 100 events from 6 connections with 5 of its keys, each
   key at its write limit (the most A may send), for --duration s: A's end-to-end throughput
   (A's rows stored during the flood, per second);
2. A and B: the same flood while tenant B posts 10 single events a second: B's
   enqueue-to-row latency p50/p95/max (the event's timestamp is its send time, the row's
   received_at its insert), B's freshness (from posting a purchase of a product to that
   product first appearing in B's trending recommendations), A's throughput against (1);
3. A imports --import-events events with `recomengine import events` while B posts as in
   (2): B's latency and freshness, and the import's duration against the import alone.

`--compare REF` runs the same on the code of git REF first (exported with `git archive`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import (
    ROOT,
    Platform,
    export_tree,
    ingest_queues,
    local_platform,
    make_bench_tenant,
)
from store.api_keys import issue_api_key
from store.db import create_pool

BATCH = 100
A_KEYS = 5
# A's write limit per key (its plan's): 5 keys at 1,000 batches of 100 a minute is about 8,300
# events a second, more than one worker pool stores, as in the report that made the lanes.
A_WRITES_PER_MINUTE = 1_000
A_CONNECTIONS = 6
B_PER_SECOND = 10
B_PRODUCTS = 40


@dataclass
class Quiet:
    """What tenant B saw."""

    sent: list[tuple[str, float]] = field(default_factory=list)  # (event id, send time)
    freshness_s: list[float] = field(default_factory=list)
    unfresh: int = 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _keys(pool: asyncpg.Pool, platform: Platform, tenant_id: str, count: int) -> list[str]:
    made = []
    for number in range(count):
        _, raw = await issue_api_key(
            pool,
            tenant_id=tenant_id,
            name=f"flood {number}",
            permission="read_write",
            environment="live",
            secret=platform.settings.api_key_secret,
        )
        made.append(raw)
    return made


async def flood(base: str, keys: list[str], *, seconds: float, run: str, per_minute: int) -> int:
    """Tenant A's batches, each key at its write limit `per_minute`; returns the events
    accepted."""
    per_key = per_minute / 60
    accepted = 0
    stop_at = time.monotonic() + seconds

    async def connection(number: int) -> None:
        nonlocal accepted
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            sent = 0
            interval = A_CONNECTIONS / (per_key * len(keys))
            started = time.monotonic()
            while time.monotonic() < stop_at:
                key = keys[(number + sent) % len(keys)]
                moment = datetime.now(UTC).isoformat()
                events = [
                    {
                        "eventType": "product_viewed",
                        "userId": f"{run}-c{number}-{sent}",
                        "productId": f"a-p{i}",
                        "timestamp": moment,
                    }
                    for i in range(BATCH)
                ]
                answer = await http.post(
                    "/api/v1/events/batch", json={"events": events}, headers={"X-API-Key": key}
                )
                if answer.status_code == 202:
                    accepted += int(answer.json()["accepted"])
                sent += 1
                pause = started + sent * interval - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)

    await asyncio.gather(*(connection(n) for n in range(A_CONNECTIONS)))
    return accepted


async def trickle(base: str, read_key: str, write_key: str, *, seconds: float, run: str) -> Quiet:
    """Tenant B's single events, 10 a second; every tenth a purchase of a product nobody bought
    yet, followed until B's trending recommendations show it."""
    quiet = Quiet()
    stop_at = time.monotonic() + seconds
    follows: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def follow(product: str, posted: float) -> None:
            while time.monotonic() - posted < 10:
                answer = await http.get(
                    "/api/v1/recommendations",
                    params={"userId": f"{run}-reader", "strategy": "trending", "limit": 50},
                    headers={"X-API-Key": read_key},
                )
                if answer.status_code == 200 and product in {
                    item["productId"] for item in answer.json()["data"]
                }:
                    quiet.freshness_s.append(time.monotonic() - posted)
                    return
                await asyncio.sleep(0.05)
            quiet.unfresh += 1

        number = 0
        started = time.monotonic()
        while time.monotonic() < stop_at:
            buying = number % 10 == 0
            product = f"b-p{(number // 10) % B_PRODUCTS}" if buying else f"b-p{number % 7}"
            sent = time.monotonic()
            answer = await http.post(
                "/api/v1/events",
                json={
                    "eventType": "purchase" if buying else "product_viewed",
                    "userId": f"{run}-b{number}",
                    "productId": product,
                    "timestamp": datetime.now(UTC).isoformat(),
                    **({"metadata": {"price": 10}} if buying else {}),
                },
                headers={"X-API-Key": write_key},
            )
            if answer.status_code in (200, 202):
                quiet.sent.append((answer.json()["eventId"], sent))
                if buying and (number // 10) < B_PRODUCTS:
                    follows.append(asyncio.create_task(follow(product, sent)))
            number += 1
            pause = started + number / B_PER_SECOND - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        await asyncio.gather(*follows)
    return quiet


async def _latencies(
    pool: asyncpg.Pool, tenant_id: str, since: datetime, expected: int, within: float = 60
) -> list[float]:
    """B's enqueue-to-row seconds of its events sent since `since`, once the `expected` ones
    landed (or `within` s passed)."""
    query = (
        "SELECT extract(epoch FROM received_at - occurred_at) AS s FROM events "
        "WHERE tenant_id = $1 AND occurred_at >= $2"
    )
    deadline = time.monotonic() + within
    rows = await pool.fetch(query, tenant_id, since)
    while len(rows) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rows = await pool.fetch(query, tenant_id, since)
    return [float(r["s"]) for r in rows]


async def _rows(pool: asyncpg.Pool, tenant_id: str, since: datetime, until: datetime) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND received_at BETWEEN $2 AND $3",
            tenant_id,
            since,
            until,
        )
    )


async def _drain(pool: asyncpg.Pool, tenant_id: str, expected: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        count = await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id)
        if count >= expected:
            return
        await asyncio.sleep(0.5)


def _quiet_line(label: str, quiet: Quiet, latencies: list[float]) -> str:
    fresh = quiet.freshness_s
    return (
        f"  B ({label}): {len(quiet.sent)} events, enqueue-to-row p50 "
        f"{_percentile(latencies, 0.5):.2f} s, p95 {_percentile(latencies, 0.95):.2f} s, "
        f"max {max(latencies, default=float('nan')):.2f} s; recommendations reflect a purchase "
        f"p50 {_percentile(fresh, 0.5):.2f} s, p95 {_percentile(fresh, 0.95):.2f} s, "
        f"max {max(fresh, default=float('nan')):.2f} s, not within 10 s: {quiet.unfresh}"
    )


async def scenario(args: argparse.Namespace, code: Path, label: str) -> list[str]:
    """One code tree on fresh servers: the three measurements."""
    lines = [f"=== {label} ==="]
    with local_platform("recomengine-bench-fair-", keep=args.keep) as platform:
        pool = await create_pool(platform.settings, min_size=1, max_size=4)
        try:
            queues = [*ingest_queues(code).split(","), "catalog,projections,maintenance"]
            for queue in queues:
                platform.start(
                    ["cli.main", "worker", "--queues", queue, "--processes", "1"],
                    f"worker-{queue.split(',')[0]}.log",
                    cwd=code,
                )
            await asyncio.to_thread(platform.start_api, cwd=code)
            lines.append(f"  worker pools: {', '.join(queues)} (one process each)")
            base = platform.base_url
            flooding = await make_bench_tenant(
                pool,
                platform.settings,
                config={"rateLimits": {"writesPerMinute": args.a_writes_per_minute}},
            )
            a_keys = await _keys(pool, platform, flooding.tenant_id, A_KEYS)
            # B's limits let it post 10 events and follow its purchases' freshness each second.
            limits = {"rateLimits": {"writesPerMinute": 6_000, "readsPerMinute": 100_000}}
            quiet = await make_bench_tenant(
                pool, platform.settings, config=limits, permissions=["read", "read_write"]
            )
            catalog = [
                {"productId": f"b-p{i}", "name": f"B product {i}", "price": 10, "available": True}
                for i in range(B_PRODUCTS)
            ]
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                answer = await http.post(
                    "/api/v1/catalog/batch",
                    json={"items": catalog},
                    headers={"X-API-Key": quiet.keys["read_write"]},
                )
                answer.raise_for_status()
            await asyncio.sleep(2)

            async def flood_phase(with_b: bool) -> tuple[float, int, Quiet | None]:
                run = uuid.uuid4().hex[:6]
                since = datetime.now(UTC)
                tasks: list[Any] = [
                    flood(
                        base,
                        a_keys,
                        seconds=args.duration,
                        run=run,
                        per_minute=args.a_writes_per_minute,
                    )
                ]
                if with_b:
                    tasks.append(
                        trickle(
                            base,
                            quiet.keys["read"],
                            quiet.keys["read_write"],
                            seconds=args.duration,
                            run=run,
                        )
                    )
                results = await asyncio.gather(*tasks)
                until = since + timedelta(seconds=args.duration)
                stored = await _rows(pool, flooding.tenant_id, since, until)
                return stored / args.duration, results[0], results[1] if with_b else None

            alone, accepted, _ = await flood_phase(with_b=False)
            print(f"[{label}] A alone: {accepted:,} accepted, {alone:,.0f}/s stored", flush=True)
            lines.append(
                f"  A alone: {accepted / args.duration:,.0f} events/s accepted, "
                f"{alone:,.0f} events/s stored during the flood"
            )
            # A's backlog of the first flood is stored before the second starts.
            await _drain(pool, flooding.tenant_id, accepted, within=180)
            first = accepted
            since = datetime.now(UTC)
            together, accepted, seen = await flood_phase(with_b=True)
            assert seen is not None
            latencies = await _latencies(pool, quiet.tenant_id, since, len(seen.sent))
            lines.append(
                f"  A with B: {accepted / args.duration:,.0f} events/s accepted, "
                f"{together:,.0f} events/s stored ({together / max(alone, 1) - 1:+.0%} against "
                "alone)"
            )
            lines.append(_quiet_line("during A's flood", seen, latencies))
            await _drain(pool, flooding.tenant_id, first + accepted, within=180)
            if args.import_events:
                lines.extend(await import_phases(args, platform, pool, code, quiet, flooding))
        finally:
            await pool.close()
    return lines


async def import_phases(
    args: argparse.Namespace,
    platform: Platform,
    pool: asyncpg.Pool,
    code: Path,
    quiet: Any,
    flooding: Any,
) -> list[str]:
    """A's import alone, then with B's trickle."""
    lines = []
    moment = datetime.now(UTC) - timedelta(hours=1)
    durations = []
    for attempt in ("alone", "with B"):
        path = platform.workdir / f"import-{attempt.replace(' ', '-')}.jsonl"
        with path.open("w") as handle:
            for n in range(args.import_events):
                handle.write(
                    json.dumps(
                        {
                            "eventType": "product_viewed",
                            "userId": f"imp-{attempt[0]}-{n // 20}",
                            "productId": f"a-p{n % 500}",
                            "timestamp": (moment + timedelta(milliseconds=n)).isoformat(),
                        }
                    )
                    + "\n"
                )
        command = ["import", "events", str(path), "--tenant", flooding.tenant_id]

        def run_import(command: list[str] = command) -> tuple[Any, float]:
            started = time.monotonic()
            done = platform.run_cli(command, cwd=code)
            return done, time.monotonic() - started

        importing = asyncio.create_task(asyncio.to_thread(run_import))
        seen = None
        since = datetime.now(UTC)
        if attempt == "with B":
            seen = await trickle(
                platform.base_url,
                quiet.keys["read"],
                quiet.keys["read_write"],
                seconds=args.duration,
                run=uuid.uuid4().hex[:6],
            )
        done, took = await importing
        durations.append(took)
        if done.returncode != 0:
            raise RuntimeError(f"import failed:\n{done.stderr[-2000:]}")
        if seen is not None:
            latencies = await _latencies(pool, quiet.tenant_id, since, len(seen.sent))
            lines.append(_quiet_line("during A's import", seen, latencies))
    lines.append(
        f"  A's import of {args.import_events:,} events: {durations[0]:.1f} s alone, "
        f"{durations[1]:.1f} s with B ({durations[1] / durations[0] - 1:+.0%})"
    )
    return lines


async def run(args: argparse.Namespace) -> None:
    """Each code tree in turn, then the figures."""
    trees: list[tuple[Path, str]] = []
    scratch = Path(tempfile.mkdtemp(prefix="recomengine-fair-code-")) / "tree"
    if args.compare:
        trees.append((export_tree(args.compare, scratch), args.compare))
    trees.append((ROOT, "this checkout"))
    report = []
    try:
        for code, label in trees:
            report.extend(await scenario(args, code, label))
            print("\n".join(report[-6:]), flush=True)
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)
    print("\n" + "\n".join(report))


def main() -> None:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.fair_ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument(
        "--import-events", type=int, default=100_000, help="events A imports (0: no import)"
    )
    parser.add_argument(
        "--a-writes-per-minute",
        type=int,
        default=A_WRITES_PER_MINUTE,
        help="tenant A's write limit per key (its plan's), which its flood uses to the full",
    )
    parser.add_argument("--compare", metavar="REF", help="also run git REF's code, first")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
