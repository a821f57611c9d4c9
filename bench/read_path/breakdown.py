"""Where one request's time goes: each stage of GET /recommendations timed in-process with the
api's own store and domain functions on the benchmark's data, plus Redis's own time per call.

Stages: the rate-limit call every API-key request makes, the serving Lua call (round trip and
the script's time in Redis, from INFO commandstats), decoding its JSON reply, turning it into a
ServingContext (which decodes every list and card inside), `serve` (decide, rank, filter,
hydrate) and encoding the answer.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis

from domain.serving import ServingRequest, serve
from store import keys
from store.models import ServingReader, to_serving_context
from store.ratelimit import RateLimiter

STAGES = (
    "rate-limit call",
    "serving Lua round trip",
    "  of which inside Redis",
    "decode the Lua reply (json)",
    "to_serving_context",
    "  of which json.loads of every card",
    "serve (decide/rank/filter)",
    "encode the answer (json)",
    "what-if: HMGET every candidate's card",
    "what-if: HMGET 30 cards",
)


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
    """Median and p95 ms of each stage over `paths`, the reply sizes, and per-strategy costs."""
    reader = ServingReader(reader_redis or redis)
    limiter = RateLimiter(redis)
    samples: dict[str, list[float]] = {name: [] for name in STAGES}
    sizes: list[int] = []
    cards: list[int] = []
    per_strategy: dict[str, list[float]] = {}
    sources: dict[str, list[tuple[int, int]]] = {}
    await redis.config_resetstat()
    for path in paths:
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        started = time.perf_counter()
        await limiter.hit(
            key=keys.api_key_rate_limit(tenant_id, "breakdown", "read", 60),
            limit=100_000_000,
            epoch_key=keys.auth_epoch(tenant_id),
            touch_hash=keys.api_key_last_used(tenant_id),
            touch_field="breakdown",
            touch_value=datetime.now(UTC).isoformat(),
            touch_index=keys.API_KEY_LAST_USED_TENANTS,
            touch_member=tenant_id,
        )
        samples["rate-limit call"].append((time.perf_counter() - started) * 1000)
        now = datetime.now(UTC)
        hours = [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]
        started = time.perf_counter()
        raw = await reader.read(
            tenant_id=tenant_id,
            user_id=query["userId"],
            product_id=query.get("productId"),
            placement_id=None,
            live_hours=hours,
        )
        total = (time.perf_counter() - started) * 1000
        # read() decodes the reply itself: time that decoding again on the same bytes.
        encoded = json.dumps(raw)
        sizes.append(len(encoded))
        cards.append(len(raw.get("ids") or []))
        for name, (count, size) in _reply_parts(raw).items():
            sources.setdefault(name, []).append((count, size))
        decoded = _clock(samples, "decode the Lua reply (json)", lambda e=encoded: json.loads(e))
        samples["serving Lua round trip"].append(total - samples["decode the Lua reply (json)"][-1])
        context = _clock(samples, "to_serving_context", lambda r=decoded: to_serving_context(r))
        raw_cards = [c for c in raw.get("cards") or [] if isinstance(c, str)]
        _clock(
            samples,
            "  of which json.loads of every card",
            lambda cs=raw_cards: [json.loads(c) for c in cs],
        )
        ids = list(raw.get("ids") or [])
        if ids:
            # Hydrating only what an answer of 10 can use, against hydrating every candidate.
            cards_key = keys.catalog_cards(tenant_id)
            started_what_if = time.perf_counter()
            await redis.hmget(cards_key, ids)
            samples["what-if: HMGET every candidate's card"].append(
                (time.perf_counter() - started_what_if) * 1000
            )
            started_what_if = time.perf_counter()
            await redis.hmget(cards_key, ids[:30])
            samples["what-if: HMGET 30 cards"].append(
                (time.perf_counter() - started_what_if) * 1000
            )
        request = ServingRequest(
            user_id=query["userId"],
            strategy=query.get("strategy"),
            product_id=query.get("productId"),
            placement_id=None,
            limit=int(query.get("limit", 10)),
            exclude=frozenset(),
            category=None,
            include_purchased=False,
            tenant_default_strategy=None,
        )
        decision, items = _clock(
            samples, "serve (decide/rank/filter)", lambda q=request, c=context: serve(q, c)
        )
        body = {"data": [item.to_dict() for item in items], "meta": {"id": uuid.uuid4().hex}}
        _clock(samples, "encode the answer (json)", lambda b=body: json.dumps(b))
        # Everything from the Lua call on, without the what-if calls and the card re-decoding.
        stage_sum = sum(
            samples[name][-1]
            for name in (
                "serving Lua round trip",
                "decode the Lua reply (json)",
                "to_serving_context",
                "serve (decide/rank/filter)",
                "encode the answer (json)",
            )
        )
        stage_sum += samples["rate-limit call"][-1]
        per_strategy.setdefault(query.get("strategy") or "(tenant default)", []).append(stage_sum)
        del decision
    calls, usec = await _redis_usec_per_call(redis, "evalsha")
    if calls:
        samples["  of which inside Redis"] = [usec / 1000]
    return {
        "stages": {
            name: (statistics.median(values), _p95(values))
            for name, values in samples.items()
            if values
        },
        "reply_bytes": (statistics.median(sizes), _p95([float(s) for s in sizes])),
        "candidates": (statistics.median(cards), _p95([float(c) for c in cards])),
        "sources": {
            name: (
                statistics.median(c for c, _ in values),
                statistics.median(b for _, b in values),
            )
            for name, values in sources.items()
        },
        "per_strategy": {
            name: (statistics.median(values), len(values)) for name, values in per_strategy.items()
        },
    }


def _reply_parts(raw: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Entries and bytes of each part of one Lua reply."""
    parts: dict[str, tuple[int, int]] = {}
    for name, value in (raw.get("lists") or {}).items():
        if isinstance(value, str):
            parts[f"list {name}"] = (len(json.loads(value)), len(value))
    content = [v for v in raw.get("recentContent") or [] if isinstance(v, str)]
    parts["content lists of recent products"] = (
        sum(len(json.loads(v)) for v in content),
        sum(len(v) for v in content),
    )
    for name in ("liveNow", "liveBefore", "history"):
        value = raw.get(name) or []
        parts[name] = (len(value) // 2, len(json.dumps(value)))
    for name in ("cards", "available", "purchased"):
        value = raw.get(name) or []
        parts[name] = (len(value), len(json.dumps(value)))
    return parts


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")


def print_stages(result: dict[str, Any], *, n: int) -> None:
    """Print the breakdown table."""
    print(f"\nwhere one request's time goes (in-process, sequential, {n} requests of the mix):")
    print(f"  {'stage':<40}{'median ms':>10}{'p95 ms':>10}")
    for name, (median, p95) in result["stages"].items():
        print(f"  {name:<40}{median:>10.3f}{p95:>10.3f}")
    size, size95 = result["reply_bytes"]
    ids, ids95 = result["candidates"]
    print(
        f"  Lua reply: median {size / 1024:.1f} KB (p95 {size95 / 1024:.1f} KB), "
        f"{ids:.0f} candidates hydrated (p95 {ids95:.0f}) for 10 items answered"
    )
    print("  reply parts (median entries, median bytes):")
    for name, (count, size) in sorted(result["sources"].items(), key=lambda kv: -kv[1][1]):
        print(f"    {name:<34}{count:>8.0f}{size:>10,.0f}")
    print("  request without HTTP, per strategy (median ms, n):")
    for name, (median, count) in sorted(result["per_strategy"].items()):
        print(f"    {name:<30}{median:>8.3f}{count:>6}")
