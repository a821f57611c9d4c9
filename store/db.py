"""PostgreSQL connection pools (asyncpg), built in start-up hooks."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from store.settings import Settings


async def _init_connection(connection: asyncpg.Connection) -> None:
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
