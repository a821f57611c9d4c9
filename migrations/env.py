"""Alembic environment: runs migrations over asyncpg against RECOMENGINE_DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from store.settings import get_settings


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    settings = get_settings()
    # Migrations run as the schema owner when one is named; the processes use a DML-only role.
    url = (
        context.config.attributes.get("database_url")
        or settings.migration_database_url
        or settings.database_url
    )
    engine = create_async_engine(_async_url(url))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


asyncio.run(_run_online())
