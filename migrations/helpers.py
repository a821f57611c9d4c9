"""Helpers for migrations written as plain SQL scripts."""

from __future__ import annotations

from alembic import op
from sqlalchemy.util import await_only


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script in the migration's transaction.

    asyncpg runs a script in one simple-protocol call only through its own `execute`;
    SQLAlchemy's adapter prepares statements, which allows one statement at a time.
    """
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    await_only(driver_connection.execute(sql))
