"""API keys in PostgreSQL: only HMACs are stored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import apikeys
from store import keys
from store.db import all_tenants, tenant_transaction


@dataclass(frozen=True)
class KeyRecord:
    """What authenticating a request with an API key needs to know."""

    key_id: str
    tenant_id: str
    permission: str
    revoked: bool
    tenant_status: str
    tenant_deleted: bool
    tenant_config: dict[str, Any]
    # Derives the tenant's storefront user-token secret (None until an admin makes one).
    user_token_nonce: str | None = None
    environment: str = "live"  # "test" for an rk_test_ key: Sandbox limits, test events
    tenant_plan: str = "sandbox"


async def find_key_by_hash(pool: asyncpg.Pool, *, key_hash: bytes) -> KeyRecord | None:
    """The key with this HMAC and its tenant's state, or None."""
    # A key names its tenant only once it is found: the look-up spans tenants by nature.
    async with all_tenants(pool) as connection:
        row = await connection.fetchrow(
            """
            SELECT k.id, k.tenant_id, k.permission, k.revoked_at IS NOT NULL AS revoked,
                   t.status, t.deleted_at IS NOT NULL AS deleted, t.config, t.user_token_nonce,
                   k.environment, t.plan
            FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
            WHERE k.key_hash = $1
            """,
            key_hash,
        )
    if row is None:
        return None
    return KeyRecord(
        key_id=str(row["id"]),
        tenant_id=str(row["tenant_id"]),
        permission=row["permission"],
        revoked=row["revoked"],
        tenant_status=row["status"],
        tenant_deleted=row["deleted"],
        tenant_config=row["config"] or {},
        user_token_nonce=row["user_token_nonce"],
        environment=row["environment"],
        tenant_plan=row["plan"],
    )


class TooManyKeys(Exception):
    """The tenant already has the maximum number of active keys."""


_KEY_COLUMNS = "id, name, permission, environment, prefix, created_at, last_used_at, revoked_at"


async def create_api_key(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    name: str,
    permission: str,
    environment: str,
    prefix: str,
    key_hash: bytes,
    max_active: int,
) -> asyncpg.Record:
    """Store a new key's HMAC unless the tenant already has `max_active` active keys.

    The tenant row is locked FOR UPDATE first, so concurrent creations for one tenant queue up
    and the count they check cannot be overtaken by another insert (TooManyKeys otherwise).
    """
    async with tenant_transaction(pool, tenant_id) as connection:
        await connection.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
        active = await connection.fetchval(
            "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL", tenant_id
        )
        if int(active) >= max_active:
            raise TooManyKeys(f"at most {max_active} active keys per tenant")
        row = await connection.fetchrow(
            "INSERT INTO api_keys (tenant_id, name, permission, environment, prefix, key_hash) "
            "VALUES ($1, $2, $3, $4, $5, $6) "
            f"RETURNING {_KEY_COLUMNS}",
            tenant_id,
            name,
            permission,
            environment,
            prefix,
            key_hash,
        )
    assert row is not None
    return row


def _parse_time(value: bytes | str | None) -> datetime | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def list_api_keys(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str
) -> list[dict[str, Any]]:
    """The tenant's keys, newest first, with last-used times merged from Redis (never the HMAC).

    Requests mark keys used in a Redis hash (flushed to PostgreSQL by a job), so the later of
    the two is the current time without a database write per request.
    """
    async with tenant_transaction(pool, tenant_id) as connection:
        rows = await connection.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 "
            "ORDER BY created_at DESC, id",
            tenant_id,
        )
    try:
        recent = await redis.hgetall(keys.api_key_last_used(tenant_id))
    except (RedisError, OSError):
        recent = {}  # the column alone is a little older, never wrong
    marks = {(k.decode() if isinstance(k, bytes) else k): _parse_time(v) for k, v in recent.items()}
    found = []
    for row in rows:
        item = dict(row)
        mark = marks.get(str(row["id"]))
        if mark is not None and (item["last_used_at"] is None or mark > item["last_used_at"]):
            item["last_used_at"] = mark
        found.append(item)
    return found


async def revoke_api_key(pool: asyncpg.Pool, *, tenant_id: str, key_id: str) -> bool:
    """Revoke the tenant's key (idempotent for a revoked one); False when it is not the tenant's."""
    try:
        key_uuid = uuid.UUID(key_id)
    except ValueError:
        return False
    async with tenant_transaction(pool, tenant_id) as connection:
        found = await connection.fetchval(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE id = $1 AND tenant_id = $2 RETURNING id",
            key_uuid,
            tenant_id,
        )
    return found is not None


# Remove the fields that were flushed unless a request marked them again meanwhile, and drop the
# tenant from the index once its hash is empty; atomic, so no mark is ever lost.
# KEYS: the last-used hash, the index of tenants; ARGV: tenant id, then field, value pairs.
_FORGET_FLUSHED = """
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
end
return redis.call('HLEN', KEYS[1])
"""


async def flush_last_used(pool: asyncpg.Pool, redis: Redis) -> int:
    """Write the last-used times marked in Redis to api_keys.last_used_at; the rows updated."""
    updated = 0
    forget = redis.register_script(_FORGET_FLUSHED)
    for member in await redis.smembers(keys.API_KEY_LAST_USED_TENANTS):
        tenant_id = member.decode() if isinstance(member, bytes) else member
        try:
            tenant_uuid = uuid.UUID(tenant_id)
        except ValueError:
            await redis.srem(keys.API_KEY_LAST_USED_TENANTS, member)
            continue
        hash_key = keys.api_key_last_used(tenant_id)
        marks = await redis.hgetall(hash_key)
        pairs: list[tuple[uuid.UUID, datetime]] = []
        for field, value in marks.items():
            when = _parse_time(value)
            try:
                key_uuid = uuid.UUID(field.decode() if isinstance(field, bytes) else field)
            except ValueError:
                continue
            if when is not None:
                pairs.append((key_uuid, when))
        if pairs:
            # GREATEST keeps the column monotonic when an older mark is flushed twice.
            async with tenant_transaction(pool, tenant_uuid) as connection:
                result = await connection.execute(
                    """
                    UPDATE api_keys k
                    SET last_used_at = GREATEST(k.last_used_at, m.used_at)
                    FROM unnest($2::uuid[], $3::timestamptz[]) AS m(id, used_at)
                    WHERE k.id = m.id AND k.tenant_id = $1
                      AND (k.last_used_at IS NULL OR k.last_used_at < m.used_at)
                    """,
                    tenant_uuid,
                    [p[0] for p in pairs],
                    [p[1] for p in pairs],
                )
            updated += int(result.split()[-1])
        flat: list[bytes | str] = [tenant_id]
        for field, value in marks.items():
            flat.extend([field, value])
        await forget(keys=[hash_key, keys.API_KEY_LAST_USED_TENANTS], args=flat)
    return updated


async def issue_api_key(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    name: str,
    permission: str,
    environment: str,
    secret: str,
) -> tuple[asyncpg.Record, str]:
    """A new random key for the tenant, stored as its HMAC: the row and the key (shown once)."""
    key = apikeys.generate_key(environment=environment)
    row = await create_api_key(
        pool,
        tenant_id=tenant_id,
        name=name,
        permission=permission,
        environment=environment,
        prefix=key.display_prefix,
        key_hash=apikeys.hash_key(key.raw, secret=secret),
        max_active=apikeys.MAX_ACTIVE_KEYS,
    )
    return row, key.raw
