"""Where one request's time goes: each stage of GET /recommendations timed in-process with the
api's own store and domain functions on the benchmark's data, plus Redis's own time per call.

Stages: the rate-limit call every API-key request makes, the context Lua call (round trip and
decoding into a ServingContext; the script's time in Redis comes from INFO commandstats),
ranking, hydrating the head of the ranking (cards, availability, purchases in one pipeline),
selecting what is served and encoding the answer.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis

from domain.serving import ServingRequest, rank, select
from store import keys
from store.models import ServingReader
from store.ratelimit import RateLimiter, Window

STAGES = (
    "rate-limit call",
    "context Lua call + decoding",
    "  of which inside Redis",
    "rank (decide, order, backfill)",
    "hydrate the head (one pipeline)",
    "select (filters, limit)",
    "encode the answer (json)",
)


async def _timed(samples: dict[str, list[float]], name: str, call: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    value = await call
    samples[name].append((time.perf_counter() - started) * 1000)
    return value


def _clock(samples: dict[str, list[float]], name: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = fn()
    samples[name].append((time.perf_counter() - started) * 1000)
    return value


async def _redis_usec_per_call(redis: Redis, command: str) -> tuple[int, float]:
    stats = await redis.info("commandstats")
    entry = stats.get(f"cmdstat_{command}") or {}
    return int(entry.get("calls", 0)), float(entry.get("usec_per_call", 0.0))


async def measure_stages(
    redis: Redis, *, tenant_id: str, paths: list[str], reader_redis: Redis | None = None
) -> dict[str, Any]:
    """Median and p95 ms of each stage over `paths`, candidates hydrated and per-strategy cost."""
    reader = ServingReader(reader_redis or redis)
    limiter = RateLimiter(redis)
    samples: dict[str, list[float]] = {name: [] for name in STAGES}
    hydrated: list[float] = []
    per_strategy: dict[str, list[float]] = {}
    await redis.config_resetstat()
    for path in paths:
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        await _timed(
            samples,
            "rate-limit call",
            limiter.hit(
                Window(
                    key=keys.api_key_rate_limit(tenant_id, "breakdown", "read", 60),
                    limit=100_000_000,
                    epoch_key=keys.auth_epoch(tenant_id),
                    touch_hash=keys.api_key_last_used(tenant_id),
                    touch_index=keys.API_KEY_LAST_USED_TENANTS,
                    touch_member=tenant_id,
                ),
                touch=("breakdown", datetime.now(UTC).isoformat()),
            ),
        )
        now = datetime.now(UTC)
        hours = [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]
        context = await _timed(
            samples,
            "context Lua call + decoding",
            reader.read(
                tenant_id=tenant_id,
                user_id=query["userId"],
                product_id=query.get("productId"),
                placement_id=None,
                live_hours=hours,
            ),
        )
        request = ServingRequest(
            user_id=query["userId"],
            strategy=query.get("strategy"),
            product_id=query.get("productId"),
            limit=int(query.get("limit", 10)),
        )
        decision, ranked = _clock(
            samples, "rank (decide, order, backfill)", lambda q=request, c=context: rank(q, c)
        )
        head = [c.product_id for c in ranked[: max(3 * decision.limit, 30)]]
        hydrated.append(float(len(head)))
        hydration = await _timed(
            samples,
            "hydrate the head (one pipeline)",
            reader.hydrate(tenant_id=tenant_id, user_id=query["userId"], product_ids=head),
        )
        items = _clock(
            samples,
            "select (filters, limit)",
            lambda q=request, d=decision, r=ranked, h=hydration: select(q, d, r, h),
        )
        body = {"data": [item.to_dict() for item in items], "meta": {"id": uuid.uuid4().hex}}
        _clock(samples, "encode the answer (json)", lambda b=body: json.dumps(b))
        total = sum(samples[name][-1] for name in STAGES if not name.startswith("  "))
        per_strategy.setdefault(query.get("strategy") or "(tenant default)", []).append(total)
    calls, usec = await _redis_usec_per_call(redis, "evalsha")
    if calls:
        samples["  of which inside Redis"] = [usec / 1000]
    return {
        "stages": {
            name: (statistics.median(values), _p95(values))
            for name, values in samples.items()
            if values
        },
        "candidates": (statistics.median(hydrated), _p95(hydrated)),
        "per_strategy": {
            name: (statistics.median(values), len(values)) for name, values in per_strategy.items()
        },
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")


def print_stages(result: dict[str, Any], *, n: int) -> None:
    """Print the breakdown table."""
    print(f"\nwhere one request's time goes (in-process, sequential, {n} requests of the mix):")
    print(f"  {'stage':<40}{'median ms':>10}{'p95 ms':>10}")
    for name, (median, p95) in result["stages"].items():
        print(f"  {name:<40}{median:>10.3f}{p95:>10.3f}")
    ids, ids95 = result["candidates"]
    print(f"  candidates hydrated: median {ids:.0f} (p95 {ids95:.0f}) for 10 items answered")
    print("  request without HTTP, per strategy (median ms, n):")
    for name, (median, count) in sorted(result["per_strategy"].items()):
        print(f"    {name:<30}{median:>8.3f}{count:>6}")
