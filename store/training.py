"""What a training run reads from PostgreSQL (a tenant's recent events and its catalog), and
the record of its runs in Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from domain.interactions import EVENT_WEIGHTS
from domain.training import EventColumns
from store import keys
from store.db import tenant_transaction

HISTORY_DAYS = 365


async def load_events(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    days: int = HISTORY_DAYS,
    include_test: bool = False,
) -> EventColumns:
    """The tenant's weighted events of the last `days` days, oldest first; test keys' events
    (flagged `test`) only when `include_test`."""
    async with tenant_transaction(pool, tenant_id) as connection:
        rows = await connection.fetch(
            """
        SELECT user_id, product_id, event_type, extract(epoch FROM occurred_at)::float8 AS ts,
               session_id
        FROM events
        WHERE tenant_id = $1 AND occurred_at >= now() - make_interval(days => $2)
          AND event_type = ANY($3::text[]) AND ($4 OR 'test' <> ALL(flags))
        ORDER BY occurred_at
        """,
            tenant_id,
            days,
            [name for name, weight in EVENT_WEIGHTS.items() if weight != 0],
            include_test,
        )
    return EventColumns(
        user_ids=[r["user_id"] for r in rows],
        product_ids=[r["product_id"] for r in rows],
        event_types=[r["event_type"] for r in rows],
        timestamps=[r["ts"] for r in rows],
        session_ids=[r["session_id"] for r in rows],
    )


async def load_catalog(pool: asyncpg.Pool, *, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's catalog items in the shape the content model reads."""
    async with tenant_transaction(pool, tenant_id) as connection:
        rows = await connection.fetch(
            "SELECT product_id, name, category, description, price, attributes, available "
            "FROM catalog_items WHERE tenant_id = $1 ORDER BY product_id",
            tenant_id,
        )
    return [
        {
            "productId": r["product_id"],
            "name": r["name"],
            "category": r["category"],
            "description": r["description"] or "",
            "price": float(r["price"]),
            "attributes": r["attributes"] or {},
            "available": r["available"],
        }
        for r in rows
    ]


async def active_tenant_ids(pool: asyncpg.Pool) -> list[str]:
    """Tenants that are active and not deleted (the ones worth retraining)."""
    rows = await pool.fetch(
        "SELECT id FROM tenants WHERE status = 'active' AND deleted_at IS NULL ORDER BY id"
    )
    return [str(r["id"]) for r in rows]


async def load_tenant_config(pool: asyncpg.Pool, *, tenant_id: str) -> dict[str, Any]:
    """The tenant's stored config (empty for an unknown tenant)."""
    raw = await pool.fetchval("SELECT config FROM tenants WHERE id::text = $1", tenant_id)
    if isinstance(raw, str):
        raw = json.loads(raw)
    return dict(raw or {})


async def load_user_weights(
    pool: asyncpg.Pool, *, tenant_id: str, user_ids: list[str], days: int = HISTORY_DAYS
) -> dict[str, dict[str, float]]:
    """Summed event weight per product of each given user, floored at 0."""
    timed = await load_user_histories(pool, tenant_id=tenant_id, user_ids=user_ids, days=days)
    return {user: {p: w for p, (w, _) in products.items()} for user, products in timed.items()}


async def load_user_histories(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    user_ids: list[str],
    days: int = HISTORY_DAYS,
    include_test: bool = False,
) -> dict[str, dict[str, tuple[float, float]]]:
    """(summed event weight, last event unix time) per product of each given user, weights
    floored at 0 (those products left out); test keys' events only when `include_test`."""
    async with tenant_transaction(pool, tenant_id) as connection:
        rows = await connection.fetch(
            """
        SELECT user_id, product_id, event_type, count(*) AS n,
               extract(epoch FROM max(occurred_at))::float8 AS last_at
        FROM events
        WHERE tenant_id = $1 AND user_id = ANY($2::text[])
          AND occurred_at >= now() - make_interval(days => $3) AND ($4 OR 'test' <> ALL(flags))
        GROUP BY user_id, product_id, event_type
        """,
            tenant_id,
            user_ids,
            days,
            include_test,
        )
    weights: dict[str, dict[str, tuple[float, float]]] = {user: {} for user in user_ids}
    for row in rows:
        per_user = weights[row["user_id"]]
        product = row["product_id"]
        weight, last = per_user.get(product, (0.0, 0.0))
        per_user[product] = (
            weight + EVENT_WEIGHTS.get(row["event_type"], 0.0) * int(row["n"]),
            max(last, float(row["last_at"])),
        )
    return {
        user: {p: wt for p, wt in products.items() if wt[0] > 0}
        for user, products in weights.items()
    }


async def record_training_run(
    redis: Redis,
    *,
    tenant_id: str,
    kind: str,
    seconds: float,
    error: str | None = None,
    gate: dict[str, Any] | None = None,
) -> None:
    """Note a finished (`error` None) or failed retrain of `kind` full|incremental, with the
    publish gate's decision when it took one (a rejection is counted as such)."""
    runs = keys.training_runs(tenant_id)
    now = datetime.now(UTC).isoformat()
    if error is None:
        mapping: dict[Any, Any] = {f"{kind}At": now, f"{kind}Seconds": round(seconds, 3)}
        async with redis.pipeline(transaction=True) as pipe:
            if gate is not None:
                mapping["lastGate"] = json.dumps({**gate, "kind": kind, "at": now})
                if not gate.get("passed", True):
                    mapping["lastRejectedAt"] = now
                    pipe.hincrby(runs, "rejections", 1)
            pipe.hset(runs, mapping=mapping)
            await pipe.execute()
    else:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(runs, "failures", 1)
            pipe.hset(runs, mapping={"lastFailureAt": now, "lastError": error[:300]})
            await pipe.execute()


async def read_training_runs(redis: Redis, *, tenant_id: str) -> dict[str, str]:
    """What record_training_run noted for the tenant."""
    raw = await redis.hgetall(keys.training_runs(tenant_id))
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
