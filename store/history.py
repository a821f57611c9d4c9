"""User recent-history and trending projections in Redis, fed by ingestion."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from domain.events import TRENDING_WEIGHTS
from domain.interactions import EVENT_WEIGHTS
from store import keys
from store.counters import Op, day_of

HISTORY_LENGTH = 100
HISTORY_TTL_SECONDS = 90 * 24 * 3600
TRENDING_TTL_SECONDS = 8 * 24 * 3600
# Outlives every cached answer by far: a stamp that expired and restarted could otherwise
# match an answer cached under its earlier life.
USER_STAMP_TTL_SECONDS = 24 * 3600


_HOURS = tuple(f"{hour:02d}" for hour in range(24))


def hour_of(moment: datetime) -> str:
    """The UTC hour bucket (YYYYMMDDHH) of a moment (in UTC already)."""
    # The day from day_of's cache: a fifth of formatting the whole bucket, for every event.
    return day_of(moment) + _HOURS[moment.hour]


def history_member(event_type: str, product_id: str) -> str:
    """The history ZSET member of one interaction kind with one product."""
    return f"{event_type}|{product_id}"


def event_history_ops(*, tenant_id: str, row: Mapping[str, Any]) -> list[Op]:
    """History, purchased-set, trending and answer-stamp updates one stored event causes."""
    user, product, event_type = row["user_id"], row["product_id"], row["event_type"]
    history = keys.user_history(tenant_id, user)
    # ZADD GT keeps the newest time per (type, product) even when events arrive out of order.
    ops: list[Op] = [
        (
            "zaddgt",
            history,
            history_member(event_type, product),
            str(row["occurred_at"].timestamp()),
        ),
        ("ztrim", history, str(HISTORY_LENGTH), ""),
        # Any event can change the user's answers (history, purchases, cold-start count).
        ("hincrby", keys.user_stamp(tenant_id, user), "n", "1"),
    ]
    if event_type == "purchase":
        ops.append(("sadd", keys.user_purchased(tenant_id, user), product, ""))
    if EVENT_WEIGHTS.get(event_type):
        # The next incremental retrain rescores this user.
        ops.append(("sadd", keys.touched_users(tenant_id), user, ""))
    weight = TRENDING_WEIGHTS.get(event_type)
    if weight:
        trending = keys.trending_hour(tenant_id, hour_of(row["occurred_at"]))
        ops.append(("zincrby", trending, product, str(weight)))
        ops.append(("hincrby", keys.trending_stamp(tenant_id), "n", "1"))
    return ops


def ttl_of(key: str) -> int:
    """How long a projection key made by ingestion lives after its last write."""
    if ":history:" in key or ":purchased:" in key or ":touched:" in key:
        return HISTORY_TTL_SECONDS
    if ":userstamp:" in key:
        return USER_STAMP_TTL_SECONDS
    return TRENDING_TTL_SECONDS


async def recent_history(
    redis: Redis, *, tenant_id: str, user_id: str, limit: int = HISTORY_LENGTH
) -> list[tuple[str, str, float]]:
    """The user's latest interactions as (productId, eventType, unix time), newest first."""
    raw: list[Any] = await redis.zrevrange(
        keys.user_history(tenant_id, user_id), 0, limit - 1, withscores=True
    )
    found = []
    for member, score in raw:
        text = member.decode() if isinstance(member, bytes) else member
        event_type, _, product = text.partition("|")
        found.append((product, event_type, float(score)))
    return found


async def purchased(redis: Redis, *, tenant_id: str, user_id: str) -> set[str]:
    """Product ids the user has bought."""
    members = await redis.smembers(keys.user_purchased(tenant_id, user_id))
    return {m.decode() if isinstance(m, bytes) else m for m in members}


async def trending_scores(
    redis: Redis, *, tenant_id: str, hours: list[str], limit: int = 100
) -> list[tuple[str, float]]:
    """Products by summed trending score over the given hour buckets, best first."""
    async with redis.pipeline(transaction=False) as pipe:
        for hour in hours:
            pipe.zrevrange(keys.trending_hour(tenant_id, hour), 0, -1, withscores=True)
        buckets = await pipe.execute()
    totals: dict[str, float] = {}
    for bucket in buckets:
        for member, score in bucket:
            product = member.decode() if isinstance(member, bytes) else member
            totals[product] = totals.get(product, 0.0) + float(score)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]
