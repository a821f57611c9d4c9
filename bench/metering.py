"""Hot-path cost of usage metering (issue 18): microseconds per recommendation request and per
stored event, with and without metering, measured side by side in one run.

    .venv/bin/python -m bench.metering [--rounds 10] [--calls 3000] [--batches 300]

Starts its own Redis on a free port and drives the two Redis calls that meter, exactly as the
platform makes them:

1. the read path's single call (store.ratelimit + store.answers.ANSWER_LOOKUP) of a
   GET /recommendations answered from the answer cache (its cheapest and commonest form), with
   the meter's key and fields and without them (empty fields skip the meter: the call as it
   was before metering);
2. the ingest worker's guarded side-effects script (store.events.apply_guarded) of groups of
   100 fresh events, with the usage meter's operations and without them.

Rounds alternate the two variants so that other work on the machine weighs on both alike. For
each it prints the client-side µs per call (one connection, calls in sequence) and Redis's own
µs per call (INFO commandstats, reset before each variant), per request and per event.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from cli.localservices import RedisServer, free_port
from domain.usage import LIVE, REQUESTS
from store import keys
from store.answers import ANSWER_LOOKUP, answer_lookup_keys, lookup_args
from store.event_projections import GuardedEffects, apply_guarded, event_effects
from store.ratelimit import RateLimiter, Window
from store.usage import event_meter_ops, meter_for

TENANT = str(uuid.UUID(int=18))


async def _server_usec(redis: Redis) -> tuple[float, int]:
    stats = await redis.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return float(evalsha.get("usec", 0)), int(evalsha.get("calls", 0))


async def _measure(
    redis: Redis, calls: int, call: Callable[[int], Awaitable[Any]]
) -> tuple[float, float]:
    """(client µs per call, server µs per call) of `calls` calls in sequence."""
    await redis.config_resetstat()
    started = time.perf_counter()
    for index in range(calls):
        await call(index)
    client = (time.perf_counter() - started) * 1e6 / calls
    usec, counted = await _server_usec(redis)
    return client, usec / max(counted, 1)


async def _request_call(redis: Redis, *, metered: bool) -> Callable[[int], Awaitable[Any]]:
    limiter = RateLimiter(redis, follow_up=ANSWER_LOOKUP)
    window = Window(
        key=keys.api_key_rate_limit(TENANT, "bench-key", "read", 60),
        limit=1_000_000_000,
        epoch_key=keys.auth_epoch(TENANT),
    )
    meter = meter_for(tenant_id=TENANT, environment=LIVE, metric=REQUESTS, now=datetime.now(UTC))
    follow_keys = answer_lookup_keys(
        tenant_id=TENANT,
        user_id="u1",
        placement_id="home",
        query_digest="bench",
        meter=meter if metered else None,
    )
    hour = int(time.time()) // 3600
    follow_args = lookup_args(hour, None, 300, meter if metered else None)
    # A cached answer under the stamp the lookup computes: every call is a cache hit.
    first = await limiter.count(
        window, requests=1, follow_up_keys=follow_keys, follow_up_args=follow_args
    )
    stamp = dict(zip(first.extra[0::2], first.extra[1::2], strict=True))[b"stamp"]
    await redis.set(follow_keys[1], stamp + b'{"data":[],"meta":{"strategy":"trending"', ex=3600)

    async def call(_: int) -> Any:
        counted = await limiter.count(
            window, requests=1, follow_up_keys=follow_keys, follow_up_args=follow_args
        )
        assert counted.extra[4] == b"cached"

    return call


def _event_groups(batches: int, *, metered: bool, tag: str) -> list[list[GuardedEffects]]:
    now = datetime.now(UTC)
    groups = []
    for batch in range(batches):
        rows = [
            {
                "event_id": f"{tag}-{batch}-{i}",
                "event_type": "product_viewed" if i % 10 else "recommendation_clicked",
                "user_id": f"{tag}-u{batch}-{i % 20}",
                "product_id": f"p{i % 50}",
                "occurred_at": now - timedelta(seconds=i),
                "price": None,
                "placement_id": "home",
                "strategy": "collaborative",
                "experiment_id": None,
                "variant": None,
            }
            for i in range(100)
        ]
        meter = event_meter_ops(tenant_id=TENANT, test=False, received_at=now)
        effects = [
            GuardedEffects(
                e.guard_key,
                e.guard_member,
                [o for o in e.ops if ":usage:" not in o[1]] + (meter if metered else []),
            )
            for e in event_effects(tenant_id=TENANT, rows=rows)
        ]
        groups.append(effects)
    return groups


async def run(rounds: int, calls: int, batches: int) -> None:
    """Measure and print both paths, variants alternated over `rounds` rounds."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-metering-"))
    server = RedisServer(data_dir=workdir / "redis", port=free_port())
    server.start()
    redis = Redis.from_url(server.url(1))
    try:
        results: dict[str, list[tuple[float, float]]] = {}
        for round_index in range(rounds):
            for metered in (False, True) if round_index % 2 == 0 else (True, False):
                name = "request, metered" if metered else "request, unmetered"
                call = await _request_call(redis, metered=metered)
                results.setdefault(name, []).append(await _measure(redis, calls, call))
                groups = _event_groups(batches, metered=metered, tag=f"r{round_index}{metered}")

                async def store(index: int, groups: list[list[GuardedEffects]] = groups) -> Any:
                    return await apply_guarded(redis, groups[index])

                client, server_usec = await _measure(redis, batches, store)
                name = "event, metered" if metered else "event, unmetered"
                results.setdefault(name, []).append((client / 100, server_usec / 100))
        print(f"{rounds} rounds; {calls} requests and {batches} groups of 100 events per round")
        print(f"{'':24} {'client µs (median)':>20} {'Redis µs (median)':>20}")
        for name in (
            "request, unmetered",
            "request, metered",
            "event, unmetered",
            "event, metered",
        ):
            client = statistics.median(c for c, _ in results[name])
            own = statistics.median(s for _, s in results[name])
            print(f"{name:24} {client:20.2f} {own:20.2f}")
        for what in ("request", "event"):
            delta_client = statistics.median(
                c for c, _ in results[f"{what}, metered"]
            ) - statistics.median(c for c, _ in results[f"{what}, unmetered"])
            delta_own = statistics.median(
                s for _, s in results[f"{what}, metered"]
            ) - statistics.median(s for _, s in results[f"{what}, unmetered"])
            print(
                f"metering costs per {what}: {delta_client:+.2f} µs client-side, "
                f"{delta_own:+.2f} µs in Redis"
            )
    finally:
        await redis.aclose()
        server.stop()


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=3000, help="requests per round")
    parser.add_argument("--batches", type=int, default=300, help="groups of 100 events per round")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.calls, args.batches))


if __name__ == "__main__":
    main()
