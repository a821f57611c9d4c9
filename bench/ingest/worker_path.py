"""The ingestion actor's work without HTTP or the queue: how much CPU the worker, PostgreSQL
and Redis spend per event when messages of a given size are stored and projected.

    .venv/bin/python -m bench.ingest.worker_path [--messages 300] [--size 100]
        [--concurrency 8] [--in-flight 2] [--group-events 400] [--profile]

Starts its own PostgreSQL and Redis, builds message-form events the way the api does, then
submits every message from `--concurrency` coroutines of one event loop to the actor's
grouping (as the worker threads of one process do) and prints events/s and CPU per event of
each process. With --profile, the worker's own time is profiled with cProfile (slower; read
the proportions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from datetime import UTC, datetime
from typing import Any

from bench.harness import local_platform, make_bench_tenant
from bench.ingest.__main__ import Generator, cpu_report, cpu_seconds
from domain.events import check_event
from store.db import create_pool
from store.events import ingest_and_project
from store.redis import create_redis
from workers.actors.ingest import IngestGroups


def messages(tenant_id: str, *, count: int, size: int) -> list[list[dict[str, Any]]]:
    """`count` messages of `size` new events each, in the form the api queues them."""
    generator = Generator("w")
    now = datetime.now(UTC)
    found = []
    for _ in range(count):
        batch = []
        for raw in generator.batch(size):
            event, errors = check_event(raw, tenant_id=tenant_id, now=now)
            assert event is not None, errors
            batch.append(event.to_message())
        found.append(batch)
    return found


async def run(args: argparse.Namespace) -> None:
    """Store every message, print rates and CPU per event."""
    with local_platform("recomengine-bench-worker-path-") as platform:
        pool = await create_pool(platform.settings, min_size=2, max_size=args.concurrency + 1)
        redis = create_redis(platform.settings)
        try:
            tenant = await make_bench_tenant(pool, platform.settings)
            work = messages(tenant.tenant_id, count=args.messages, size=args.size)
            # A warm-up message: prepared statements and the Lua scripts are loaded once.
            warm = messages(tenant.tenant_id, count=1, size=args.size)[0]
            await ingest_and_project(pool, redis, tenant_id=tenant.tenant_id, events=warm)
            roots = {
                "worker": os.getpid(),
                "postgres": int(
                    (platform.workdir / "postgres" / "postmaster.pid").read_text().split()[0]
                ),
                "redis": int((platform.workdir / "redis" / "redis.pid").read_text().split()[0]),
            }
            queue = list(reversed(work))

            async def store(tenant_id: str, events: list[dict[str, Any]]) -> None:
                await ingest_and_project(pool, redis, tenant_id=tenant_id, events=events)

            groups = IngestGroups(store, max_events=args.group_events, in_flight=args.in_flight)

            async def consume() -> None:
                while queue:
                    await groups.submit(tenant.tenant_id, queue.pop())

            profiler = cProfile.Profile() if args.profile else None
            before = cpu_seconds(roots)
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            await asyncio.gather(*(consume() for _ in range(args.concurrency)))
            if profiler is not None:
                profiler.disable()
            elapsed = time.perf_counter() - started
            events = args.messages * args.size
            print(
                f"{args.messages} messages of {args.size}: {events / elapsed:,.0f} events/s "
                f"with {args.concurrency} concurrent"
            )
            print(cpu_report(before, cpu_seconds(roots), events))
            if profiler is not None:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        finally:
            await redis.aclose()
            await pool.close()


def main() -> None:
    """Parse options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest.worker_path", description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--size", type=int, default=100, help="events per message")
    parser.add_argument("--concurrency", type=int, default=8, help="messages in flight")
    parser.add_argument("--in-flight", type=int, default=2, help="groups stored at once")
    parser.add_argument("--group-events", type=int, default=400, help="events per group at most")
    parser.add_argument("--profile", action="store_true", help="cProfile the worker's own time")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
