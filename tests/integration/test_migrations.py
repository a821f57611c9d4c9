"""Migrations: down to base and up to head again, on a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from cli.commands.database import alembic_config, downgrade, upgrade
from store.settings import Settings

EXPECTED_TABLES = {
    "admins",
    "tenants",
    "api_keys",
    "catalog_items",
    "events",
    "experiments",
    "experiment_results",
    "analytics_daily",
    "widget_configs",
    "revenue_attributions",
    "refresh_tokens",
    "password_resets",
}


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
    finally:
        await connection.close()
    return {row["relname"] for row in rows}


@pytest.fixture
async def scratch_database(migrated: Settings) -> AsyncIterator[str]:
    """A new, empty database in the test cluster, dropped afterwards."""
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(migrated.migration_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = migrated.migration_database_url.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(migrated.migration_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_downgrading_to_base_and_upgrading_to_head_works(scratch_database: str) -> None:
    # Alembic's environment runs its own event loop, so it runs in a thread.
    await asyncio.to_thread(upgrade, scratch_database)
    assert EXPECTED_TABLES <= await _tables(scratch_database)

    await asyncio.to_thread(downgrade, scratch_database, "base")
    assert await _tables(scratch_database) <= {"alembic_version"}

    await asyncio.to_thread(upgrade, scratch_database)
    assert EXPECTED_TABLES <= await _tables(scratch_database)
    connection = await asyncpg.connect(scratch_database)
    try:
        partitions = await connection.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        )
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    assert partitions >= 2  # the DEFAULT partition and the monthly ones are back
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
