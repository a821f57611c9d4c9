"""Tenants in PostgreSQL; every read is scoped to the owning admin."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from domain import apikeys
from domain import usage as usage_rules
from store import keys
from store.db import in_tenant, tenant_transaction


class TooManyTenants(Exception):
    """The admin already holds as many tenants as their plans allow."""

    def __init__(self, allowed: int) -> None:
        super().__init__(f"{allowed} tenants allowed")
        self.allowed = allowed


async def create_tenant(
    pool: asyncpg.Pool,
    *,
    owner_id: str,
    name: str,
    config: dict[str, Any] | None = None,
    within_plans: bool = False,
) -> asyncpg.Record:
    """A new active tenant owned by `owner_id`; `within_plans`: unless the admin already holds
    as many tenants as the plans of their tenants allow (TooManyTenants)."""
    async with pool.acquire() as connection, connection.transaction():
        if within_plans:
            # The admin row is locked first, so two creations at once cannot both pass.
            await connection.execute("SELECT 1 FROM admins WHERE id = $1 FOR UPDATE", owner_id)
            plans = [
                row["plan"]
                for row in await connection.fetch(
                    "SELECT plan FROM tenants WHERE owner_id = $1 AND deleted_at IS NULL",
                    owner_id,
                )
            ]
            allowed = usage_rules.tenants_allowed(plans)
            if allowed is not None and len(plans) >= allowed:
                raise TooManyTenants(allowed)
        row = await connection.fetchrow(
            "INSERT INTO tenants (owner_id, name, config) VALUES ($1, $2, $3) "
            "RETURNING id, owner_id, name, status, config, created_at, plan",
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
        "SELECT id, owner_id, name, status, config, created_at, updated_at, plan FROM tenants "
        "WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
        tenant_uuid,
        owner_id,
    )


_TENANT_COLUMNS = "id, owner_id, name, status, config, created_at, updated_at, plan"


async def get_tenant_by_id(pool: asyncpg.Pool, *, tenant_id: str) -> asyncpg.Record | None:
    """The tenant if it exists and is not deleted (for a caller already scoped to it: an API
    key of this tenant, or an operator); else None."""
    tenant_uuid = _uuid(tenant_id)
    if tenant_uuid is None:
        return None
    return await pool.fetchrow(
        f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = $1 AND deleted_at IS NULL",
        tenant_uuid,
    )


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


async def list_tenants_for_owner(pool: asyncpg.Pool, *, owner_id: str) -> list[asyncpg.Record]:
    """The owner's tenants that are not deleted, oldest first."""
    return list(
        await pool.fetch(
            f"SELECT {_TENANT_COLUMNS} FROM tenants "
            "WHERE owner_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
            owner_id,
        )
    )


async def list_all_tenants(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every tenant that is not deleted, oldest first (the operators' view, across owners)."""
    return list(
        await pool.fetch(
            f"SELECT {_TENANT_COLUMNS} FROM tenants "
            "WHERE deleted_at IS NULL ORDER BY created_at, id"
        )
    )


async def tenant_usage(pool: asyncpg.Pool, *, tenant_id: str) -> dict[str, int]:
    """Cheap counts of what the tenant holds: keys, catalog, this month's events, and more."""
    row = await in_tenant(pool, tenant_id).fetchrow(
        """
        SELECT
          (SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL)
            AS api_keys,
          (SELECT count(*) FROM catalog_items WHERE tenant_id = $1) AS catalog_items,
          (SELECT count(*) FROM events
             WHERE tenant_id = $1 AND occurred_at >= date_trunc('month', now()))
            AS events_this_month,
          (SELECT count(*) FROM experiments WHERE tenant_id = $1 AND status = 'running')
            AS running_experiments,
          (SELECT count(*) FROM widget_configs WHERE tenant_id = $1) AS widgets
        """,
        _uuid(tenant_id),
    )
    assert row is not None
    return {
        "apiKeys": int(row["api_keys"]),
        "maxApiKeys": apikeys.MAX_ACTIVE_KEYS,
        "catalogItems": int(row["catalog_items"]),
        "eventsThisMonth": int(row["events_this_month"]),
        "runningExperiments": int(row["running_experiments"]),
        "widgets": int(row["widgets"]),
    }


async def update_tenant(
    pool: asyncpg.Pool,
    *,
    owner_id: str,
    tenant_id: str,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    status: str | None = None,
) -> asyncpg.Record | None:
    """Change the owner's tenant (only the given fields); None when it is not the owner's."""
    tenant_uuid = _uuid(tenant_id)
    if tenant_uuid is None:
        return None
    return await pool.fetchrow(
        f"""
        UPDATE tenants SET
          name = coalesce($3, name),
          config = coalesce($4, config),
          status = coalesce($5, status),
          updated_at = now()
        WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL
        RETURNING {_TENANT_COLUMNS}
        """,
        tenant_uuid,
        owner_id,
        name,
        config,
        status,
    )


async def soft_delete_tenant(pool: asyncpg.Pool, *, owner_id: str, tenant_id: str) -> str | None:
    """Mark the owner's tenant deleted (data kept until the purge); its id, or None."""
    tenant_uuid = _uuid(tenant_id)
    if tenant_uuid is None:
        return None
    deleted = await pool.fetchval(
        "UPDATE tenants SET deleted_at = now(), updated_at = now() "
        "WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL RETURNING id",
        tenant_uuid,
        owner_id,
    )
    return str(deleted) if deleted is not None else None


async def bump_auth_epoch(redis: Redis, *, tenant_id: str) -> int:
    """Tell every api worker that the tenant's keys or status changed (after the commit)."""
    return int(await redis.incr(keys.auth_epoch(tenant_id)))


async def tenants_deleted_before(pool: asyncpg.Pool, *, cutoff: datetime) -> list[str]:
    """Ids of tenants soft-deleted before `cutoff`."""
    rows = await pool.fetch(
        "SELECT id FROM tenants WHERE deleted_at IS NOT NULL AND deleted_at < $1 ORDER BY id",
        cutoff,
    )
    return [str(row["id"]) for row in rows]


async def _tenant_tables(connection: asyncpg.Connection) -> list[str]:
    """Every table (not partition) with a tenant_id column, so later tables are purged too."""
    rows = await connection.fetch(
        """
        SELECT c.relname
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attname = 'tenant_id' AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname = current_schema()
        ORDER BY c.relname
        """
    )
    return [row["relname"] for row in rows]


async def purge_tenant_rows(pool: asyncpg.Pool, *, tenant_id: str) -> bool:
    """Delete a soft-deleted tenant and its rows in every table, in one transaction.

    Returns False (and deletes nothing) when the tenant is gone already or is not deleted.
    """
    tenant_uuid = _uuid(tenant_id)
    if tenant_uuid is None:
        return False
    async with tenant_transaction(pool, tenant_id) as connection:
        locked = await connection.fetchval(
            "SELECT id FROM tenants WHERE id = $1 AND deleted_at IS NOT NULL FOR UPDATE",
            tenant_uuid,
        )
        if locked is None:
            return False
        for table in await _tenant_tables(connection):
            quoted = '"' + table.replace('"', '""') + '"'
            await connection.execute(
                f"DELETE FROM {quoted} WHERE tenant_id = $1",
                tenant_uuid,
            )
        await connection.execute("DELETE FROM tenants WHERE id = $1", tenant_uuid)
    return True


async def purge_tenant_redis_keys(redis: Redis, *, tenant_id: str, batch: int = 500) -> int:
    """Delete every Redis key of the tenant (`reco:{tenantId}:*`) by SCAN; the count deleted."""
    deleted = 0
    pending: list[bytes | str] = []
    async for key in redis.scan_iter(match=f"{keys.PREFIX}:{tenant_id}:*", count=batch):
        pending.append(key)
        if len(pending) >= batch:
            deleted += int(await redis.unlink(*pending))
            pending = []
    if pending:
        deleted += int(await redis.unlink(*pending))
    await redis.srem(keys.API_KEY_LAST_USED_TENANTS, tenant_id)
    return deleted
