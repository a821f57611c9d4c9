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


async def create_admin(
    pool: asyncpg.Pool, *, email: str, name: str, password_hash: str
) -> AdminRecord:
    """A new admin; Conflict when the email is taken (case-insensitive)."""
    try:
        row = await pool.fetchrow(
            "INSERT INTO admins (email, name, password_hash) VALUES ($1, $2, $3) "
            "RETURNING id, email, name",
            email,
            name,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("An account with this email already exists.") from exc
    assert row is not None
    return AdminRecord(id=str(row["id"]), email=row["email"], name=row["name"])
