"""Real-time counters in Redis: per tenant and day, per placement and strategy, per experiment
variant and per product; active users as a HyperLogLog. Kept 7 days, as the spec keeps
real-time counters. The analytics endpoints read today's figures from them (store.analytics)."""

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
# Field prefix of each metric in the per-product hash (short: one field per product and metric).
PRODUCT_FIELD = {"impressions": "i", "clicks": "c", "conversions": "v", "revenue": "r"}


# Day buckets by date ordinal: nearly every event of a message falls on one or two days, and a
# dictionary hit costs a fifth of formatting the bucket again (this runs several times for
# every event an api or a worker handles).
_DAY_BUCKETS: dict[int, str] = {}
_MAX_DAY_BUCKETS = 4096


def day_of(moment: datetime) -> str:
    """The UTC day bucket (YYYYMMDD) of a moment (in UTC already)."""
    ordinal = moment.toordinal()
    day = _DAY_BUCKETS.get(ordinal)
    if day is None:
        if len(_DAY_BUCKETS) >= _MAX_DAY_BUCKETS:
            _DAY_BUCKETS.clear()
        # Formatted by hand: strftime costs several times more.
        day = _DAY_BUCKETS[ordinal] = f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
    return day


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
    # The day's impressions, clicks and conversions are its `type|...` fields (read_counters
    # names them): the op that counted them again goes to the per-product hash instead, so an
    # impression or a click costs no more operations than before, a purchase one more (its
    # product's revenue).
    products = keys.realtime_product_counters(tenant_id, day)
    ops.append(("hincrby", products, f"{PRODUCT_FIELD[metric]}|{row['product_id']}", "1"))
    if metric == "conversions":
        price = str(row["price"] or 0)
        ops.append(("hincrbyfloat", counters, "revenue", price))
        if row["price"]:
            ops.append(("hincrbyfloat", products, f"r|{row['product_id']}", price))
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
    """Every counter field of the tenant's day (YYYYMMDD), its `impressions`, `clicks` and
    `conversions`, plus `active_users` (estimate)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.realtime_counters(tenant_id, day))
        pipe.pfcount(keys.active_users(tenant_id, day))
        raw, users = await pipe.execute()
    fields = decode_fields(raw)
    found = {**fields, **type_metrics(fields)}
    found["active_users"] = float(users)
    return found


async def read_day(
    redis: Redis, *, tenant_ids: list[str], day: str, products: bool = False
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Per tenant, in one round trip: the counter hash of the day (YYYYMMDD) and, with
    `products`, its per-product hash (else empty)."""
    # MULTI/EXEC: both hashes as of one instant (the ingest script bumps them together), so
    # that their totals agree.
    async with redis.pipeline(transaction=True) as pipe:
        for tenant_id in tenant_ids:
            pipe.hgetall(keys.realtime_counters(tenant_id, day))
            if products:
                pipe.hgetall(keys.realtime_product_counters(tenant_id, day))
        replies = await pipe.execute()
    step = 2 if products else 1
    return [
        (
            decode_fields(replies[i]),
            decode_fields(replies[i + 1]) if products else {},
        )
        for i in range(0, len(replies), step)
    ]


def type_metrics(fields: Mapping[str, float]) -> dict[str, float]:
    """impressions, clicks and conversions of a day hash, from its per-type fields."""
    return {
        metric: fields.get(f"type|{event_type}", 0.0)
        for event_type, metric in _METRIC_OF_TYPE.items()
    }


def decode_fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    """An HGETALL reply of counters as field name -> number."""
    return {_text(name): float(value) for name, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
