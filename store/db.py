"""PostgreSQL connection pools (asyncpg), built in start-up hooks, and the tenant scope that
row-level security reads (migrations/versions/0016_row_level_security.py)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncpg

from store.settings import Settings

# The transaction-local settings the row-level security policies read.
TENANT_SETTING = "app.tenant_id"
ALL_TENANTS_SETTING = "app.all_tenants"
# Matches no tenant: what a transaction is scoped to when asked for an id that is not a UUID
# (ids from URLs are compared as text in places), so it sees nothing rather than failing.
_NO_TENANT = "00000000-0000-0000-0000-000000000000"

Isolation = Literal["serializable", "repeatable_read", "read_committed", "read_uncommitted"]


# A database host that goes silent (a cut link, a crashed machine) must end the connection in
# seconds: a query whose answer was lost would otherwise wait for its command timeout while the
# rows it locked hold up other workers. asyncpg has no keepalive option, so the socket gets it.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_PROBES = 3
UNACKNOWLEDGED_WRITE_MS = 30_000


def _keep_alive(connection: asyncpg.Connection) -> None:
    """Turn on TCP keepalive (and a timeout for unacknowledged writes) on a TCP connection."""
    transport = connection._transport  # asyncpg exposes no other way to reach the socket
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket has no peer to lose
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_SECONDS),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", UNACKNOWLEDGED_WRITE_MS),
    ):
        if hasattr(socket, option):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _init_connection(connection: asyncpg.Connection) -> None:
    _keep_alive(connection)
    # jsonb columns come back as Python objects and go in from them.
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    await connection.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(settings: Settings, **overrides: Any) -> asyncpg.Pool:
    """A pool of connections to the write model."""
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min,
        "max_size": settings.db_pool_max,
        "init": _init_connection,
        "command_timeout": 60,
    }
    if not settings.db_statement_cache:
        # PgBouncer in transaction mode hands each statement to any server connection.
        options["statement_cache_size"] = 0
    options.update(overrides)
    pool = await asyncpg.create_pool(settings.database_url, **options)
    assert pool is not None
    return pool


def _tenant_literal(tenant_id: str | uuid.UUID) -> str:
    try:
        return str(uuid.UUID(str(tenant_id)))
    except ValueError:
        return _NO_TENANT


async def scope_to_tenant(connection: asyncpg.Connection, tenant_id: str | uuid.UUID) -> None:
    """Scope the connection's current transaction to one tenant's rows (call it inside a
    transaction: the setting ends with it, so a pooled connection never carries it over)."""
    # No parameters: the simple protocol, one round trip and nothing prepared (PgBouncer).
    # The value is a UUID this function formatted itself, so it is safe to inline.
    await connection.execute(
        f"SELECT set_config('{TENANT_SETTING}', '{_tenant_literal(tenant_id)}', true)"
    )


@asynccontextmanager
async def tenant_transaction(
    pool: asyncpg.Pool, tenant_id: str | uuid.UUID, *, isolation: Isolation | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction that sees and writes only `tenant_id`'s rows."""
    async with pool.acquire() as connection, connection.transaction(isolation=isolation):
        await scope_to_tenant(connection, tenant_id)
        yield connection


async def scope_to_all_tenants(connection: asyncpg.Connection) -> None:
    """Let the connection's current transaction see every tenant's rows (see `all_tenants`)."""
    await connection.execute(f"SELECT set_config('{ALL_TENANTS_SETTING}', 'on', true)")


@asynccontextmanager
async def all_tenants(
    pool: asyncpg.Pool, *, isolation: Isolation | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction that sees every tenant's rows: only for the system paths
    that span tenants by nature (the scheduler's fan-out, retention, reconciliation, rebuild,
    the operators' console, finding a key's tenant). Never the default: call it deliberately."""
    async with pool.acquire() as connection, connection.transaction(isolation=isolation):
        await scope_to_all_tenants(connection)
        yield connection


class TenantScope:
    """One statement at a time in its own tenant transaction (`in_tenant(pool, id).fetch`)."""

    def __init__(self, pool: asyncpg.Pool, tenant_id: str | uuid.UUID) -> None:
        self._pool = pool
        self._tenant_id = tenant_id

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one query, as the tenant."""
        async with tenant_transaction(self._pool, self._tenant_id) as connection:
            return list(await connection.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """The first row of one query, as the tenant."""
        async with tenant_transaction(self._pool, self._tenant_id) as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        """The first value of one query, as the tenant."""
        async with tenant_transaction(self._pool, self._tenant_id) as connection:
            return await connection.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        """The status of one statement, as the tenant."""
        async with tenant_transaction(self._pool, self._tenant_id) as connection:
            return str(await connection.execute(query, *args))


def in_tenant(pool: asyncpg.Pool, tenant_id: str | uuid.UUID) -> TenantScope:
    """Single statements scoped to one tenant (several in one transaction: tenant_transaction)."""
    return TenantScope(pool, tenant_id)
