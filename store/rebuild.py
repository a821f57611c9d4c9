"""Rebuild a tenant's Redis projections from PostgreSQL: what a Redis that lost its data needs,
and what the chaos suite compares the live projections with.

Event-derived keys (counters, active users, histories, purchased sets, trending hours, the dedupe
guards) are recounted by applying the stored events and attributions through the same effect
functions ingestion applies them with (store.events), so a recount equals what applying every
accepted event exactly once would have left. Catalog, widget and running-experiment projections
are written again from their tables. Models live in Redis only: a tenant without a current model
needs a retrain (the command queues it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis

from store import keys
from store.catalog import rebuild_projections
from store.db import tenant_transaction
from store.event_projections import (
    CLIENT_ID_TTL_SECONDS,
    GuardedEffects,
    apply_guarded,
    attribution_effects,
    event_effects,
)
from store.events import _ATTRIBUTION_COLUMNS, _ROW_COLUMNS
from store.experiments import reproject_running_experiments
from store.history import HISTORY_TTL_SECONDS
from store.models import current_version
from store.widgets import reproject_widgets

# The tenant's keys that ingestion derives from events, as patterns after `reco:{tenant}:`.
EVENT_DERIVED_PATTERNS = (
    "events:seen:*",
    "events:ids:*",
    "attributed:*",
    "counters:*",
    "users:*",
    "history:*",
    "purchased:*",
    "trending:*",
    "userstamp:*",
    "touched:users",
)
# Answers computed from the old projections: dropped, they are computed again on demand.
ANSWER_PATTERNS = ("answer:*", "answers:*")
BATCH_ROWS = 5_000
# Where a check recounts: a database of the projections' Redis that the platform leaves empty.
CHECK_DATABASE = 15


@dataclass(frozen=True)
class RebuildTotals:
    """What one tenant's rebuild wrote."""

    products: int
    widgets: int
    experiments: int
    events: int
    attributions: int
    needs_training: bool


async def delete_matching(redis: Redis, *, tenant_id: str, patterns: Sequence[str]) -> int:
    """Delete the tenant's keys matching `patterns` (relative to its prefix); how many."""
    deleted = 0
    for pattern in patterns:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{keys.PREFIX}:{tenant_id}:{pattern}", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    return deleted


async def _batches(
    pool: asyncpg.Pool, tenant_id: str, query: str, *args: Any
) -> AsyncIterator[list[asyncpg.Record]]:
    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as conn:
        batch: list[asyncpg.Record] = []
        async for row in conn.cursor(query, *args, prefetch=BATCH_ROWS):
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch


async def recount_event_projections(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, now: datetime | None = None
) -> tuple[int, int]:
    """Apply the tenant's stored events (of the history window) and attributions to its
    event-derived keys, which must be empty; returns (events, attributions) applied."""
    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=HISTORY_TTL_SECONDS)
    # Client eventIds accepted lately, which the api's pre-check refuses again at once.
    recent_client = now - timedelta(seconds=CLIENT_ID_TTL_SECONDS)
    events = 0
    async for rows in _batches(
        pool,
        tenant_id,
        f"""SELECT {_ROW_COLUMNS},
                   EXISTS (SELECT 1 FROM event_ids i WHERE i.tenant_id = events.tenant_id
                             AND i.event_id = events.event_id) AND received_at >= $3 AS client
            FROM events WHERE tenant_id = $1 AND occurred_at >= $2
            ORDER BY occurred_at, event_id""",
        tenant_id,
        since,
        recent_client,
    ):
        client_ids = {row["event_id"] for row in rows if row["client"]}
        effects = event_effects(tenant_id=tenant_id, rows=rows, client_ids=client_ids)
        await apply_guarded(redis, [_without_usage(effect) for effect in effects])
        events += len(rows)
    attributions = 0
    async for rows in _batches(
        pool,
        tenant_id,
        f"""SELECT {_ATTRIBUTION_COLUMNS}, user_id FROM revenue_attributions
            WHERE tenant_id = $1 AND purchased_at >= $2 ORDER BY purchased_at""",
        tenant_id,
        since,
    ):
        found = [dict(row) for row in rows]
        await apply_guarded(redis, attribution_effects(tenant_id=tenant_id, attributions=found))
        attributions += len(found)
    return events, attributions


def _without_usage(effect: GuardedEffects) -> GuardedEffects:
    """An event's effects but its usage meter: the meter hash also counts requests, which no
    table holds, so a rebuild leaves it (and the copy in usage_daily) as it is."""
    return effect._replace(ops=[op for op in effect.ops if ":usage:" not in op[1]])


async def rebuild_tenant(pool: asyncpg.Pool, redis: Redis, *, tenant_id: str) -> RebuildTotals:
    """Write every Redis projection of the tenant again from PostgreSQL. Run it with the
    tenant's ingestion paused (or on an empty Redis): events applied while it recounts would
    be lost from the counters it clears."""
    products = await rebuild_projections(pool, redis, tenant_id=tenant_id)
    widgets = await reproject_widgets(pool, redis, tenant_id=tenant_id)
    experiments = await reproject_running_experiments(pool, redis, tenant_id=tenant_id)
    await delete_matching(
        redis, tenant_id=tenant_id, patterns=EVENT_DERIVED_PATTERNS + ANSWER_PATTERNS
    )
    events, attributions = await recount_event_projections(pool, redis, tenant_id=tenant_id)
    # Cached answers keyed by the old stamps are gone; a new serving stamp says so too.
    await redis.incr(keys.serving_stamp(tenant_id))
    needs_training = await current_version(redis, tenant_id=tenant_id) is None
    return RebuildTotals(products, widgets, experiments, events, attributions, needs_training)


# Counted per applied event but reset by other jobs (a retrain clears the touched users; the
# stamps only need to change, not to match): left out of comparisons.
NOT_COMPARED = (":userstamp:", ":touched:users", ":trending:stamp")


async def snapshot_event_projections(redis: Redis, *, tenant_id: str) -> dict[str, Any]:
    """The tenant's event-derived keys as comparable values: hashes and sorted sets as
    dicts of numbers, sets as sorted lists, HyperLogLogs as their count."""
    found: dict[str, Any] = {}
    for pattern in EVENT_DERIVED_PATTERNS:
        async for raw in redis.scan_iter(match=f"{keys.PREFIX}:{tenant_id}:{pattern}", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            if any(part in key for part in NOT_COMPARED) or key in found:
                continue
            kind = _text(await redis.type(key))
            if kind == "hash":
                found[key] = {_text(f): float(v) for f, v in (await redis.hgetall(key)).items()}
            elif kind == "zset":
                scored: list[Any] = await redis.zrange(key, 0, -1, withscores=True)
                found[key] = {_text(member): float(score) for member, score in scored}
            elif kind == "set":
                found[key] = sorted(await redis.smembers(key))
            elif kind == "string":  # the active-users HyperLogLog
                found[key] = await redis.pfcount(key)
    return found


def check_database_url(redis_url: str) -> str:
    """The projections' Redis URL with the check database instead of its own."""
    return urlsplit(redis_url)._replace(path=f"/{CHECK_DATABASE}").geturl()


async def check_tenant(
    pool: asyncpg.Pool, live: Redis, scratch: Redis, *, tenant_id: str
) -> tuple[int, int, list[str]]:
    """Recount the tenant's event-derived projections into `scratch` (emptied before and after)
    and compare them with the live ones: (events, attributions, differences)."""
    await delete_matching(scratch, tenant_id=tenant_id, patterns=EVENT_DERIVED_PATTERNS)
    try:
        events, attributions = await recount_event_projections(pool, scratch, tenant_id=tenant_id)
        found = differences(
            await snapshot_event_projections(live, tenant_id=tenant_id),
            await snapshot_event_projections(scratch, tenant_id=tenant_id),
        )
    finally:
        await delete_matching(scratch, tenant_id=tenant_id, patterns=EVENT_DERIVED_PATTERNS)
    return events, attributions, found


def differences(live: dict[str, Any], recounted: dict[str, Any]) -> list[str]:
    """Where two snapshots disagree (floats within a millionth), one line each."""
    found = []
    for key in sorted(live.keys() | recounted.keys()):
        a, b = live.get(key), recounted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for field in sorted(a.keys() | b.keys()):
                x, y = a.get(field, 0.0), b.get(field, 0.0)
                if abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
                    found.append(f"{key} {field}: live {x} recounted {y}")
        elif a != b:
            found.append(f"{key}: live {_short(a)} recounted {_short(b)}")
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
