"""Storefront adapters: allowed origins of all tenants, user-token nonces, the experiments a
recommendation event may name, and merging an anonymous shopper into a known one."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
from redis.asyncio import Redis

from store import keys
from store.db import tenant_transaction
from store.history import HISTORY_LENGTH, HISTORY_TTL_SECONDS, USER_STAMP_TTL_SECONDS

VARIANT_MISMATCHES = f"{keys.PREFIX}:storefront:variant-mismatches"  # HASH tenant id -> count


async def all_allowed_origins(pool: asyncpg.Pool) -> list[str]:
    """Every origin some active tenant allows (a preflight names no tenant)."""
    rows = await pool.fetch(
        "SELECT DISTINCT jsonb_array_elements_text(config->'allowedOrigins') AS origin "
        "FROM tenants WHERE deleted_at IS NULL AND status = 'active' "
        "AND jsonb_typeof(config->'allowedOrigins') = 'array'"
    )
    return [row["origin"] for row in rows]


async def rotate_user_token_nonce(pool: asyncpg.Pool, *, tenant_id: str) -> str:
    """Replace the tenant's user-token nonce (old tokens stop working); the new nonce."""
    nonce = secrets.token_hex(16)
    await pool.execute(
        "UPDATE tenants SET user_token_nonce = $2, updated_at = now() WHERE id = $1",
        tenant_id,
        nonce,
    )
    return nonce


async def experiment_split(
    pool: asyncpg.Pool, *, tenant_id: str, experiment_id: str
) -> dict[str, Any] | None:
    """{experimentId, trafficSplit} of a started experiment of the tenant, or None."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT id::text AS id, traffic_split FROM experiments "
            "WHERE tenant_id = $1 AND id::text = $2 AND status <> 'draft'",
            tenant_id,
            experiment_id,
        )
    if row is None:
        return None
    return {"experimentId": row["id"], "trafficSplit": int(row["traffic_split"])}


async def count_variant_mismatches(redis: Redis, *, tenant_id: str, count: int) -> None:
    """Count client-sent variants that disagreed with the server's (a Prometheus counter)."""
    await redis.hincrby(VARIANT_MISMATCHES, tenant_id, count)


async def variant_mismatches(redis: Redis) -> dict[str, int]:
    """Disagreeing client variants per tenant since Redis began counting."""
    raw = await redis.hgetall(VARIANT_MISMATCHES)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


_MERGE_EVENTS = """
WITH moved AS (
    UPDATE events e SET user_id = $3
    WHERE e.tenant_id = $1 AND e.user_id = $2
      AND NOT EXISTS (
          SELECT 1 FROM events d
          WHERE d.tenant_id = $1 AND d.user_id = $3 AND d.event_type = e.event_type
            AND d.product_id = e.product_id AND d.occurred_at = e.occurred_at)
    RETURNING 1
)
SELECT count(*) FROM moved
"""

# ZUNIONSTORE with MAX keeps the newest time per (type, product); then the usual trim and TTL.
_MERGE_REDIS = """
redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[1], KEYS[2], 'AGGREGATE', 'MAX')
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[1]) - 1)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
redis.call('SUNIONSTORE', KEYS[4], KEYS[3], KEYS[4])
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('EXPIRE', KEYS[4], ARGV[2]) end
redis.call('DEL', KEYS[1], KEYS[3])
for i = 5, 6 do
  redis.call('HINCRBY', KEYS[i], 'n', 1)
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
"""


async def merge_users(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, from_user_id: str, to_user_id: str
) -> int:
    """Move the anonymous user's events, attributions and projections to the known user; how
    many events moved. Idempotent: a repeat finds nothing left to move."""
    async with tenant_transaction(pool, tenant_id) as conn:
        moved = int(await conn.fetchval(_MERGE_EVENTS, tenant_id, from_user_id, to_user_id))
        # What could not move repeats an event the user already has: it goes.
        await conn.execute(
            "DELETE FROM events WHERE tenant_id = $1 AND user_id = $2", tenant_id, from_user_id
        )
        await conn.execute(
            "UPDATE revenue_attributions SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            from_user_id,
            to_user_id,
        )
    await redis.eval(
        _MERGE_REDIS,
        6,
        keys.user_history(tenant_id, from_user_id),
        keys.user_history(tenant_id, to_user_id),
        keys.user_purchased(tenant_id, from_user_id),
        keys.user_purchased(tenant_id, to_user_id),
        keys.user_stamp(tenant_id, from_user_id),
        keys.user_stamp(tenant_id, to_user_id),
        str(HISTORY_LENGTH),
        str(HISTORY_TTL_SECONDS),
        str(USER_STAMP_TTL_SECONDS),
    )
    if moved:
        await redis.sadd(keys.touched_users(tenant_id), to_user_id)
    return moved
