"""Admin accounts in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from domain.errors import Conflict


@dataclass(frozen=True)
class AdminRecord:
    """An admin account (the password hash never leaves the store)."""

    id: str
    email: str
    name: str
    # Operators see the operators' console: queues, workers, dead letters, every tenant's models.
    is_operator: bool = False
    session_version: int = 0


async def create_admin(
    pool: asyncpg.Pool, *, email: str, name: str, password_hash: str, is_operator: bool = False
) -> AdminRecord:
    """A new admin; Conflict when the email is taken (case-insensitive)."""
    try:
        row = await pool.fetchrow(
            "INSERT INTO admins (email, name, password_hash, is_operator) VALUES ($1, $2, $3, $4) "
            "RETURNING id, email, name, is_operator, session_version",
            email,
            name,
            password_hash,
            is_operator,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("An account with this email already exists.") from exc
    assert row is not None
    return _record(row)


def _record(row: asyncpg.Record) -> AdminRecord:
    return AdminRecord(
        id=str(row["id"]),
        email=row["email"],
        name=row["name"],
        is_operator=row["is_operator"],
        session_version=int(row["session_version"]),
    )


async def find_admin_credentials(
    pool: asyncpg.Pool, *, email: str
) -> tuple[AdminRecord, str] | None:
    """The admin with this email (case-insensitive) and its password hash, or None."""
    row = await pool.fetchrow(
        "SELECT id, email, name, is_operator, session_version, password_hash FROM admins "
        "WHERE lower(email) = lower($1)",
        email,
    )
    if row is None:
        return None
    return _record(row), row["password_hash"]


async def get_admin(pool: asyncpg.Pool, *, admin_id: str) -> AdminRecord | None:
    """The admin with this id, or None."""
    row = await pool.fetchrow(
        "SELECT id, email, name, is_operator, session_version FROM admins WHERE id = $1",
        admin_id,
    )
    return _record(row) if row is not None else None


async def get_admin_password_hash(pool: asyncpg.Pool, *, admin_id: str) -> str | None:
    """The admin's password hash, or None when the account is gone."""
    value = await pool.fetchval("SELECT password_hash FROM admins WHERE id = $1", admin_id)
    return str(value) if value is not None else None
