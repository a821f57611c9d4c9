"""An admin's own account: profile name and ending every session."""

from __future__ import annotations

import asyncpg

from store.sessions import bump_session_version


async def rename_admin(pool: asyncpg.Pool, *, admin_id: str, name: str) -> bool:
    """Set the admin's display name; False when the account no longer exists."""
    result = await pool.execute(
        "UPDATE admins SET name = $2, updated_at = now() WHERE id = $1", admin_id, name
    )
    return result.split()[-1] != "0"


async def end_all_sessions(pool: asyncpg.Pool, *, admin_id: str) -> int:
    """Sign out everywhere: revoke every refresh token and bump the session version (which
    access tokens carry) in one transaction; the new version."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE admin_id = $1 AND revoked_at IS NULL",
            admin_id,
        )
        return await bump_session_version(connection, admin_id=admin_id)
