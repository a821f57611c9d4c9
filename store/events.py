"""Events in PostgreSQL: stored once (dedupe on insert), attributed, listed for the viewer,
partitioned; `ingest_and_project` also applies their projections (store.event_projections)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from domain import cursors
from domain.event_message import MessageEvent
from domain.events import ATTRIBUTION_WINDOW, Click, Purchase, attribute
from store import rollups
from store.db import all_tenants, in_tenant, tenant_transaction
from store.event_projections import (
    apply_guarded,
    attribution_effects,
    derived_digests,
    event_effects,
)

_ROW_COLUMNS = """
    event_id, event_type, user_id, product_id, occurred_at, price::float8 AS price, placement_id,
    metadata->>'strategy' AS strategy, metadata->>'experimentId' AS experiment_id,
    metadata->>'variant' AS variant, received_at, 'test' = ANY(flags) AS test
"""

_INSERT_EVENTS = f"""
INSERT INTO events (tenant_id, event_id, event_type, user_id, product_id, session_id, metadata,
                    placement_id, recommendation_id, price, flags, occurred_at)
SELECT $1, e.id, e.type, e.user_id, e.product_id, e.session_id, e.meta::jsonb, e.placement,
       e.rec, e.price::numeric,
       CASE WHEN e.flags = '' THEN '{{}}'::text[] ELSE string_to_array(e.flags, ',') END, e.ts
FROM unnest($2::ingest_event[]) AS e
ON CONFLICT DO NOTHING
RETURNING {_ROW_COLUMNS}
"""

# One index probe (tenant, product, time) per distinct purchased pair, within that pair's own
# window: a single time range over every pair would scan all of the tenant's recent events.
_CANDIDATE_CLICKS = """
SELECT c.event_id, c.user_id, c.product_id, c.occurred_at
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
     AS p(user_id, product_id, earliest, latest)
CROSS JOIN LATERAL (
    SELECT e.event_id, e.user_id, e.product_id, e.occurred_at
    FROM events e
    WHERE e.tenant_id = $1 AND e.product_id = p.product_id
      AND e.occurred_at BETWEEN p.earliest AND p.latest
      AND e.user_id = p.user_id AND e.event_type = 'recommendation_clicked'
      AND NOT EXISTS (SELECT 1 FROM revenue_attributions r
                      WHERE r.tenant_id = $1 AND r.click_event_id = e.event_id)
) c
"""

_INSERT_ATTRIBUTIONS = """
INSERT INTO revenue_attributions (tenant_id, user_id, product_id, click_event_id,
    purchase_event_id, revenue, clicked_at, purchased_at, placement_id, strategy,
    recommendation_id, experiment_id, variant)
SELECT $1, p.user_id, p.product_id, c.event_id, p.event_id, coalesce(p.price, 0),
       c.occurred_at, p.occurred_at, c.placement_id, c.metadata->>'strategy',
       c.recommendation_id,
       CASE WHEN c.metadata->>'experimentId' ~* '^[0-9a-f-]{36}$'
            THEN (c.metadata->>'experimentId')::uuid END,
       c.metadata->>'variant'
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS x(purchase_id,
     click_id, purchased_at, clicked_at)
JOIN events p ON p.tenant_id = $1 AND p.event_id = x.purchase_id AND p.occurred_at = x.purchased_at
JOIN events c ON c.tenant_id = $1 AND c.event_id = x.click_id AND c.occurred_at = x.clicked_at
ON CONFLICT DO NOTHING
RETURNING user_id, purchase_event_id, click_event_id, revenue::float8 AS revenue, purchased_at,
          placement_id, strategy, experiment_id::text AS experiment_id, variant
"""

# Adds per-user experiment counts, only for experiments of the tenant that run or are paused
# (events queued while it ran may land after a pause); a completed experiment stays frozen.
_COUNT_EXPERIMENT_USERS = """
INSERT INTO experiment_user_metrics (tenant_id, experiment_id, variant, user_id, impressions,
                                     clicks, purchases, revenue)
SELECT e.tenant_id, e.id, x.variant, x.user_id, x.impressions, x.clicks, x.purchases, x.revenue
FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::numeric[]) AS x(experiment_id, variant, user_id, impressions, clicks,
                               purchases, revenue)
JOIN experiments e ON e.tenant_id = $1 AND e.id::text = x.experiment_id
WHERE e.status IN ('running', 'paused') AND x.variant IN ('control', 'variant')
-- One lock order for every writer: two groups updating the same users cannot deadlock.
ORDER BY e.id, x.user_id
ON CONFLICT (experiment_id, user_id) DO UPDATE SET
    impressions = experiment_user_metrics.impressions + excluded.impressions,
    clicks = experiment_user_metrics.clicks + excluded.clicks,
    purchases = experiment_user_metrics.purchases + excluded.purchases,
    revenue = experiment_user_metrics.revenue + excluded.revenue
"""

_ATTRIBUTION_COLUMNS = """
    purchase_event_id, click_event_id, revenue::float8 AS revenue, purchased_at, placement_id,
    strategy, experiment_id::text AS experiment_id, variant
"""


@dataclass(frozen=True)
class IngestOutcome:
    """What one ingest call stored: rows whose side effects are due, and their attributions."""

    inserted: int
    rows: list[Mapping[str, Any]]
    attributions: list[dict[str, Any]]


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _rows(events: Sequence[MessageEvent]) -> list[tuple[Any, ...]]:
    """Message-form events as `ingest_event` rows."""
    return [
        (
            e["id"],
            e["type"],
            e["user"],
            e["product"],
            e.get("session"),
            _json(e["meta"]) if e.get("meta") else "{}",
            e.get("placement"),
            e.get("rec"),
            None if e.get("price") is None else repr(float(e["price"])),
            ",".join(e.get("flags") or ()),
            datetime.fromisoformat(e["ts"]),
        )
        for e in events
    ]


async def insert_events(
    pool: asyncpg.Pool, *, tenant_id: str, events: Sequence[MessageEvent]
) -> IngestOutcome:
    """Store message-form events once (dedupe key and client eventId) and attribute the new
    purchases, in one transaction. `rows` also holds this message's events stored earlier (a
    redelivery), so that side effects lost to a crash can still be applied; the Redis guard
    makes applying them twice harmless."""
    # One id once: the same event may come in two messages stored together, and two events
    # with one client eventId must not both pass its claim below.
    by_id: dict[str, MessageEvent] = {}
    for event in events:
        by_id.setdefault(event["id"], event)
    # In id order: concurrent groups holding some of the same events (a redelivery, a client's
    # retry) claim and insert them in one order, so that they wait for each other instead of
    # deadlocking (which cost a retry of each message alone).
    events = sorted(by_id.values(), key=lambda event: event["id"])
    async with tenant_transaction(pool, tenant_id) as connection:
        with_client_id = [e for e in events if e.get("client")]
        fresh = events
        if with_client_id:
            claimed = await connection.fetch(
                """INSERT INTO event_ids (tenant_id, event_id, occurred_at)
                   SELECT $1, i, t FROM unnest($2::text[], $3::timestamptz[]) AS x(i, t)
                   ON CONFLICT DO NOTHING RETURNING event_id""",
                tenant_id,
                [e["id"] for e in with_client_id],
                [datetime.fromisoformat(e["ts"]) for e in with_client_id],
            )
            new_ids = {r["event_id"] for r in claimed}
            fresh = [e for e in events if not e.get("client") or e["id"] in new_ids]
        # Records read like the dicts the side effects expect (row["x"], row.get("x")).
        inserted: list[Mapping[str, Any]] = (
            await connection.fetch(_INSERT_EVENTS, tenant_id, _rows(fresh)) if fresh else []
        )
        rows = list(inserted)
        missing = by_id.keys() - {r["event_id"] for r in inserted}
        if missing:
            stored = await connection.fetch(
                f"SELECT {_ROW_COLUMNS} FROM events WHERE tenant_id = $1 AND event_id = ANY($2)",
                tenant_id,
                sorted(missing),
            )
            rows.extend(stored)
        # Test keys' events are sandbox traffic: not in analytics, no attribution, no
        # experiment counts.
        live = [r for r in inserted if not r["test"]]
        await rollups.note_stored(connection, tenant_id=tenant_id, rows=live)
        purchases = [r for r in live if r["event_type"] == "purchase"]
        attributed = (
            await _attribute(connection, tenant_id=tenant_id, purchases=purchases)
            if purchases
            else []
        )
        await _count_for_experiments(
            connection, tenant_id=tenant_id, events=live, attributions=attributed
        )
    if missing:
        # A redelivery: attributions made by an earlier delivery may still need their effects.
        attributions = await _attributions_of(
            pool, tenant_id=tenant_id, rows=[r for r in rows if r["event_type"] == "purchase"]
        )
    else:
        # Every purchase is new, so its only attributions are the ones just made.
        attributions = [dict(r) for r in attributed]
    return IngestOutcome(inserted=len(inserted), rows=rows, attributions=attributions)


async def _count_for_experiments(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    events: Sequence[Mapping[str, Any]],
    attributions: Sequence[asyncpg.Record],
) -> None:
    """Per-user experiment counts of newly stored impressions and clicks, and of newly
    attributed purchases; in the transaction that stored them, so each counts once."""
    totals: dict[tuple[str, str], list[Any]] = {}

    def add(experiment_id: Any, variant: Any, user_id: str, column: int, amount: float) -> None:
        if experiment_id and variant:
            row = totals.setdefault((str(experiment_id), user_id), [str(variant), 0, 0, 0, 0.0])
            row[column] += amount

    for event in events:
        if event["event_type"] == "recommendation_impressed":
            add(event["experiment_id"], event["variant"], event["user_id"], 1, 1)
        elif event["event_type"] == "recommendation_clicked":
            add(event["experiment_id"], event["variant"], event["user_id"], 2, 1)
    for attribution in attributions:
        user = attribution["user_id"]
        add(attribution["experiment_id"], attribution["variant"], user, 3, 1)
        add(attribution["experiment_id"], attribution["variant"], user, 4, attribution["revenue"])
    if not totals:
        return
    (experiments, users), values = zip(*totals.keys(), strict=True), list(totals.values())
    await connection.execute(
        _COUNT_EXPERIMENT_USERS,
        tenant_id,
        list(experiments),
        [v[0] for v in values],
        list(users),
        [v[1] for v in values],
        [v[2] for v in values],
        [v[3] for v in values],
        [Decimal(str(v[4])) for v in values],
    )


async def _attribute(
    connection: asyncpg.Connection, *, tenant_id: str, purchases: Sequence[Mapping[str, Any]]
) -> list[asyncpg.Record]:
    """Attribute purchases to their last free click (the domain rule); returns the rows made."""
    windows: dict[tuple[str, str], list[datetime]] = {}
    for p in purchases:
        window = windows.setdefault((p["user_id"], p["product_id"]), [p["occurred_at"]] * 2)
        window[0] = min(window[0], p["occurred_at"])
        window[1] = max(window[1], p["occurred_at"])
    clicks = await connection.fetch(
        _CANDIDATE_CLICKS,
        tenant_id,
        [user for user, _ in windows],
        [product for _, product in windows],
        [first - ATTRIBUTION_WINDOW for first, _ in windows.values()],
        [last for _, last in windows.values()],
    )
    if not clicks:
        return []
    pairs = attribute(
        [
            Purchase(p["event_id"], p["user_id"], p["product_id"], p["occurred_at"])
            for p in purchases
        ],
        [Click(c["event_id"], c["user_id"], c["product_id"], c["occurred_at"]) for c in clicks],
    )
    if not pairs:
        return []
    return await connection.fetch(
        _INSERT_ATTRIBUTIONS,
        tenant_id,
        [p.event_id for p, _ in pairs],
        [c.event_id for _, c in pairs],
        [p.purchased_at for p, _ in pairs],
        [c.clicked_at for _, c in pairs],
    )


async def _attributions_of(
    pool: asyncpg.Pool, *, tenant_id: str, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    if not rows:
        return []
    found = await in_tenant(pool, tenant_id).fetch(
        f"""SELECT {_ATTRIBUTION_COLUMNS} FROM revenue_attributions
            WHERE tenant_id = $1 AND purchase_event_id = ANY($2)""",
        tenant_id,
        [r["event_id"] for r in rows],
    )
    return [dict(r) for r in found]


async def reconcile_attributions(
    pool: asyncpg.Pool, *, since: datetime, limit: int = 5000
) -> list[tuple[str, dict[str, Any]]]:
    """Attribute purchases since `since` that have a free click now (it arrived late); returns
    (tenant id, attribution) of every attribution made."""
    # Reconciliation spans tenants: it looks for every tenant's purchases still waiting.
    async with all_tenants(pool) as connection:
        waiting = await connection.fetch(
            f"""SELECT tenant_id::text AS tenant_id, {_ROW_COLUMNS} FROM events p
                WHERE p.event_type = 'purchase' AND p.occurred_at >= $1::timestamptz
                  AND 'test' <> ALL(p.flags)
                  AND NOT EXISTS (SELECT 1 FROM revenue_attributions r
                                  WHERE r.tenant_id = p.tenant_id
                                    AND r.purchase_event_id = p.event_id)
                  AND EXISTS (SELECT 1 FROM events c
                              WHERE c.tenant_id = p.tenant_id
                                AND c.event_type = 'recommendation_clicked'
                                AND c.user_id = p.user_id AND c.product_id = p.product_id
                                AND c.occurred_at
                                    BETWEEN p.occurred_at - $2::interval AND p.occurred_at)
                ORDER BY p.occurred_at LIMIT $3""",
            since,
            ATTRIBUTION_WINDOW,
            limit,
        )
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for row in waiting:
            by_tenant.setdefault(row["tenant_id"], []).append(dict(row))
        made: list[tuple[str, dict[str, Any]]] = []
        for tenant_id, purchases in by_tenant.items():
            attributed = await _attribute(connection, tenant_id=tenant_id, purchases=purchases)
            await _count_for_experiments(
                connection, tenant_id=tenant_id, events=[], attributions=attributed
            )
            if attributed:
                found = await connection.fetch(
                    f"""SELECT {_ATTRIBUTION_COLUMNS} FROM revenue_attributions
                        WHERE tenant_id = $1 AND purchase_event_id = ANY($2)""",
                    tenant_id,
                    [p["event_id"] for p in purchases],
                )
                made.extend((tenant_id, dict(r)) for r in found)
    return made


async def ingest_and_project(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, events: Sequence[MessageEvent]
) -> int:
    """Store message-form events once, then apply their projections at most once each; returns
    how many rows were new. Safe to repeat with the same events (redelivery, resumed import)."""
    outcome = await insert_events(pool, tenant_id=tenant_id, events=events)
    client_ids = {e["id"] for e in events if e.get("client")}
    effects = event_effects(
        tenant_id=tenant_id,
        rows=outcome.rows,
        client_ids=client_ids,
        digests=derived_digests(events),
    )
    effects += attribution_effects(tenant_id=tenant_id, attributions=outcome.attributions)
    await apply_guarded(redis, effects)
    return outcome.inserted


EVENTS_CURSOR = "events"


def encode_cursor(occurred_at: datetime, event_id: str) -> str:
    """An opaque cursor after one event of the newest-first listing (domain.cursors)."""
    return cursors.encode_cursor(EVENTS_CURSOR, occurred_at.isoformat(), event_id)


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The position a cursor points after, or None when it is not one of ours (the format
    before domain.cursors is still read: clients may hold one)."""
    found = cursors.decode_cursor(cursor, EVENTS_CURSOR, arity=2)
    try:
        if found is None:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            found = tuple(json.loads(raw))
        moment, event_id = found
        parsed = datetime.fromisoformat(moment)
    except (ValueError, TypeError):
        return None
    if parsed.tzinfo is None or not isinstance(event_id, str):
        return None
    return parsed, event_id


async def list_events(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    event_type: str | None = None,
    user_id: str | None = None,
    product_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The tenant's events matching the filters, newest first, after a cursor position."""
    conditions = ["tenant_id = $1"]
    params: list[Any] = [tenant_id]

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if event_type is not None:
        conditions.append(f"event_type = {bind(event_type)}")
    if user_id is not None:
        conditions.append(f"user_id = {bind(user_id)}")
    if product_id is not None:
        conditions.append(f"product_id = {bind(product_id)}")
    if since is not None:
        conditions.append(f"occurred_at >= {bind(since)}")
    if until is not None:
        conditions.append(f"occurred_at < {bind(until)}")
    if after is not None:
        conditions.append(f"(occurred_at, event_id) < ({bind(after[0])}, {bind(after[1])})")
    rows = await in_tenant(pool, tenant_id).fetch(
        f"""SELECT event_id, event_type, user_id, product_id, session_id, metadata, flags,
                   occurred_at, received_at
            FROM events WHERE {" AND ".join(conditions)}
            ORDER BY occurred_at DESC, event_id DESC LIMIT {bind(limit)}""",
        *params,
    )
    return [dict(r) for r in rows]


async def ensure_partitions(pool: asyncpg.Pool, *, first_month: datetime, months: int) -> int:
    """Create the monthly events partitions from `first_month` on; returns how many were new."""
    created = await pool.fetchval(
        "SELECT ensure_event_partitions(date_trunc('month', $1::timestamptz)::date, $2)",
        first_month,
        months,
    )
    return int(created or 0)
