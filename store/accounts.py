"""An admin's own account: profile name, password change and ending every session."""

from __future__ import annotations

import asyncpg


async def rename_admin(pool: asyncpg.Pool, *, admin_id: str, name: str) -> bool:
    """Set the admin's display name; False when the account no longer exists."""
    result = await pool.execute(
        "UPDATE admins SET name = $2, updated_at = now() WHERE id = $1", admin_id, name
    )
    return result.split()[-1] != "0"


async def password_hash_of(pool: asyncpg.Pool, *, admin_id: str) -> str | None:
    """The admin's password hash, or None when the account no longer exists."""
    value = await pool.fetchval("SELECT password_hash FROM admins WHERE id = $1", admin_id)
    return None if value is None else str(value)


async def change_password(pool: asyncpg.Pool, *, admin_id: str, password_hash: str) -> None:
    """Set a new password hash and revoke every refresh token of the admin, in one transaction."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE admins SET password_hash = $2, updated_at = now() WHERE id = $1",
            admin_id,
            password_hash,
        )
        await _revoke_all(connection, admin_id=admin_id)


async def revoke_all_sessions(pool: asyncpg.Pool, *, admin_id: str) -> int:
    """Revoke every live refresh token of the admin (sign out everywhere); how many there were."""
    async with pool.acquire() as connection:
        return await _revoke_all(connection, admin_id=admin_id)


async def _revoke_all(connection: asyncpg.Connection, *, admin_id: str) -> int:
    result = await connection.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE admin_id = $1 AND revoked_at IS NULL",
        admin_id,
    )
    return int(result.split()[-1])
