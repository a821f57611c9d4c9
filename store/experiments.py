"""Experiments in PostgreSQL: lifecycle, per-user exposure counts, results, and the Redis
projection of the experiment running on each placement (read by the recommendations endpoint)."""

from __future__ import annotations

import base64
import json
import math
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import cursors
from domain.errors import Conflict, Unavailable
from domain.experiments.lifecycle import (
    ExperimentStatus,
    ensure_editable,
    ensure_placement_free,
    validate_transition,
)
from domain.experiments.statistics import (
    MetricCaps,
    SequentialDesign,
    VariantSums,
    analyse_experiment,
)
from store import keys
from store.db import in_tenant, tenant_transaction

# The always-valid mode tunes its mixture for this many users per arm. It must be fixed before
# the experiment starts (any value keeps the false-positive guarantee; a close guess adds power).
SEQUENTIAL_PLANNED_USERS_PER_VARIANT: Final = 10_000

_COLUMNS = (
    "id, tenant_id, name, placement_id, control_strategy, variant_strategy, traffic_split, "
    "metric, status, revenue_cap, sequential, created_at, updated_at, started_at, completed_at"
)

# Deletes the projection only while it still names this experiment, so pausing A can never
# remove the projection of B, started on the same placement right after.
_DELETE_IF_OURS = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['experimentId'] == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _key(tenant_id: str, placement_id: str) -> str:
    return keys.running_experiment(tenant_id, placement_id)


def parse_experiment_id(value: str) -> uuid.UUID | None:
    """The experiment id as a UUID, or None when it cannot be one (then it is not found)."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def experiment_from_row(row: asyncpg.Record) -> dict[str, Any]:
    """The API shape of an experiments row."""
    cap = row["revenue_cap"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "placementId": row["placement_id"],
        "controlStrategy": row["control_strategy"],
        "variantStrategy": row["variant_strategy"],
        "trafficSplit": row["traffic_split"],
        "metric": row["metric"],
        "status": row["status"],
        "revenueCap": None if cap is None else float(cap),
        "sequential": row["sequential"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "startedAt": _iso(row["started_at"]),
        "completedAt": _iso(row["completed_at"]),
    }


def _field_values(fields: dict[str, Any]) -> tuple[Any, ...]:
    cap = fields.get("revenueCap")
    return (
        fields["name"],
        fields["placementId"],
        fields["controlStrategy"],
        fields["variantStrategy"],
        fields["trafficSplit"],
        fields["metric"],
        None if cap is None else Decimal(str(cap)),
        bool(fields.get("sequential", False)),
    )


async def create_experiment(
    pool: asyncpg.Pool, *, tenant_id: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """A new draft experiment from validated camelCase fields."""
    row = await in_tenant(pool, tenant_id).fetchrow(
        "INSERT INTO experiments (tenant_id, name, placement_id, control_strategy, "
        "variant_strategy, traffic_split, metric, revenue_cap, sequential) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}",
        tenant_id,
        *_field_values(fields),
    )
    assert row is not None
    return experiment_from_row(row)


async def _fetch(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    experiment_id: str,
    lock: bool = False,
) -> asyncpg.Record | None:
    exp_uuid = parse_experiment_id(experiment_id)
    if exp_uuid is None:
        return None
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM experiments WHERE tenant_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        tenant_id,
        exp_uuid,
    )


async def get_experiment(
    pool: asyncpg.Pool, *, tenant_id: str, experiment_id: str
) -> dict[str, Any] | None:
    """One experiment of the tenant, or None (also for another tenant's id)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _fetch(conn, tenant_id=tenant_id, experiment_id=experiment_id)
    return None if row is None else experiment_from_row(row)


EXPERIMENTS_CURSOR = "experiments"


def encode_experiment_cursor(created_at: str, experiment_id: str) -> str:
    """An opaque cursor pointing after one experiment of a list (domain.cursors)."""
    return cursors.encode_cursor(EXPERIMENTS_CURSOR, created_at, experiment_id)


def decode_experiment_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    """(created_at, id) a cursor points after, or None when it is not one of ours (the format
    before domain.cursors is still read: clients may hold one)."""
    found = cursors.decode_cursor(cursor, EXPERIMENTS_CURSOR, arity=2)
    try:
        if found is None:
            text = base64.urlsafe_b64decode(cursor.encode()).decode()
            created, _, ident = text.partition("|")
        else:
            created, ident = found
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%f%z"), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError):
        return None


async def list_experiments(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
    status: str | None = None,
    placement_id: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's experiments, oldest first, and the cursor of the next page."""
    rows = await in_tenant(pool, tenant_id).fetch(
        f"SELECT {_COLUMNS} FROM experiments WHERE tenant_id = $1 "
        "AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid)) "
        "AND ($4::text IS NULL OR status = $4) AND ($5::text IS NULL OR placement_id = $5) "
        "ORDER BY created_at, id LIMIT $6",
        tenant_id,
        after[0] if after else None,
        after[1] if after else None,
        status,
        placement_id,
        limit + 1,
    )
    page = [experiment_from_row(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_experiment_cursor(page[-1]["createdAt"], page[-1]["id"])
    return page, next_cursor


async def replace_draft_experiment(
    pool: asyncpg.Pool, *, tenant_id: str, experiment_id: str, fields: dict[str, Any]
) -> dict[str, Any] | None:
    """Replace a draft's settings; None when absent, ExperimentNotEditable unless a draft."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _fetch(conn, tenant_id=tenant_id, experiment_id=experiment_id, lock=True)
        if row is None:
            return None
        ensure_editable(status=row["status"])
        updated = await conn.fetchrow(
            "UPDATE experiments SET name = $3, placement_id = $4, control_strategy = $5, "
            "variant_strategy = $6, traffic_split = $7, metric = $8, revenue_cap = $9, "
            "sequential = $10, updated_at = clock_timestamp() "
            f"WHERE tenant_id = $1 AND id = $2 RETURNING {_COLUMNS}",
            tenant_id,
            row["id"],
            *_field_values(fields),
        )
    assert updated is not None
    return experiment_from_row(updated)


async def delete_draft_experiment(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, experiment_id: str
) -> bool:
    """Delete a draft; False when absent, ExperimentNotEditable unless a draft."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _fetch(conn, tenant_id=tenant_id, experiment_id=experiment_id, lock=True)
        if row is None:
            return False
        ensure_editable(status=row["status"])
        await conn.execute(
            "DELETE FROM experiments WHERE tenant_id = $1 AND id = $2", tenant_id, row["id"]
        )
        # A draft never ran, but a projection left by an earlier crash must not outlive it.
        await _unproject(redis, tenant_id=tenant_id, row=row)
    return True


def running_projection(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """What the recommendations endpoint needs to assign users without PostgreSQL."""
    return {
        "experimentId": str(row["id"]),
        "controlStrategy": row["control_strategy"],
        "variantStrategy": row["variant_strategy"],
        "trafficSplit": row["traffic_split"],
    }


async def _project(redis: Redis, *, tenant_id: str, row: asyncpg.Record) -> None:
    try:
        await redis.set(
            _key(tenant_id, row["placement_id"]),
            json.dumps(running_projection(row), separators=(",", ":")),
        )
    except (RedisError, OSError) as exc:
        raise Unavailable("The experiment store is unavailable; nothing was changed.") from exc


async def _unproject(redis: Redis, *, tenant_id: str, row: asyncpg.Record) -> None:
    try:
        await redis.eval(_DELETE_IF_OURS, 1, _key(tenant_id, row["placement_id"]), str(row["id"]))
    except (RedisError, OSError) as exc:
        raise Unavailable("The experiment store is unavailable; nothing was changed.") from exc


async def read_running_experiment(
    redis: Redis, *, tenant_id: str, placement_id: str
) -> dict[str, Any] | None:
    """The experiment running on a placement as {experimentId, controlStrategy,
    variantStrategy, trafficSplit} (one GET, no PostgreSQL), or None when none runs."""
    raw = await redis.get(_key(tenant_id, placement_id))
    return None if raw is None else dict(json.loads(raw))


async def change_experiment_status(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, experiment_id: str, status: str
) -> dict[str, Any] | None:
    """Move an experiment along its state machine, keep the running projection in step and,
    on completion, freeze its results; None when absent. InvalidTransition or PlacementBusy
    (both 409) when refused."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _fetch(conn, tenant_id=tenant_id, experiment_id=experiment_id, lock=True)
        if row is None:
            return None
        target = validate_transition(current=row["status"], target=status)
        if target is ExperimentStatus.RUNNING:
            running = await conn.fetch(
                "SELECT id FROM experiments WHERE tenant_id = $1 AND placement_id = $2 "
                "AND status = 'running'",
                tenant_id,
                row["placement_id"],
            )
            ensure_placement_free(
                experiment_id=str(row["id"]), running_experiment_ids=[str(r["id"]) for r in running]
            )
        try:
            updated = await conn.fetchrow(
                "UPDATE experiments SET status = $3, updated_at = clock_timestamp(), "
                "started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, "
                "clock_timestamp()) ELSE started_at END, "
                "completed_at = CASE WHEN $3 = 'completed' THEN clock_timestamp() "
                f"ELSE completed_at END WHERE tenant_id = $1 AND id = $2 RETURNING {_COLUMNS}",
                tenant_id,
                row["id"],
                target.value,
            )
        except asyncpg.UniqueViolationError as exc:
            # Another admin started an experiment on this placement a moment ago.
            raise Conflict("Another experiment is already running on this placement.") from exc
        assert updated is not None
        # Redis is written before the commit, while the row lock serialises changes of this
        # experiment and the unique index those of the placement: projections land in order.
        if target is ExperimentStatus.RUNNING:
            await _project(redis, tenant_id=tenant_id, row=updated)
        else:
            await _unproject(redis, tenant_id=tenant_id, row=updated)
        if target is ExperimentStatus.COMPLETED:
            await _freeze_results(conn, tenant_id=tenant_id, row=updated)
    return experiment_from_row(updated)


async def reproject_running_experiments(pool: asyncpg.Pool, redis: Redis, *, tenant_id: str) -> int:
    """Write the tenant's running experiments to Redis again (after a Redis loss); how many."""
    async with tenant_transaction(pool, tenant_id) as conn:
        # FOR SHARE holds off a pause or completion until the copy is written.
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM experiments WHERE tenant_id = $1 AND status = 'running' "
            "FOR SHARE",
            tenant_id,
        )
        for row in rows:
            await _project(redis, tenant_id=tenant_id, row=row)
    return len(rows)


async def record_experiment_exposure(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    experiment_id: str,
    variant: str,
    user_id: str,
    impressions: int = 0,
    clicks: int = 0,
    purchases: int = 0,
    revenue: float | Decimal = 0,
) -> bool:
    """Add a user's impressions, clicks, purchases and revenue to their row of the experiment
    (UPSERT); False, counting nothing, when the experiment is not the tenant's or is neither
    running nor paused. Not idempotent by itself: call it once per event really inserted."""
    exp_uuid = parse_experiment_id(experiment_id)
    if exp_uuid is None or variant not in ("control", "variant"):
        return False
    counted = await conn.fetchval(
        "INSERT INTO experiment_user_metrics (tenant_id, experiment_id, variant, user_id, "
        "impressions, clicks, purchases, revenue) "
        "SELECT e.tenant_id, e.id, $3, $4, $5, $6, $7, $8 FROM experiments e "
        # Paused still counts: events queued while it ran may arrive after the pause.
        "WHERE e.tenant_id = $1 AND e.id = $2 AND e.status IN ('running', 'paused') "
        "ON CONFLICT (experiment_id, user_id) DO UPDATE SET "
        "impressions = experiment_user_metrics.impressions + excluded.impressions, "
        "clicks = experiment_user_metrics.clicks + excluded.clicks, "
        "purchases = experiment_user_metrics.purchases + excluded.purchases, "
        "revenue = experiment_user_metrics.revenue + excluded.revenue "
        "RETURNING 1",
        tenant_id,
        exp_uuid,
        variant,
        user_id,
        int(impressions),
        int(clicks),
        int(purchases),
        Decimal(str(revenue)),
    )
    return counted is not None


_SUMS_QUERY = """
SELECT variant,
       count(*)                                   AS users,
       sum(impressions)                           AS sum_impressions,
       sum(clicks)                                AS sum_clicks,
       sum(impressions * impressions)             AS sum_impressions_sq,
       sum(clicks * clicks)                       AS sum_clicks_sq,
       sum(impressions * clicks)                  AS sum_impr_clicks,
       count(*) FILTER (WHERE purchases > 0)      AS buyers,
       sum(purchases)                             AS sum_purchases,
       sum(purchases * purchases)                 AS sum_purchases_sq,
       sum(revenue)                               AS sum_revenue,
       sum(revenue * revenue)                     AS sum_revenue_sq,
       sum(least(revenue, $3::numeric))           AS sum_revenue_capped,
       sum(least(revenue, $3::numeric) * least(revenue, $3::numeric)) AS sum_revenue_capped_sq
FROM experiment_user_metrics
WHERE tenant_id = $1 AND experiment_id = $2
GROUP BY variant
"""


def _empty_sums(*, capped: bool) -> VariantSums:
    return VariantSums(
        users=0,
        sum_impressions=0,
        sum_clicks=0,
        sum_impressions_sq=0,
        sum_clicks_sq=0,
        sum_impr_clicks=0,
        buyers=0,
        sum_purchases=0,
        sum_purchases_sq=0,
        sum_revenue=0,
        sum_revenue_sq=0,
        sum_revenue_capped=0 if capped else None,
        sum_revenue_capped_sq=0 if capped else None,
    )


def _finite(value: Any) -> Any:
    # JSON (and jsonb) have no Infinity or NaN: an undefined figure is null.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def variant_sums(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    experiment_id: uuid.UUID,
    revenue_cap: Decimal | None,
) -> dict[str, VariantSums]:
    """Per-variant sufficient statistics of the experiment, from one GROUP BY query."""
    rows = await conn.fetch(_SUMS_QUERY, tenant_id, experiment_id, revenue_cap)
    capped = revenue_cap is not None
    sums = {"control": _empty_sums(capped=capped), "variant": _empty_sums(capped=capped)}
    for row in rows:
        sums[row["variant"]] = VariantSums(
            users=int(row["users"]),
            sum_impressions=row["sum_impressions"],
            sum_clicks=row["sum_clicks"],
            sum_impressions_sq=row["sum_impressions_sq"],
            sum_clicks_sq=row["sum_clicks_sq"],
            sum_impr_clicks=row["sum_impr_clicks"],
            buyers=int(row["buyers"]),
            sum_purchases=row["sum_purchases"],
            sum_purchases_sq=row["sum_purchases_sq"],
            sum_revenue=row["sum_revenue"],
            sum_revenue_sq=row["sum_revenue_sq"],
            sum_revenue_capped=row["sum_revenue_capped"] if capped else None,
            sum_revenue_capped_sq=row["sum_revenue_capped_sq"] if capped else None,
        )
    return sums


async def _live_results(
    conn: asyncpg.Connection, *, tenant_id: str, row: asyncpg.Record
) -> dict[str, Any]:
    cap = row["revenue_cap"]
    sums = await variant_sums(conn, tenant_id=tenant_id, experiment_id=row["id"], revenue_cap=cap)
    results = analyse_experiment(
        control=sums["control"],
        variant=sums["variant"],
        traffic_split=row["traffic_split"],
        primary_metric=row["metric"],
        caps=MetricCaps(revenue=None if cap is None else float(cap)),
        sequential=(
            SequentialDesign(planned_users_per_variant=SEQUENTIAL_PLANNED_USERS_PER_VARIANT)
            if row["sequential"]
            else None
        ),
    )
    answer: dict[str, Any] = _finite(results.to_dict(status=row["status"]))
    answer["experimentId"] = str(row["id"])
    answer["primaryMetric"] = row["metric"]
    answer["frozen"] = False
    return answer


async def _freeze_results(conn: asyncpg.Connection, *, tenant_id: str, row: asyncpg.Record) -> None:
    results = await _live_results(conn, tenant_id=tenant_id, row=row)
    results["frozen"] = True
    for variant in ("control", "variant"):
        figures = results["variants"][variant]
        await conn.execute(
            "INSERT INTO experiment_results (experiment_id, tenant_id, variant, users, "
            "impressions, clicks, buyers, purchases, revenue, results) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (experiment_id, variant) DO NOTHING",
            row["id"],
            tenant_id,
            variant,
            figures["users"],
            figures["impressions"],
            figures["clicks"],
            figures["buyers"],
            figures["purchases"],
            Decimal(str(figures["revenue"])),
            results,
        )


async def experiment_results(
    pool: asyncpg.Pool, *, tenant_id: str, experiment_id: str
) -> dict[str, Any] | None:
    """The results answer of API.md: frozen for a completed experiment, else computed now
    from experiment_user_metrics; None when the experiment is not the tenant's."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _fetch(conn, tenant_id=tenant_id, experiment_id=experiment_id)
        if row is None:
            return None
        if row["status"] == ExperimentStatus.COMPLETED:
            frozen = await conn.fetchval(
                "SELECT results FROM experiment_results "
                "WHERE tenant_id = $1 AND experiment_id = $2 ORDER BY variant LIMIT 1",
                tenant_id,
                row["id"],
            )
            if frozen is not None:
                return dict(frozen)
        return await _live_results(conn, tenant_id=tenant_id, row=row)
