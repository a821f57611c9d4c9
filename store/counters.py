"""Real-time counters in Redis: per tenant and day, per placement and strategy, per experiment
variant; active users as a HyperLogLog. Kept 7 days, as the spec keeps real-time counters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from store import keys

COUNTER_TTL_SECONDS = 7 * 24 * 3600
METRICS = ("events", "impressions", "clicks", "conversions", "revenue")

# One Redis operation: (command, key, first argument, second argument).
Op = tuple[str, str, str, str]

_METRIC_OF_TYPE = {
    "recommendation_impressed": "impressions",
    "recommendation_clicked": "clicks",
    "purchase": "conversions",
}


def day_of(moment: datetime) -> str:
    """The UTC day bucket (YYYYMMDD) of a moment."""
    # Formatted by hand: strftime costs several times more, and this runs for every event.
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"


def placement_field(metric: str, placement_id: str, strategy: str) -> str:
    """Counter field of one metric for one placement and strategy."""
    return f"{metric}|{placement_id}|{strategy}"


def experiment_field(experiment_id: str, variant: str, metric: str) -> str:
    """Counter field of one metric for one experiment variant."""
    return f"exp|{experiment_id}|{variant}|{metric}"


def event_counter_ops(*, tenant_id: str, row: Mapping[str, Any]) -> list[Op]:
    """The counter bumps one stored event causes (`row` as returned by store.events)."""
    day = day_of(row["occurred_at"])
    counters = keys.realtime_counters(tenant_id, day)
    ops: list[Op] = [
        ("hincrby", counters, "events", "1"),
        ("hincrby", counters, f"type|{row['event_type']}", "1"),
        ("pfadd", keys.active_users(tenant_id, day), row["user_id"], ""),
    ]
    metric = _METRIC_OF_TYPE.get(row["event_type"])
    if metric is None:
        return ops
    ops.append(("hincrby", counters, metric, "1"))
    if metric == "conversions":
        ops.append(("hincrbyfloat", counters, "revenue", str(row["price"] or 0)))
        return ops
    placement = row.get("placement_id") or ""
    strategy = row.get("strategy") or ""
    ops.append(("hincrby", counters, placement_field(metric, placement, strategy), "1"))
    if row.get("experiment_id") and row.get("variant"):
        field = experiment_field(row["experiment_id"], row["variant"], metric)
        ops.append(("hincrby", counters, field, "1"))
    return ops


def attribution_counter_ops(*, tenant_id: str, attribution: Mapping[str, Any]) -> list[Op]:
    """The counter bumps of one revenue attribution, on the purchase's day."""
    counters = keys.realtime_counters(tenant_id, day_of(attribution["purchased_at"]))
    revenue = str(attribution["revenue"])
    placement = attribution.get("placement_id") or ""
    strategy = attribution.get("strategy") or ""
    ops: list[Op] = [
        ("hincrby", counters, "attributed_conversions", "1"),
        ("hincrbyfloat", counters, "attributed_revenue", revenue),
        ("hincrby", counters, placement_field("conversions", placement, strategy), "1"),
        ("hincrbyfloat", counters, placement_field("revenue", placement, strategy), revenue),
    ]
    if attribution.get("experiment_id") and attribution.get("variant"):
        experiment, variant = str(attribution["experiment_id"]), attribution["variant"]
        ops.append(("hincrby", counters, experiment_field(experiment, variant, "conversions"), "1"))
        ops.append(
            ("hincrbyfloat", counters, experiment_field(experiment, variant, "revenue"), revenue)
        )
    return ops


async def read_counters(redis: Redis, *, tenant_id: str, day: str) -> dict[str, float]:
    """Every counter field of the tenant's day (YYYYMMDD) plus `active_users` (estimate)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.realtime_counters(tenant_id, day))
        pipe.pfcount(keys.active_users(tenant_id, day))
        raw, users = await pipe.execute()
    found = {_text(name): float(value) for name, value in raw.items()}
    found["active_users"] = float(users)
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
