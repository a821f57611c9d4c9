"""API keys in PostgreSQL: only HMACs are stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg


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


async def find_key_by_hash(pool: asyncpg.Pool, *, key_hash: bytes) -> KeyRecord | None:
    """The key with this HMAC and its tenant's state, or None."""
    row = await pool.fetchrow(
        """
        SELECT k.id, k.tenant_id, k.permission, k.revoked_at IS NOT NULL AS revoked,
               t.status, t.deleted_at IS NOT NULL AS deleted, t.config
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
    )


async def insert_api_key(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    name: str,
    permission: str,
    environment: str,
    prefix: str,
    key_hash: bytes,
) -> asyncpg.Record:
    """Store a new key's HMAC (the caller has checked the active-key limit)."""
    row = await pool.fetchrow(
        "INSERT INTO api_keys (tenant_id, name, permission, environment, prefix, key_hash) "
        "VALUES ($1, $2, $3, $4, $5, $6) "
        "RETURNING id, name, permission, environment, prefix, created_at",
        tenant_id,
        name,
        permission,
        environment,
        prefix,
        key_hash,
    )
    assert row is not None
    return row
