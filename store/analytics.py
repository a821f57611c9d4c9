"""Analytics in PostgreSQL and Redis: daily aggregates (refresh, late arrivals, retention) and
the reads the analytics endpoints make, which merge aggregated whole days, today's real-time
counters and raw-event slices.

A whole UTC day before today is read from `analytics_daily` (totals row: placement '' and
strategy ''), `analytics_product_daily` and `analytics_daily_users` once a refresh has run
after the day ended. Today is read from the Redis counters that ingestion keeps
(store.counters) when the period covers it from midnight to at least now plus the ingestion's
future tolerance: impressions, clicks, conversions, revenue, attributed revenue and events,
per placement/strategy for a scoped overview, per product for top products (whose attributed
revenue of today comes from revenue_attributions). Everything else (a period that starts or
ends inside today, partial days at its edges, days not refreshed yet, hourly series, and today
when Redis cannot be reached or holds no counters for the tenant's day) is counted from the raw
events, so an answer equals a direct count over the raw events. Active users are never taken
from the day's HyperLogLog (an estimate, ±0.81%, that cannot be united with other days):
they stay an exact distinct count, today's from the raw events. The counters lag the events
table by the moment between the ingest actor's commit and its Redis update.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import analytics as rules
from domain import holdout
from domain.analytics import ONE_DAY, Period, day_start
from domain.experiments.assignment import BUCKET_COUNT
from domain.experiments.statistics import VariantSums
from store import counters, rollups
from store.db import (
    all_tenants,
    scope_to_all_tenants,
    scope_to_tenant,
    tenant_transaction,
)

_FIGURES = """
    count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS impressions,
    count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
    count(*) FILTER (WHERE event_type = 'purchase') AS conversions,
    coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS revenue,
    count(*) AS events
"""
_COUNTED_TYPES = "('recommendation_impressed', 'recommendation_clicked', 'purchase')"
_RECOMMENDATION_TYPES = "('recommendation_impressed', 'recommendation_clicked')"
_EVENT_PLACEMENT = "coalesce(placement_id, '')"
_EVENT_STRATEGY = "coalesce(metadata->>'strategy', '')"
log = logging.getLogger(__name__)
_PARTS_COLUMN = {
    "impressions": "i",
    "clicks": "c",
    "conversions": "v",
    "revenue": "r",
    "attributed_revenue": "a",
}
SORTS = {
    "clicks": "clicks",
    "impressions": "impressions",
    "conversions": "conversions",
    "revenue": "revenue",
    "attributedRevenue": "attributed_revenue",
}


# ---------------------------------------------------------------------------------------------
# Refresh


_SESSION_LOCK = "SELECT pg_advisory_lock(hashtext('analytics'), hashtext($1))"
_SESSION_UNLOCK = "SELECT pg_advisory_unlock(hashtext('analytics'), hashtext($1))"


# Analytics reads events through these views, which leave out test keys' events (flagged
# `test`, sandbox traffic; migration 0015): the table or partition each stands for.
LIVE_SOURCES = {"events": "live_events", "events_default": "live_events_default"}


async def _lock_tenant(connection: asyncpg.Connection, tenant_id: str) -> None:
    # One refresh of a tenant at a time: user numbering reads max(idx) and then inserts.
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtext('analytics'), hashtext($1))", str(tenant_id)
    )


# Per-day user bitmaps of analytics_daily_users beside `users`, and the event marking each.
_STEP_COLUMNS = {
    "viewers": "product_viewed",
    "clickers": "recommendation_clicked",
    "carters": "add_to_cart",
    "buyers": "purchase",
}


async def _user_indices(
    connection: asyncpg.Connection, *, tenant_id: str, source: str, start: datetime, end: datetime
) -> dict[str, list[int]]:
    """Number the day's new users, then return the numbers of every user active that day
    (`users`) and of those with each funnel event (see _STEP_COLUMNS)."""
    await connection.execute(
        f"""
        INSERT INTO analytics_users (tenant_id, user_id, idx, holdout_bucket)
        SELECT $1, n.user_id,
               (SELECT coalesce(max(idx), -1) FROM analytics_users WHERE tenant_id = $1)
               + row_number() OVER (ORDER BY n.user_id),
               {_bucket_sql("n.d")}
        FROM (SELECT user_id, sha256(convert_to($4 || ':' || user_id, 'UTF8')) AS d
              FROM (SELECT DISTINCT user_id FROM {source}
                    WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3) x
              OFFSET 0) n
        WHERE NOT EXISTS (SELECT 1 FROM analytics_users u
                          WHERE u.tenant_id = $1 AND u.user_id = n.user_id)
        """,
        tenant_id,
        start,
        end,
        holdout.salt(tenant_id),
    )
    flags = ", ".join(
        f"bool_or(event_type = '{event_type}') AS {column}"
        for column, event_type in _STEP_COLUMNS.items()
    )
    rows = await connection.fetch(
        f"""
        SELECT u.idx, {", ".join(f"n.{column}" for column in _STEP_COLUMNS)}
        FROM (SELECT user_id, {flags} FROM {source}
              WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
              GROUP BY user_id) n
        JOIN analytics_users u ON u.tenant_id = $1 AND u.user_id = n.user_id
        """,
        tenant_id,
        start,
        end,
    )
    found = {"users": [row["idx"] for row in rows]}
    for column in _STEP_COLUMNS:
        found[column] = [row["idx"] for row in rows if row[column]]
    return found


async def summarise_day(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    day: date,
    source: str = "events",
    before: datetime | None = None,
    add: bool = False,
) -> None:
    """Write the day's aggregates from the raw rows of `source` (events or one partition).

    By default the aggregates are replaced (the source holds the whole day). With `add` the
    source's rows are added to what is stored: the default partition's rows older than the
    retention window, folded in just before they are deleted. Run inside a transaction."""
    if source not in LIVE_SOURCES:
        raise ValueError(f"unknown source {source!r}")
    source = LIVE_SOURCES[source]
    await _lock_tenant(connection, tenant_id)
    start, end = day_start(day), day_start(day + ONE_DAY)
    if before is not None:
        end = min(end, before)
    indices = await _user_indices(
        connection, tenant_id=tenant_id, source=source, start=start, end=end
    )
    stored = await connection.fetchrow(
        f"""SELECT users, {", ".join(_STEP_COLUMNS)} FROM analytics_daily_users
           WHERE tenant_id = $1 AND day = $2 AND placement_id = '' AND strategy = ''""",
        tenant_id,
        day,
    )
    bitmaps = {name: rules.bitmap_of(found) for name, found in indices.items()}
    if add and stored:
        bitmaps = {
            name: rules.bitmap_union([stored[name] or b"", bitmap])
            for name, bitmap in bitmaps.items()
        }
    users, buyers = bitmaps["users"], bitmaps["buyers"]
    if not add:
        await connection.execute(
            "DELETE FROM analytics_daily WHERE tenant_id = $1 AND day = $2", tenant_id, day
        )
        await connection.execute(
            "DELETE FROM analytics_product_daily WHERE tenant_id = $1 AND day = $2", tenant_id, day
        )
        await connection.execute(
            "DELETE FROM analytics_daily_users WHERE tenant_id = $1 AND day = $2", tenant_id, day
        )
    # Attributions are not raw events: they are kept as long as the daily aggregates, so a
    # replace recounts the day's and an add (of old raw rows only) leaves them as they are.
    attributed = (
        "0"
        if add
        else """(SELECT coalesce(sum(revenue), 0) FROM revenue_attributions
                 WHERE tenant_id = $1 AND purchased_at >= $3 AND purchased_at < $4)"""
    )
    await connection.execute(
        f"""
        INSERT INTO analytics_daily AS d (tenant_id, day, impressions, clicks, conversions,
            revenue, attributed_revenue, events, active_users, buyers, refreshed_at)
        SELECT $1, $2, f.impressions, f.clicks, f.conversions, f.revenue, {attributed},
               f.events, $5, $6, now()
        FROM (SELECT {_FIGURES} FROM {source}
              WHERE tenant_id = $1 AND occurred_at >= $3 AND occurred_at < $4) f
        ON CONFLICT (tenant_id, day, placement_id, strategy) DO UPDATE SET
            impressions = d.impressions + EXCLUDED.impressions,
            clicks = d.clicks + EXCLUDED.clicks,
            conversions = d.conversions + EXCLUDED.conversions,
            revenue = d.revenue + EXCLUDED.revenue,
            events = d.events + EXCLUDED.events,
            active_users = EXCLUDED.active_users,
            buyers = EXCLUDED.buyers,
            refreshed_at = EXCLUDED.refreshed_at
        """,
        tenant_id,
        day,
        start,
        end,
        rules.bitmap_count(users),
        rules.bitmap_count(buyers),
    )
    product_attributions = (
        ""
        if add
        else """
        UNION ALL
        SELECT product_id, 0, 0, 0, 0, sum(revenue) FROM revenue_attributions
        WHERE tenant_id = $1 AND purchased_at >= $3 AND purchased_at < $4
        GROUP BY product_id"""
    )
    await connection.execute(
        f"""
        INSERT INTO analytics_product_daily AS p (tenant_id, day, product_id, impressions, clicks,
            conversions, revenue, attributed_revenue)
        SELECT $1, $2, product_id, sum(i), sum(c), sum(v), sum(r), sum(a)
        FROM (
            SELECT product_id,
                   count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                   count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                   count(*) FILTER (WHERE event_type = 'purchase') AS v,
                   coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS r,
                   0::numeric AS a
            FROM {source}
            WHERE tenant_id = $1 AND occurred_at >= $3 AND occurred_at < $4
              AND event_type IN {_COUNTED_TYPES}
            GROUP BY product_id
            {product_attributions}
        ) x
        GROUP BY product_id
        ON CONFLICT (tenant_id, day, product_id) DO UPDATE SET
            impressions = p.impressions + EXCLUDED.impressions,
            clicks = p.clicks + EXCLUDED.clicks,
            conversions = p.conversions + EXCLUDED.conversions,
            revenue = p.revenue + EXCLUDED.revenue,
            attributed_revenue = p.attributed_revenue + EXCLUDED.attributed_revenue
        """,
        tenant_id,
        day,
        start,
        end,
    )
    await connection.execute(
        """INSERT INTO analytics_daily_users (tenant_id, day, users, buyers, viewers, clickers,
               carters)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (tenant_id, day, placement_id, strategy)
           DO UPDATE SET users = EXCLUDED.users, buyers = EXCLUDED.buyers,
               viewers = EXCLUDED.viewers, clickers = EXCLUDED.clickers,
               carters = EXCLUDED.carters""",
        tenant_id,
        day,
        users,
        buyers,
        bitmaps["viewers"],
        bitmaps["clickers"],
        bitmaps["carters"],
    )
    await _summarise_placements(
        connection, tenant_id=tenant_id, day=day, source=source, start=start, end=end, add=add
    )
    if not add:
        await connection.execute(
            "DELETE FROM analytics_daily_buyers WHERE tenant_id = $1 AND day = $2", tenant_id, day
        )
    await connection.execute(
        f"""
        INSERT INTO analytics_daily_buyers AS b (tenant_id, day, idx, purchases, revenue,
            holdout_bucket)
        SELECT $1, $2, u.idx, count(*), coalesce(sum(e.price), 0), u.holdout_bucket
        FROM {source} e
        JOIN analytics_users u ON u.tenant_id = $1 AND u.user_id = e.user_id
        WHERE e.tenant_id = $1 AND e.occurred_at >= $3 AND e.occurred_at < $4
          AND e.event_type = 'purchase'
        GROUP BY u.idx, u.holdout_bucket
        ON CONFLICT (tenant_id, day, idx) DO UPDATE SET
            purchases = b.purchases + EXCLUDED.purchases, revenue = b.revenue + EXCLUDED.revenue
        """,
        tenant_id,
        day,
        start,
        end,
    )
    await _pack_day(connection, tenant_id=tenant_id, day=day)
    if not add and before is None:
        # The recount saw every event of the day visible to this snapshot: exactly those
        # whose pending notes this snapshot sees (an event and its note commit together).
        await connection.execute(
            "DELETE FROM analytics_pending WHERE tenant_id = $1 AND day = $2", tenant_id, day
        )
        await connection.execute(
            """UPDATE analytics_daily SET covers_pending = true
               WHERE tenant_id = $1 AND day = $2 AND placement_id = '' AND strategy = ''""",
            tenant_id,
            day,
        )


# Packed product figures: per product number, impressions, clicks, conversions, and revenue
# and attributed revenue in ten-thousandths (numeric(16, 4) exactly).
_PACKED = np.dtype(
    [("idx", "<i4"), ("i", "<i8"), ("c", "<i8"), ("v", "<i8"), ("r", "<i8"), ("a", "<i8")]
)


# Packed buyers of a day: per user number, holdout bucket (-1: none stored), purchases, and
# revenue in ten-thousandths.
_BUYERS = np.dtype([("idx", "<i4"), ("bucket", "<i2"), ("p", "<i8"), ("r", "<i8")])


async def _pack_day(connection: asyncpg.Connection, *, tenant_id: str, day: date) -> None:
    """Number the day's new products, then store its analytics_product_daily rows and its
    analytics_daily_buyers rows packed."""
    await connection.execute(
        """
        INSERT INTO analytics_products (tenant_id, product_id, idx)
        SELECT $1, n.product_id,
               (SELECT coalesce(max(idx), -1) FROM analytics_products WHERE tenant_id = $1)
               + row_number() OVER (ORDER BY n.product_id)
        FROM (SELECT product_id FROM analytics_product_daily d
              WHERE d.tenant_id = $1 AND d.day = $2
                AND NOT EXISTS (SELECT 1 FROM analytics_products p
                                WHERE p.tenant_id = $1 AND p.product_id = d.product_id)) n
        """,
        tenant_id,
        day,
    )
    products = await connection.fetchrow(
        """SELECT array_agg(p.idx) AS idx, array_agg(d.impressions) AS i,
                  array_agg(d.clicks) AS c, array_agg(d.conversions) AS v,
                  array_agg((d.revenue * 10000)::bigint) AS r,
                  array_agg((d.attributed_revenue * 10000)::bigint) AS a
           FROM analytics_product_daily d
           JOIN analytics_products p ON p.tenant_id = $1 AND p.product_id = d.product_id
           WHERE d.tenant_id = $1 AND d.day = $2""",
        tenant_id,
        day,
    )
    buyers = await connection.fetchrow(
        """SELECT array_agg(idx) AS idx, array_agg(coalesce(holdout_bucket, -1)) AS bucket,
                  array_agg(purchases) AS p, array_agg((revenue * 10000)::bigint) AS r
           FROM analytics_daily_buyers WHERE tenant_id = $1 AND day = $2""",
        tenant_id,
        day,
    )
    packed = []
    for found, dtype in ((products, _PACKED), (buyers, _BUYERS)):
        array = np.zeros(len(found["idx"] or []), dtype=dtype)
        for name in dtype.names or ():
            array[name] = found[name] or []
        packed.append(array.tobytes())
    await connection.execute(
        """INSERT INTO analytics_packed (tenant_id, day, products, buyers) VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, day)
           DO UPDATE SET products = EXCLUDED.products, buyers = EXCLUDED.buyers""",
        tenant_id,
        day,
        *packed,
    )


async def _summarise_placements(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    day: date,
    source: str,
    start: datetime,
    end: datetime,
    add: bool,
) -> None:
    """The day's rows per placement and strategy: recommendation impressions and clicks, the
    purchases attributed to their clicks, and the users who saw or clicked them."""
    attributed = (
        ""
        if add
        else """
        UNION ALL
        SELECT coalesce(placement_id, ''), coalesce(strategy, ''), 0, 0, count(*), sum(revenue)
        FROM revenue_attributions
        WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
        GROUP BY 1, 2"""
    )
    figures = await connection.fetch(
        f"""
        SELECT placement_id, strategy, sum(i) AS impressions, sum(c) AS clicks,
               sum(v) AS conversions, sum(r) AS revenue
        FROM (
            SELECT {_EVENT_PLACEMENT} AS placement_id, {_EVENT_STRATEGY} AS strategy,
                   count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                   count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                   0::bigint AS v, 0::numeric AS r
            FROM {source}
            WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
              AND event_type IN {_RECOMMENDATION_TYPES}
            GROUP BY 1, 2
            {attributed}
        ) x
        GROUP BY 1, 2
        """,
        tenant_id,
        start,
        end,
    )
    audiences = await connection.fetch(
        f"""
        SELECT {_EVENT_PLACEMENT} AS placement_id, {_EVENT_STRATEGY} AS strategy,
               array_agg(DISTINCT u.idx) AS indices
        FROM {source} e
        JOIN analytics_users u ON u.tenant_id = $1 AND u.user_id = e.user_id
        WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
          AND e.event_type IN {_RECOMMENDATION_TYPES}
        GROUP BY 1, 2
        """,
        tenant_id,
        start,
        end,
    )
    stored = {}
    if add:
        stored = {
            (row["placement_id"], row["strategy"]): row["users"]
            for row in await connection.fetch(
                """SELECT placement_id, strategy, users FROM analytics_daily_users
                   WHERE tenant_id = $1 AND day = $2""",
                tenant_id,
                day,
            )
        }
    bitmaps = {
        (row["placement_id"], row["strategy"]): rules.bitmap_of(row["indices"]) for row in audiences
    }
    for pair, bitmap in list(bitmaps.items()):
        if pair in stored:
            bitmaps[pair] = rules.bitmap_union([stored[pair], bitmap])
    # Placement '' with strategy '' is the totals row: no recommendation event lacks a
    # placement, so no real pair is ever that one.
    rows = [row for row in figures if (row["placement_id"], row["strategy"]) != ("", "")]
    await connection.executemany(
        """
        INSERT INTO analytics_daily AS d (tenant_id, day, placement_id, strategy, impressions,
            clicks, conversions, revenue, attributed_revenue, events, active_users, refreshed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $5::bigint + $6::bigint, $9, now())
        ON CONFLICT (tenant_id, day, placement_id, strategy) DO UPDATE SET
            impressions = d.impressions + EXCLUDED.impressions,
            clicks = d.clicks + EXCLUDED.clicks,
            conversions = d.conversions + EXCLUDED.conversions,
            revenue = d.revenue + EXCLUDED.revenue,
            attributed_revenue = d.attributed_revenue + EXCLUDED.attributed_revenue,
            events = d.events + EXCLUDED.events,
            active_users = EXCLUDED.active_users,
            refreshed_at = EXCLUDED.refreshed_at
        """,
        [
            (
                tenant_id,
                day,
                row["placement_id"],
                row["strategy"],
                row["impressions"],
                row["clicks"],
                row["conversions"],
                row["revenue"],
                rules.bitmap_count(
                    bitmaps.get((row["placement_id"], row["strategy"]))
                    or stored.get((row["placement_id"], row["strategy"]), b"")
                ),
            )
            for row in rows
        ],
    )
    await connection.executemany(
        """INSERT INTO analytics_daily_users (tenant_id, day, placement_id, strategy, users)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id, day, placement_id, strategy)
           DO UPDATE SET users = EXCLUDED.users""",
        [
            (tenant_id, day, placement, strategy, bitmap)
            for (placement, strategy), bitmap in bitmaps.items()
            if (placement, strategy) != ("", "")
        ],
    )


async def refresh_tenant_days(pool: asyncpg.Pool, *, tenant_id: str, days: Sequence[date]) -> int:
    """Recompute the tenant's aggregates of each day (one transaction per day); days refreshed.

    Days before the raw-event window are skipped: their raw events may be gone, and a recount
    would replace the summary with what is left (retention folds those days in itself)."""
    oldest = rules.retention_cutoffs(datetime.now(UTC))["events"]
    kept = sorted(day for day in set(days) if day >= oldest)
    for day in kept:
        async with pool.acquire() as connection:
            # Locked before the snapshot is taken: a snapshot older than another refresh's
            # commit would number users again and miss the pending notes it deleted.
            await connection.execute(_SESSION_LOCK, str(tenant_id))
            try:
                # One snapshot for the recount and the pending notes it deletes.
                async with connection.transaction(isolation="repeatable_read"):
                    await scope_to_tenant(connection, tenant_id)
                    await summarise_day(connection, tenant_id=tenant_id, day=day)
            finally:
                await connection.execute(_SESSION_UNLOCK, str(tenant_id))
    return len(kept)


async def days_due(
    pool: asyncpg.Pool, *, now: datetime, late_since: datetime
) -> list[tuple[str, date]]:
    """(tenant, day) pairs to refresh: today of every tenant with events today, yesterday
    where it was last refreshed before it ended, and every day inside the raw-event window
    that received events or attributions since `late_since` (late arrivals)."""
    today = now.astimezone(UTC).date()
    oldest = rules.retention_cutoffs(now)["events"]
    # The scheduler's fan-out: which tenants have days to refresh.
    async with all_tenants(pool) as connection:
        rows = await connection.fetch(
            """
        SELECT t.id::text AS tenant_id, d.day
        FROM tenants t
        CROSS JOIN (VALUES ($1::date), ($1::date - 1)) AS d(day)
        WHERE EXISTS (SELECT 1 FROM events e
                      WHERE e.tenant_id = t.id
                        AND e.occurred_at >= d.day::timestamp AT TIME ZONE 'UTC'
                        AND e.occurred_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC')
          AND (d.day = $1 OR NOT EXISTS (
                SELECT 1 FROM analytics_daily a
                WHERE a.tenant_id = t.id AND a.day = d.day AND a.placement_id = ''
                  AND a.strategy = ''
                  AND a.refreshed_at >= (d.day + 1)::timestamp AT TIME ZONE 'UTC'))
        UNION
        SELECT tenant_id::text, (occurred_at AT TIME ZONE 'UTC')::date FROM events
        WHERE received_at >= $2 AND occurred_at >= $3
        UNION
        SELECT tenant_id::text, (purchased_at AT TIME ZONE 'UTC')::date FROM revenue_attributions
        WHERE created_at >= $2 AND purchased_at >= $3
        UNION
        SELECT tenant_id::text, day FROM analytics_pending
        WHERE day >= ($3 AT TIME ZONE 'UTC')::date
        UNION
        -- Days aggregated before the rollups of migration 0014, while raw events last.
        SELECT tenant_id::text, day FROM analytics_daily
        WHERE placement_id = '' AND strategy = '' AND NOT covers_pending
          AND day >= ($3 AT TIME ZONE 'UTC')::date
        UNION
        -- Days aggregated before buyers were counted (migration 0013), while raw events last.
        SELECT tenant_id::text, day FROM analytics_daily
        WHERE placement_id = '' AND strategy = '' AND buyers IS NULL
          AND day >= ($3 AT TIME ZONE 'UTC')::date
        """,
            today,
            late_since,
            day_start(oldest),
        )
    return sorted((row["tenant_id"], row["day"]) for row in rows if row["day"] <= today)


async def refresh_due(pool: asyncpg.Pool, *, now: datetime, late_since: datetime) -> int:
    """Refresh every (tenant, day) that `days_due` names; how many were refreshed."""
    due = await days_due(pool, now=now, late_since=late_since)
    for tenant_id, day in due:
        await refresh_tenant_days(pool, tenant_id=tenant_id, days=[day])
    return len(due)


# ---------------------------------------------------------------------------------------------
# Retention


@dataclass(frozen=True)
class RetentionOutcome:
    """What one retention run removed."""

    partitions_dropped: list[str]
    default_rows_deleted: int
    daily_rows_deleted: int


async def _partitions(connection: asyncpg.Connection) -> list[str]:
    rows = await connection.fetch(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = 'events' ORDER BY c.relname"""
    )
    return [row["relname"] for row in rows]


async def _tenant_days(
    connection: asyncpg.Connection, *, table: str, before: datetime | None = None
) -> list[tuple[str, date]]:
    condition = "WHERE occurred_at < $1" if before is not None else ""
    args = [before] if before is not None else []
    rows = await connection.fetch(
        f"""SELECT DISTINCT tenant_id::text AS tenant_id,
                   (occurred_at AT TIME ZONE 'UTC')::date AS day
            FROM "{table}" {condition} ORDER BY 1, 2""",
        *args,
    )
    return [(row["tenant_id"], row["day"]) for row in rows]


async def apply_retention(pool: asyncpg.Pool, *, now: datetime) -> RetentionOutcome:
    """Raw events 90 days: summarise, then detach and drop every monthly partition that lies
    wholly before the window and fold the default partition's older rows into the summaries
    before deleting them. Daily aggregates 1 year."""
    cutoffs = rules.retention_cutoffs(now)
    events_cutoff = day_start(cutoffs["events"])
    dropped: list[str] = []
    async with pool.acquire() as connection:
        for name in await _partitions(connection):
            bounds = rules.partition_bounds(name)
            if bounds is None or day_start(bounds[1]) > events_cutoff:
                continue
            async with connection.transaction():
                # Retention spans tenants: it summarises and drops whole partitions.
                await scope_to_all_tenants(connection)
                # Late arrivals into this month wait until it is gone; none can slip between
                # the summary and the drop.
                await connection.execute(f'LOCK TABLE "{name}" IN SHARE MODE')
                for tenant_id, day in await _tenant_days(connection, table=name):
                    await summarise_day(connection, tenant_id=tenant_id, day=day)
                # As the schema owner: the platform's own role may change rows only.
                await connection.execute("SELECT drop_event_partition($1)", name)
            dropped.append(name)
        async with connection.transaction():
            await scope_to_all_tenants(connection)
            await connection.execute("LOCK TABLE events_default IN SHARE ROW EXCLUSIVE MODE")
            for tenant_id, day in await _tenant_days(
                connection, table="events_default", before=events_cutoff
            ):
                await summarise_day(
                    connection,
                    tenant_id=tenant_id,
                    day=day,
                    source="events_default",
                    before=events_cutoff,
                    add=True,
                )
            status = await connection.execute(
                "DELETE FROM events_default WHERE occurred_at < $1", events_cutoff
            )
            default_deleted = int(status.split()[-1])
        daily_deleted = 0
        async with connection.transaction():
            await scope_to_all_tenants(connection)
            for table in (
                "analytics_daily",
                "analytics_product_daily",
                "analytics_daily_users",
                "analytics_daily_buyers",
                "analytics_packed",
            ):
                status = await connection.execute(
                    f"DELETE FROM {table} WHERE day < $1", cutoffs["daily"]
                )
                if table == "analytics_daily":
                    daily_deleted = int(status.split()[-1])
            # Notes of events that are gone (their partition dropped) stand for nothing.
            await connection.execute(
                "DELETE FROM analytics_pending WHERE day < $1", cutoffs["events"]
            )
            await connection.execute(
                "DELETE FROM revenue_attributions WHERE purchased_at < $1",
                day_start(cutoffs["daily"]),
            )
    return RetentionOutcome(dropped, default_deleted, daily_deleted)


# ---------------------------------------------------------------------------------------------
# Reads


@dataclass
class _Plan:
    """Which whole days come from aggregates, which part of today from the real-time counters
    (`counted`), and which ranges from raw events; `unaggregated` is everything not read from
    the aggregates (raw ranges and the counted span), whose users come from the raw events;
    `pending` the aggregated days with events stored since their refresh, read beside them."""

    aggregated: dict[date, asyncpg.Record]
    raw: list[Period]
    counted: Period | None = None
    unaggregated: list[Period] = field(default_factory=list)
    pending: list[Period] = field(default_factory=list)

    def slices(self) -> list[tuple[Period, bool]]:
        """The raw ranges and the pending days, each with whether it is pending."""
        return [(piece, False) for piece in self.raw] + [(piece, True) for piece in self.pending]

    def user_slices(self) -> list[tuple[Period, bool]]:
        """Where users come from outside the day bitmaps: unaggregated ranges, pending days."""
        return [(piece, False) for piece in self.unaggregated] + [
            (piece, True) for piece in self.pending
        ]


def _source(pending: bool, *, start: str, end: str, alias: str = "events") -> str:
    """The events of a slice: every event (`events`) or the pending ones of the tenant ($1)."""
    if not pending:
        return f"live_events {alias}"
    return rollups.pending_events(tenant="$1", start=start, end=end, alias=alias)


async def _plan(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    period: Period,
    today: date,
    counted: Period | None = None,
) -> _Plan:
    candidates = rules.whole_days(period)
    rows: dict[date, asyncpg.Record] = {}
    pending_days: set[date] = set()
    if candidates:
        found = await connection.fetch(
            """SELECT day, impressions, clicks, conversions, revenue, attributed_revenue,
                      events, active_users, coalesce(buyers, 0) AS buyers,
                      buyers IS NOT NULL AS counted_buyers, refreshed_at, covers_pending,
                      EXISTS (SELECT 1 FROM analytics_pending p WHERE p.tenant_id = $1
                              AND p.day = analytics_daily.day) AS has_pending
               FROM analytics_daily
               WHERE tenant_id = $1 AND placement_id = '' AND strategy = ''
                 AND day >= $2 AND day <= $3""",
            tenant_id,
            candidates[0],
            candidates[-1],
        )
        # A day aggregated before buyers were counted is read raw while its events last.
        oldest = rules.retention_cutoffs(day_start(today))["events"]
        rows = {row["day"]: row for row in found if row["counted_buyers"] or row["day"] < oldest}
        pending_days = {day for day, row in rows.items() if row["has_pending"]}
    servable = rules.servable_days(
        candidates,
        {day: row["refreshed_at"] for day, row in rows.items()},
        today=today,
        with_pending=[day for day, row in rows.items() if row["covers_pending"]],
    )
    if counted is not None and counted.start.date() in servable:
        counted = None  # today's aggregate and pending events stand for it exactly
    unaggregated = rules.raw_ranges(period, servable)
    return _Plan(
        aggregated={day: rows[day] for day in servable},
        raw=rules.without(unaggregated, counted),
        counted=counted,
        unaggregated=unaggregated,
        pending=[
            Period(day_start(day), day_start(day + ONE_DAY))
            for day in servable
            if day in pending_days
        ],
    )


@dataclass(frozen=True)
class _Today:
    """Today's real-time counter hashes of one tenant: the day's fields and, when asked for,
    its per-product fields; `span` is the part of the period they stand for."""

    span: Period
    fields: dict[str, float]
    products: dict[str, float]


async def _read_today(
    redis: Redis, *, tenant_ids: list[str], period: Period, now: datetime, products: bool = False
) -> list[_Today | None]:
    """Per tenant, today's counters when they can answer today's part of the period, else
    None: the period does not cover today from midnight to now, Redis cannot be reached (logged;
    the raw events answer instead), or the tenant's day hash is empty (nothing counted yet, or
    a Redis that lost its data: the raw events answer either exactly, at the cost of a probe)."""
    span = rules.counted_span(period, now=now)
    if span is None or not tenant_ids:
        return [None] * len(tenant_ids)
    try:
        found = await counters.read_day(
            redis, tenant_ids=tenant_ids, day=counters.day_of(span.start), products=products
        )
    except (RedisError, OSError) as exc:
        log.warning("analytics: real-time counters unavailable, today counted from raw: %r", exc)
        return [None] * len(tenant_ids)
    return [_Today(span, day, by_product) if day else None for day, by_product in found]


@dataclass(frozen=True)
class Scope:
    """A filter on recommendation placement and/or strategy (None: any)."""

    placement_id: str | None = None
    strategy: str | None = None


# With a scope the figures are those of the recommendations shown: impressions and clicks of
# the placement/strategy, purchases attributed to their clicks (conversions, revenue), users
# who saw or clicked them, and events = impressions + clicks.
_SCOPED_EVENTS = f"""
    event_type IN {_RECOMMENDATION_TYPES}
    AND ($4::text IS NULL OR {_EVENT_PLACEMENT} = $4)
    AND ($5::text IS NULL OR {_EVENT_STRATEGY} = $5)
"""
_SCOPED_ATTRIBUTIONS = """
    tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
    AND ($4::text IS NULL OR coalesce(placement_id, '') = $4)
    AND ($5::text IS NULL OR coalesce(strategy, '') = $5)
"""
_SCOPED_ROWS = """
    NOT (placement_id = '' AND strategy = '')
    AND ($3::text IS NULL OR placement_id = $3) AND ($4::text IS NULL OR strategy = $4)
"""


async def _raw_figures(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    slices: Sequence[tuple[Period, bool]],
    scope: Scope | None = None,
) -> dict[str, Any]:
    """Event figures of raw ranges and pending days (attributed figures: see _attributed)."""
    total = rules.empty_figures()
    for piece, pending in slices:
        source = _source(pending, start="$2", end="$3")
        if scope is None:
            row = await connection.fetchrow(
                f"""SELECT {_FIGURES} FROM {source}
                    WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3""",
                tenant_id,
                piece.start,
                piece.end,
            )
        else:
            row = await connection.fetchrow(
                f"""SELECT count(*) FILTER (WHERE event_type = 'recommendation_impressed')
                           AS impressions,
                       count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS clicks,
                       count(*) AS events
                    FROM {source}
                    WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
                      AND {_SCOPED_EVENTS}""",
                tenant_id,
                piece.start,
                piece.end,
                scope.placement_id,
                scope.strategy,
            )
        rules.add_figures(total, dict(row))
    return total


async def _attributed(
    connection: asyncpg.Connection, *, tenant_id: str, period: Period, scope: Scope | None
) -> tuple[int, Decimal]:
    """Purchases attributed to recommendation clicks in the period (of the scope) and their
    revenue, read from the attributions themselves: they are few, kept as long as the daily
    aggregates, and one made after its day's refresh (a click that came late) counts at once."""
    row = await connection.fetchrow(
        f"""SELECT count(*) AS conversions, coalesce(sum(revenue), 0) AS revenue
            FROM revenue_attributions WHERE {_SCOPED_ATTRIBUTIONS}""",
        tenant_id,
        period.start,
        period.end,
        None if scope is None else scope.placement_id,
        None if scope is None else scope.strategy,
    )
    return int(row["conversions"]), row["revenue"]


async def _aggregated_figures(
    connection: asyncpg.Connection, *, tenant_id: str, plan: _Plan, scope: Scope | None
) -> dict[str, Any]:
    figures = rules.empty_figures()
    if scope is None:
        for row in plan.aggregated.values():
            rules.add_figures(figures, dict(row))
        return figures
    if plan.aggregated:
        row = await connection.fetchrow(
            f"""SELECT sum(impressions) AS impressions, sum(clicks) AS clicks,
                       sum(conversions) AS conversions, sum(revenue) AS revenue,
                       sum(attributed_revenue) AS attributed_revenue, sum(events) AS events
                FROM analytics_daily
                WHERE tenant_id = $1 AND day = ANY($2::date[]) AND {_SCOPED_ROWS}""",
            tenant_id,
            sorted(plan.aggregated),
            scope.placement_id,
            scope.strategy,
        )
        rules.add_figures(figures, dict(row))
    return figures


async def _scoped_buyers(
    connection: asyncpg.Connection, *, tenant_id: str, period: Period, scope: Scope
) -> int:
    """Distinct users with a purchase attributed to the scope's clicks in the period
    (attributions are kept as long as the daily aggregates)."""
    return int(
        await connection.fetchval(
            f"""SELECT count(DISTINCT user_id) FROM revenue_attributions
                WHERE {_SCOPED_ATTRIBUTIONS}""",
            tenant_id,
            period.start,
            period.end,
            scope.placement_id,
            scope.strategy,
        )
    )


async def _distinct_users(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    plan: _Plan,
    scope: Scope | None = None,
    buyers: bool = False,
) -> int:
    """Distinct users of the plan's period (exact union of day bitmaps and raw slices); with
    `buyers`, those with a purchase event (unscoped only)."""
    if buyers and scope is not None:
        raise ValueError("scoped buyers come from revenue attributions")
    bitmaps: list[bytes] = []
    if plan.aggregated:
        if scope is None:
            column = "coalesce(buyers, ''::bytea)" if buyers else "users"
            rows = await connection.fetch(
                f"""SELECT {column} AS users FROM analytics_daily_users WHERE tenant_id = $1
                   AND day = ANY($2::date[]) AND placement_id = '' AND strategy = ''""",
                tenant_id,
                sorted(plan.aggregated),
            )
        else:
            rows = await connection.fetch(
                f"""SELECT users FROM analytics_daily_users
                    WHERE tenant_id = $1 AND day = ANY($2::date[]) AND {_SCOPED_ROWS}""",
                tenant_id,
                sorted(plan.aggregated),
                scope.placement_id,
                scope.strategy,
            )
        bitmaps = [row["users"] for row in rows]
    known: list[int] = []
    unnumbered = 0
    slices = plan.user_slices()
    if slices:
        first = 2 if scope is None else 4
        condition = (
            ("AND event_type = 'purchase'" if buyers else "")
            if scope is None
            else f"""AND event_type IN {_RECOMMENDATION_TYPES}
                     AND ($2::text IS NULL OR {_EVENT_PLACEMENT} = $2)
                     AND ($3::text IS NULL OR {_EVENT_STRATEGY} = $3)"""
        )
        selects = " UNION ".join(
            f"SELECT user_id FROM "
            f"{_source(pending, start=f'${first + 2 * i}', end=f'${first + 1 + 2 * i}')} "
            f"WHERE tenant_id = $1 {condition} "
            f"AND occurred_at >= ${first + 2 * i} AND occurred_at < ${first + 1 + 2 * i}"
            for i, (_, pending) in enumerate(slices)
        )
        scope_args = [] if scope is None else [scope.placement_id, scope.strategy]
        moments = [moment for piece, _ in slices for moment in (piece.start, piece.end)]
        if not bitmaps:
            # Nothing to unite with (today alone, say): a distinct count is the answer, and
            # numbering the users through analytics_users would cost more than the count.
            return int(
                await connection.fetchval(
                    f"SELECT count(DISTINCT user_id) FROM ({selects}) r",
                    tenant_id,
                    *scope_args,
                    *moments,
                )
            )
        # One row with an array: decoding tens of thousands of records costs more than the
        # query. A user never numbered is in no bitmap: a user of the raw slices only.
        found = await connection.fetchrow(
            f"""SELECT coalesce(array_agg(u.idx) FILTER (WHERE u.idx IS NOT NULL), '{{}}')
                       AS known,
                       count(*) FILTER (WHERE u.idx IS NULL) AS unnumbered
                FROM (SELECT DISTINCT user_id FROM ({selects}) r) n
                LEFT JOIN analytics_users u ON u.tenant_id = $1 AND u.user_id = n.user_id""",
            tenant_id,
            *scope_args,
            *moments,
        )
        known, unnumbered = found["known"], found["unnumbered"]
    return rules.union_count(bitmaps, known) + unnumbered


def _today(now: datetime) -> date:
    return now.astimezone(UTC).date()


async def tenant_overview(
    pool: asyncpg.Pool,
    redis: Redis,
    *,
    tenant_id: str,
    period: Period,
    now: datetime,
    scope: Scope | None = None,
    holdout_percent: int = 0,
) -> dict[str, Any]:
    """The overview figures of one tenant over the period, optionally of one placement and/or
    strategy only (see Scope); unscoped and with a holdout, also `incremental`."""
    today = await _read_today(redis, tenant_ids=[tenant_id], period=period, now=now)
    found = await _tenant_overview(
        pool, tenant_id=tenant_id, period=period, now=now, scope=scope, today=today[0]
    )
    if holdout_percent > 0 and (scope is None or scope == Scope()):
        arms = await holdout_sums(pool, tenant_id=tenant_id, period=period, percent=holdout_percent)
        found["incremental"] = holdout.incremental(
            holdout=arms[0], exposed=arms[1], percent=holdout_percent
        )
    return found


def _bucket_sql(digest: str) -> str:
    """SQL for ``int.from_bytes(digest, "big") % BUCKET_COUNT`` of a 32-byte sha256 digest:
    each byte times 256**(31 - i) mod BUCKET_COUNT, summed, mod BUCKET_COUNT (the sum stays
    far below 2**31)."""
    terms = " + ".join(
        f"get_byte({digest}, {i}) * {pow(256, 31 - i, BUCKET_COUNT)}" for i in range(32)
    )
    return f"(({terms}) % {BUCKET_COUNT})"


async def holdout_sums(
    pool: asyncpg.Pool, *, tenant_id: str, period: Period, percent: int
) -> tuple[VariantSums, VariantSums]:
    """Per-user sufficient statistics of the holdout and of everyone else over the users active
    in the period, assigned exactly as domain.holdout.in_holdout assigns them.

    Active users come from the day bitmaps (each numbered user's bucket is stored with its
    number) and the raw slices and pending events; purchases per user from the per-day buyer
    rollups (analytics_daily_buyers) plus the purchases of the raw slices and pending events,
    summed per user before squaring. Impressions and clicks are not counted: the incremental
    tests are revenue per visitor and conversion rate."""
    threshold = percent * (BUCKET_COUNT // 100)
    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as connection:
        plan = await _plan(
            connection, tenant_id=tenant_id, period=period, today=_today(datetime.now(UTC))
        )
        bitmaps = []
        if plan.aggregated:
            bitmaps = [
                row["users"]
                for row in await connection.fetch(
                    """SELECT users FROM analytics_daily_users WHERE tenant_id = $1
                       AND day = ANY($2::date[]) AND placement_id = '' AND strategy = ''""",
                    tenant_id,
                    sorted(plan.aggregated),
                )
            ]
        slices = plan.slices()
        raw_users: dict[str, tuple[int | None, int | None]] = {}
        for piece, pending in slices:
            for row in await connection.fetch(
                f"""SELECT n.user_id, u.idx, u.holdout_bucket AS bucket
                    FROM (SELECT DISTINCT user_id FROM {_source(pending, start="$2", end="$3")}
                          WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3) n
                    LEFT JOIN analytics_users u ON u.tenant_id = $1 AND u.user_id = n.user_id""",
                tenant_id,
                piece.start,
                piece.end,
            ):
                raw_users[row["user_id"]] = (row["idx"], row["bucket"])
        held = await connection.fetchval(
            """SELECT coalesce(array_agg(idx), '{}') FROM analytics_users
               WHERE tenant_id = $1 AND holdout_bucket < $2""",
            tenant_id,
            threshold,
        )
        unbucketed = await connection.fetch(
            """SELECT user_id, idx FROM analytics_users
               WHERE tenant_id = $1 AND holdout_bucket IS NULL""",
            tenant_id,
        )
        # Days aggregated before the buyer rollups existed are read from their raw purchases.
        rolled = sorted(day for day, row in plan.aggregated.items() if row["covers_pending"])
        packed = [
            np.frombuffer(row["buyers"], dtype=_BUYERS)
            for row in await connection.fetch(
                """SELECT buyers FROM analytics_packed
                   WHERE tenant_id = $1 AND day = ANY($2::date[])""",
                tenant_id,
                rolled,
            )
        ]
        purchase_slices = slices + [
            (Period(day_start(day), day_start(day + ONE_DAY)), False)
            for day, row in plan.aggregated.items()
            if not row["covers_pending"]
        ]
        loose: list[asyncpg.Record] = []
        for piece, pending in purchase_slices:
            loose.extend(
                await connection.fetch(
                    f"""SELECT u.idx, x.user_id, coalesce(u.holdout_bucket, -1) AS bucket, x.p,
                               (x.r * 10000)::bigint AS r
                        FROM (SELECT user_id, count(*) AS p, coalesce(sum(price), 0) AS r
                              FROM {_source(pending, start="$2", end="$3")}
                              WHERE tenant_id = $1 AND event_type = 'purchase'
                                AND occurred_at >= $2 AND occurred_at < $3
                              GROUP BY user_id) x
                        LEFT JOIN analytics_users u
                          ON u.tenant_id = $1 AND u.user_id = x.user_id""",
                    tenant_id,
                    piece.start,
                    piece.end,
                )
            )
    unbucketed_users = {row["idx"]: row["user_id"] for row in unbucketed}

    def held_out(user_id: str) -> bool:
        return holdout.in_holdout(tenant_id=tenant_id, user_id=user_id, percent=percent)

    held_numbers = np.asarray(
        list(held) + [idx for idx, user in unbucketed_users.items() if held_out(user)],
        dtype=np.int64,
    )
    # Users of the raw slices: those numbered join the bitmap set, the others count apart.
    extra = {True: 0, False: 0}
    raw_numbers = []
    for user, (idx, _) in raw_users.items():
        if idx is not None:
            raw_numbers.append(idx)
        else:
            extra[held_out(user)] += 1
    active = np.frombuffer(
        rules.bitmap_union([*bitmaps, rules.bitmap_of(raw_numbers)]), dtype=np.uint8
    )
    active_bits = np.unpackbits(active, bitorder="little").astype(bool)
    # Each buyer's purchases and revenue summed over the period by user number (the squares
    # are of these sums), then split by the user's side.
    numbered = np.array(
        [(r["idx"], r["bucket"], r["p"], r["r"]) for r in loose if r["idx"] is not None],
        dtype=_BUYERS,
    )
    parts = np.concatenate([*packed, numbered])
    parts = parts[np.argsort(parts["idx"], kind="stable")]
    starts = np.ones(parts.size, dtype=bool)
    starts[1:] = parts["idx"][1:] != parts["idx"][:-1]
    firsts = np.flatnonzero(starts)
    buyer_numbers = parts["idx"][firsts].astype(np.int64)
    purchases = np.add.reduceat(parts["p"], firsts) if parts.size else np.zeros(0, np.int64)
    revenue = np.add.reduceat(parts["r"], firsts) if parts.size else np.zeros(0, np.int64)
    size = max(active_bits.size, int(buyer_numbers.max()) + 1 if buyer_numbers.size else 0)
    held_mask = np.zeros(size, dtype=bool)
    held_mask[held_numbers[held_numbers < size]] = True
    users_held = int((active_bits & held_mask[: active_bits.size]).sum()) + extra[True]
    users_rest = int((active_bits & ~held_mask[: active_bits.size]).sum()) + extra[False]
    buyer_sides = held_mask[buyer_numbers]
    counts = {True: [0, 0, 0], False: [0, 0, 0]}  # buyers, purchases, purchases squared
    cents = {True: [0, 0], False: [0, 0]}  # revenue and its squares, in ten-thousandths
    for side in (True, False):
        chosen = buyer_sides if side else ~buyer_sides
        counts[side] = [
            int(chosen.sum()),
            int(purchases[chosen].sum()),
            int((purchases[chosen] ** 2).sum()),
        ]
        amounts = revenue[chosen].tolist()
        cents[side] = [sum(amounts), sum(amount * amount for amount in amounts)]
    # Buyers never numbered appear in the raw slices only, by id.
    unnumbered: dict[str, list[int]] = {}
    for row in loose:
        if row["idx"] is None:
            entry = unnumbered.setdefault(row["user_id"], [0, 0])
            entry[0] += int(row["p"])
            entry[1] += int(row["r"])
    for user, (bought, amount) in unnumbered.items():
        side = held_out(user)
        counts[side][0] += 1
        counts[side][1] += bought
        counts[side][2] += bought * bought
        cents[side][0] += amount
        cents[side][1] += amount * amount
    money = {
        side: [Decimal(total).scaleb(-4), Decimal(squares).scaleb(-8)]
        for side, (total, squares) in cents.items()
    }

    def arm(users: int, side: bool) -> VariantSums:
        return VariantSums(
            users=users,
            sum_impressions=0,
            sum_clicks=0,
            sum_impressions_sq=0,
            sum_clicks_sq=0,
            sum_impr_clicks=0,
            buyers=counts[side][0],
            sum_purchases=counts[side][1],
            sum_purchases_sq=counts[side][2],
            sum_revenue=money[side][0],
            sum_revenue_sq=money[side][1],
        )

    return arm(users_held, True), arm(users_rest, False)


async def _tenant_overview(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    period: Period,
    now: datetime,
    scope: Scope | None,
    today: _Today | None,
) -> dict[str, Any]:
    if scope is not None and scope.placement_id is None and scope.strategy is None:
        scope = None
    counted_figures = (
        None
        if today is None
        else rules.counter_figures(
            today.fields,
            placement_id=None if scope is None else scope.placement_id,
            strategy=None if scope is None else scope.strategy,
        )
    )
    counted = today.span if today is not None and counted_figures is not None else None
    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as connection:
        plan = await _plan(
            connection, tenant_id=tenant_id, period=period, today=_today(now), counted=counted
        )
        figures = await _aggregated_figures(connection, tenant_id=tenant_id, plan=plan, scope=scope)
        rules.add_figures(
            figures,
            await _raw_figures(connection, tenant_id=tenant_id, slices=plan.slices(), scope=scope),
        )
        if plan.counted is not None and counted_figures is not None:
            rules.add_figures(figures, counted_figures)
        conversions, attributed = await _attributed(
            connection, tenant_id=tenant_id, period=period, scope=scope
        )
        figures["attributed_revenue"] = attributed
        if scope is not None:
            figures["conversions"], figures["revenue"] = conversions, attributed
        users = await _distinct_users(connection, tenant_id=tenant_id, plan=plan, scope=scope)
        buyers = (
            await _distinct_users(connection, tenant_id=tenant_id, plan=plan, buyers=True)
            if scope is None
            else await _scoped_buyers(connection, tenant_id=tenant_id, period=period, scope=scope)
        )
    return rules.overview(figures, users, buyers=buyers)


async def owner_overview(
    pool: asyncpg.Pool, redis: Redis, *, owner_id: str, period: Period, now: datetime
) -> dict[str, Any]:
    """The overview summed over every tenant of the admin, with each tenant's own figures
    (user ids belong to one tenant, so active users add up across tenants)."""
    tenants = await pool.fetch(
        "SELECT id::text AS id, name FROM tenants WHERE owner_id = $1 AND deleted_at IS NULL "
        "ORDER BY created_at, id",
        owner_id,
    )
    # Every tenant's counters in one round trip.
    todays = await _read_today(
        redis, tenant_ids=[tenant["id"] for tenant in tenants], period=period, now=now
    )
    figures = rules.empty_figures()
    users = buyers = 0
    per_tenant = []
    for tenant, today in zip(tenants, todays, strict=True):
        found = await _tenant_overview(
            pool, tenant_id=tenant["id"], period=period, now=now, scope=None, today=today
        )
        per_tenant.append({"tenantId": tenant["id"], "name": tenant["name"], **found})
        rules.add_figures(
            figures,
            {
                "impressions": found["impressions"],
                "clicks": found["clicks"],
                "conversions": found["conversions"],
                "revenue": Decimal(str(found["revenue"])),
                "attributed_revenue": Decimal(str(found["attributedRevenue"])),
                "events": found["events"],
            },
        )
        users += found["activeUsers"]
        buyers += found["buyers"]
    return {**rules.overview(figures, users, buyers=buyers), "tenants": per_tenant}


async def _raw_buckets(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    piece: Period,
    interval: str,
) -> dict[datetime, dict[str, Any]]:
    unit = "day" if interval == "day" else "hour"
    rows = await connection.fetch(
        f"""SELECT date_trunc('{unit}', occurred_at AT TIME ZONE 'UTC') AS bucket, {_FIGURES},
                   count(DISTINCT user_id) AS active_users,
                   count(DISTINCT user_id) FILTER (WHERE event_type = 'purchase') AS buyers
            FROM live_events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
            GROUP BY 1""",
        tenant_id,
        piece.start,
        piece.end,
    )
    attributed = await connection.fetch(
        f"""SELECT date_trunc('{unit}', purchased_at AT TIME ZONE 'UTC') AS bucket,
                   sum(revenue) AS attributed_revenue
            FROM revenue_attributions
            WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3 GROUP BY 1""",
        tenant_id,
        piece.start,
        piece.end,
    )
    found: dict[datetime, dict[str, Any]] = {}
    for row in rows:
        key = max(row["bucket"].replace(tzinfo=UTC), piece.start)
        found[key] = {**dict(row), "attributed_revenue": 0}
    for row in attributed:
        key = max(row["bucket"].replace(tzinfo=UTC), piece.start)
        entry = found.setdefault(key, {**rules.empty_figures(), "active_users": 0, "buyers": 0})
        entry["attributed_revenue"] = row["attributed_revenue"]
    return found


async def _distinct_users_in(
    connection: asyncpg.Connection, *, tenant_id: str, piece: Period
) -> tuple[int, int]:
    """Distinct users and distinct buyers of the raw events in `piece`."""
    row = await connection.fetchrow(
        """SELECT count(DISTINCT user_id) AS users,
                  count(DISTINCT user_id) FILTER (WHERE event_type = 'purchase') AS buyers
           FROM live_events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3""",
        tenant_id,
        piece.start,
        piece.end,
    )
    return int(row["users"]), int(row["buyers"])


async def series(
    pool: asyncpg.Pool,
    redis: Redis,
    *,
    tenant_id: str,
    period: Period,
    interval: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """Every bucket of the period (days or hours, empty ones too) with all overview figures
    (active users distinct within each bucket) and its `start`. Hourly buckets are counted from
    the raw events: the real-time counters are per day."""
    today = None
    if interval == "day":
        today = (await _read_today(redis, tenant_ids=[tenant_id], period=period, now=now))[0]
    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as connection:
        if interval == "day":
            plan = await _plan(
                connection,
                tenant_id=tenant_id,
                period=period,
                today=_today(now),
                counted=None if today is None else today.span,
            )
        else:
            plan = _Plan(aggregated={}, raw=[period])
        buckets: dict[datetime, dict[str, Any]] = {}
        for day, row in plan.aggregated.items():
            buckets[day_start(day)] = dict(row)
        for piece in plan.pending:
            # The day's aggregate plus its pending events; users united with the day's bitmap.
            day = piece.start.date()
            one_day = _Plan(aggregated={day: plan.aggregated[day]}, raw=[], pending=[piece])
            figures: dict[str, Any] = rules.add_figures(
                {**rules.empty_figures(), **dict(plan.aggregated[day])},
                await _raw_figures(connection, tenant_id=tenant_id, slices=[(piece, True)]),
            )
            figures["active_users"] = await _distinct_users(
                connection, tenant_id=tenant_id, plan=one_day
            )
            figures["buyers"] = await _distinct_users(
                connection, tenant_id=tenant_id, plan=one_day, buyers=True
            )
            buckets[piece.start] = figures
        for piece in plan.raw:
            buckets.update(
                await _raw_buckets(connection, tenant_id=tenant_id, piece=piece, interval=interval)
            )
        if plan.counted is not None and today is not None:
            users, buyers = await _distinct_users_in(
                connection, tenant_id=tenant_id, piece=plan.counted
            )
            buckets[plan.counted.start] = {
                **(rules.counter_figures(today.fields) or {}),
                "active_users": users,
                "buyers": buyers,
            }
        if interval == "day":
            # Attributed revenue per day from the attributions themselves (see _attributed).
            for bucket in buckets.values():
                bucket["attributed_revenue"] = 0
            for row in await connection.fetch(
                """SELECT (purchased_at AT TIME ZONE 'UTC')::date AS day, sum(revenue) AS revenue
                   FROM revenue_attributions
                   WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
                   GROUP BY 1""",
                tenant_id,
                period.start,
                period.end,
            ):
                key = max(day_start(row["day"]), period.start)
                entry = buckets.setdefault(
                    key, {**rules.empty_figures(), "active_users": 0, "buyers": 0}
                )
                entry["attributed_revenue"] = row["revenue"]
    points = []
    for start in rules.bucket_starts(period, interval):
        figures = buckets.get(start) or {**rules.empty_figures(), "active_users": 0, "buyers": 0}
        points.append(
            {
                "start": start,
                **rules.overview(figures, figures["active_users"], buyers=figures["buyers"]),
            }
        )
    return points


async def top_products(
    pool: asyncpg.Pool,
    redis: Redis,
    *,
    tenant_id: str,
    period: Period,
    sort: str,
    limit: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The tenant's products ranked by `sort` (an API name from SORTS) over the period.

    Aggregated days come packed (one row a day, summed by product number in numpy); raw
    ranges, pending events and today's per-product counters are grouped by product id and
    added; attributed revenue per product comes from the attributions (see _attributed)."""
    column = SORTS[sort]
    today = (
        await _read_today(redis, tenant_ids=[tenant_id], period=period, now=now, products=True)
    )[0]
    by_product = None if today is None else rules.product_figures(today.products, today.fields)
    counted = today.span if today is not None and by_product is not None else None
    names = ("i", "c", "v", "r", "a")
    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as connection:
        plan = await _plan(
            connection, tenant_id=tenant_id, period=period, today=_today(now), counted=counted
        )
        packed = [
            np.frombuffer(row["figures"], dtype=_PACKED)
            for row in await connection.fetch(
                """SELECT products AS figures FROM analytics_packed
                   WHERE tenant_id = $1 AND day = ANY($2::date[])""",
                tenant_id,
                sorted(plan.aggregated),
            )
        ]
        # Figures keyed by product id outside the packed days, revenue in ten-thousandths.
        loose: dict[str, list[int]] = {}

        def add(product_id: str, figures: Sequence[Any]) -> None:
            entry = loose.setdefault(product_id, [0, 0, 0, 0, 0])
            for index, value in enumerate(figures):
                entry[index] += round(value)

        for piece, pending in plan.slices():
            for row in await connection.fetch(
                f"""SELECT product_id,
                       count(*) FILTER (WHERE event_type = 'recommendation_impressed') AS i,
                       count(*) FILTER (WHERE event_type = 'recommendation_clicked') AS c,
                       count(*) FILTER (WHERE event_type = 'purchase') AS v,
                       (coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)
                        * 10000)::bigint AS r
                    FROM {_source(pending, start="$2", end="$3")}
                    WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
                      AND event_type IN {_COUNTED_TYPES}
                    GROUP BY product_id""",
                tenant_id,
                piece.start,
                piece.end,
            ):
                add(row["product_id"], (row["i"], row["c"], row["v"], row["r"], 0))
        if plan.counted is not None and by_product is not None:
            for product_id, found in by_product.items():
                revenue = Decimal(str(found["revenue"])) * 10000
                add(
                    product_id,
                    (found["impressions"], found["clicks"], found["conversions"], revenue, 0),
                )
        attributed = {
            row["product_id"]: int(row["a"])
            for row in await connection.fetch(
                """SELECT product_id, (sum(revenue) * 10000)::bigint AS a
                   FROM revenue_attributions
                   WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
                   GROUP BY product_id""",
                tenant_id,
                period.start,
                period.end,
            )
        }
        numbers = dict(
            await connection.fetch(
                """SELECT product_id, idx FROM analytics_products
                   WHERE tenant_id = $1 AND product_id = ANY($2::text[])""",
                tenant_id,
                list(loose.keys() | attributed.keys()),
            )
        )
        # Every product by number: the packed days' sums, then the loose figures of numbered
        # products; products never numbered stay keyed by id.
        size = max(
            [int(part["idx"].max()) + 1 for part in packed if part.size]
            + [idx + 1 for idx in numbers.values()]
            + [0]
        )
        totals = {name: np.zeros(size, dtype=np.int64) for name in names}
        for part in packed:
            # A day's part holds each product once, so a fancy-indexed add is exact.
            for name in ("i", "c", "v", "r"):
                totals[name][part["idx"]] += part[name]
        unnumbered: dict[str, list[int]] = {}
        for product_id, figures in loose.items():
            if product_id in numbers:
                for name, value in zip(names, figures, strict=True):
                    totals[name][numbers[product_id]] += value
            else:
                unnumbered[product_id] = figures
        for product_id, value in attributed.items():
            if product_id in numbers:
                totals["a"][numbers[product_id]] += value
            else:
                unnumbered.setdefault(product_id, [0, 0, 0, 0, 0])[4] += value
        key = _PARTS_COLUMN[column]
        figure = totals[key]
        # Ranked on the sort figure, ties by product id: every product whose figure reaches
        # the limit-th largest is a candidate, named, then the first `limit` kept.
        positive = np.flatnonzero(figure > 0)
        if positive.size > limit:
            floor = np.partition(figure[positive], positive.size - limit)[positive.size - limit]
            positive = positive[figure[positive] >= floor]
        ids = dict(
            (row["idx"], row["product_id"])
            for row in await connection.fetch(
                """SELECT idx, product_id FROM analytics_products
                   WHERE tenant_id = $1 AND idx = ANY($2::integer[])""",
                tenant_id,
                positive.tolist(),
            )
        )
        candidates = [
            (ids[int(idx)], [int(totals[name][idx]) for name in names]) for idx in positive
        ] + [(product_id, f) for product_id, f in unnumbered.items() if f[names.index(key)] > 0]
        candidates.sort(key=lambda item: (-item[1][names.index(key)], item[0]))
        chosen = candidates[:limit]
        catalog = dict(
            await connection.fetch(
                """SELECT product_id, name FROM catalog_items
                   WHERE tenant_id = $1 AND product_id = ANY($2::text[])""",
                tenant_id,
                [product_id for product_id, _ in chosen],
            )
        )
    return [
        {
            "productId": product_id,
            "name": catalog.get(product_id),
            "impressions": i,
            "clicks": c,
            "ctr": rules.ratio(c, i),
            "conversions": v,
            "revenue": round(r / 10000, 4),
            "attributedRevenue": round(a / 10000, 4),
        }
        for product_id, (i, c, v, r, a) in chosen
    ]


def daily_chunks(period: Period, *, days: int = 31) -> list[Period]:
    """The period cut at UTC midnights into pieces of at most `days` days (export streaming)."""
    pieces = []
    cursor = period.start
    while cursor < period.end:
        boundary = day_start(cursor.date() + timedelta(days=days))
        pieces.append(Period(cursor, min(boundary, period.end)))
        cursor = pieces[-1].end
    return pieces


async def breakdown(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, period: Period, by: str, now: datetime
) -> list[dict[str, Any]]:
    """Per placement or strategy: recommendation impressions, clicks, CTR, and the purchases
    attributed to their clicks (conversions, attributedRevenue), most impressions first.

    Whole past days from the per-placement rows of analytics_daily, today from the
    `metric|placement|strategy` counters when they can stand for it, the rest from the raw
    events and attributions."""
    if by not in rules.BREAKDOWNS:
        raise ValueError(f"unknown breakdown {by!r}")
    today = (await _read_today(redis, tenant_ids=[tenant_id], period=period, now=now))[0]
    counted_rows = None if today is None else rules.counter_breakdown(today.fields, by=by)
    counted = today.span if today is not None and counted_rows is not None else None
    column = "placement_id" if by == "placement" else "strategy"
    event_key = _EVENT_PLACEMENT if by == "placement" else _EVENT_STRATEGY
    found: dict[str, dict[str, Any]] = {}

    def add(key: str, row: Any) -> None:
        entry = found.setdefault(
            key, {"impressions": 0, "clicks": 0, "conversions": 0, "revenue": Decimal(0)}
        )
        for name in ("impressions", "clicks", "conversions"):
            entry[name] += int(row.get(name) or 0)
        entry["revenue"] += Decimal(str(row.get("revenue") or 0))

    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as connection:
        plan = await _plan(
            connection, tenant_id=tenant_id, period=period, today=_today(now), counted=counted
        )
        if plan.aggregated:
            for row in await connection.fetch(
                f"""SELECT {column} AS key, sum(impressions) AS impressions, sum(clicks) AS clicks
                    FROM analytics_daily
                    WHERE tenant_id = $1 AND day = ANY($2::date[])
                      AND NOT (placement_id = '' AND strategy = '')
                    GROUP BY 1""",
                tenant_id,
                sorted(plan.aggregated),
            ):
                add(row["key"], row)
        for piece, pending in plan.slices():
            for row in await connection.fetch(
                f"""SELECT {event_key} AS key,
                           count(*) FILTER (WHERE event_type = 'recommendation_impressed')
                               AS impressions,
                           count(*) FILTER (WHERE event_type = 'recommendation_clicked')
                               AS clicks
                    FROM {_source(pending, start="$2", end="$3")}
                    WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
                      AND event_type IN {_RECOMMENDATION_TYPES}
                    GROUP BY 1""",
                tenant_id,
                piece.start,
                piece.end,
            ):
                add(row["key"], row)
        # Conversions and revenue from the attributions themselves (see _attributed).
        for row in await connection.fetch(
            f"""SELECT coalesce({column}, '') AS key, count(*) AS conversions,
                       sum(revenue) AS revenue
                FROM revenue_attributions
                WHERE tenant_id = $1 AND purchased_at >= $2 AND purchased_at < $3
                GROUP BY 1""",
            tenant_id,
            period.start,
            period.end,
        ):
            add(row["key"], row)
    if plan.counted is not None:
        for key, figures in (counted_rows or {}).items():
            add(key, {**figures, "conversions": 0, "revenue": 0})
    rows = [rules.breakdown_row(key, figures) for key, figures in found.items()]
    rows = [row for row in rows if row["impressions"] or row["clicks"] or row["conversions"]]
    return sorted(rows, key=lambda row: (-row["impressions"], -row["clicks"], row["key"]))


async def funnel(pool: asyncpg.Pool, *, tenant_id: str, period: Period) -> list[dict[str, Any]]:
    """Users of the period who viewed a product, then also clicked a recommendation, then also
    added to cart, then also bought (each step anywhere in the period, in any order): whole past
    days from the per-day step bitmaps, the rest from the raw events, united exactly."""
    columns = list(_STEP_COLUMNS)
    flags = ", ".join(
        f"bool_or(e.event_type = '{event_type}') AS {column}"
        for column, event_type in _STEP_COLUMNS.items()
    )
    types = ", ".join(f"'{event_type}'" for event_type in _STEP_COLUMNS.values())
    async with tenant_transaction(pool, tenant_id, isolation="repeatable_read") as connection:
        plan = await _plan(
            connection, tenant_id=tenant_id, period=period, today=_today(datetime.now(UTC))
        )
        stored = []
        if plan.aggregated:
            stored = await connection.fetch(
                f"""SELECT {", ".join(columns)} FROM analytics_daily_users
                    WHERE tenant_id = $1 AND day = ANY($2::date[])
                      AND placement_id = '' AND strategy = ''""",
                tenant_id,
                sorted(plan.aggregated),
            )
        raw: list[asyncpg.Record] = []
        for piece, pending in plan.slices():
            raw.extend(
                await connection.fetch(
                    f"""SELECT e.user_id, u.idx, {flags}
                        FROM {_source(pending, start="$2", end="$3", alias="e")}
                        LEFT JOIN analytics_users u
                          ON u.tenant_id = $1 AND u.user_id = e.user_id
                        WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
                          AND e.event_type IN ({types})
                        GROUP BY e.user_id, u.idx""",
                    tenant_id,
                    piece.start,
                    piece.end,
                )
            )
    numbered = [row for row in raw if row["idx"] is not None]
    steps = [
        rules.bitmap_union(
            [row[column] or b"" for row in stored]
            + [rules.bitmap_of([row["idx"] for row in numbered if row[column]])]
        )
        for column in columns
    ]
    # Users never numbered appear in the raw slices only; several slices may hold one of them.
    unnumbered: dict[str, list[bool]] = {}
    for row in raw:
        if row["idx"] is None:
            seen = unnumbered.setdefault(row["user_id"], [False] * len(columns))
            for index, column in enumerate(columns):
                seen[index] = seen[index] or bool(row[column])
    return rules.funnel(rules.nested_counts(steps, list(unnumbered.values())))
