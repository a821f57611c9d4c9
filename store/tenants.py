"""Tenants in PostgreSQL; every read is scoped to the owning admin."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def create_tenant(
    pool: asyncpg.Pool, *, owner_id: str, name: str, config: dict[str, Any] | None = None
) -> asyncpg.Record:
    """A new active tenant owned by `owner_id`."""
    row = await pool.fetchrow(
        "INSERT INTO tenants (owner_id, name, config) VALUES ($1, $2, $3) "
        "RETURNING id, owner_id, name, status, config, created_at",
        owner_id,
        name,
        config or {},
    )
    assert row is not None
    return row


async def get_tenant_for_owner(
    pool: asyncpg.Pool, *, owner_id: str, tenant_id: str
) -> asyncpg.Record | None:
    """The tenant if it exists, is not deleted and belongs to `owner_id`; else None."""
    try:
        tenant_uuid = uuid.UUID(tenant_id)
    except ValueError:
        return None
    return await pool.fetchrow(
        "SELECT id, owner_id, name, status, config, created_at, updated_at FROM tenants "
        "WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
        tenant_uuid,
        owner_id,
    )
