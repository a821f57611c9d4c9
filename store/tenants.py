"""Tenants in PostgreSQL; every read is scoped to the owning admin."""

from __future__ import annotations

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
