"""Refresh tokens (rotated, in families), password-reset tokens and login-failure counts.

Only SHA-256 digests of tokens are stored: a copy of the database cannot be replayed as a session
or a reset link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import asyncpg

from store.mail import RESET_TOKEN_PLACEHOLDER, enqueue_mail
from store.sessions import bump_session_version

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh random token for a cookie or a link (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    """The SHA-256 digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).digest()


async def issue_refresh_token(
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    admin_id: str,
    ttl_seconds: int,
    family_id: str | None = None,
) -> str:
    """A new refresh token for the admin, in `family_id` or in a new family (a new login)."""
    token = new_token()
    await pool.execute(
        "INSERT INTO refresh_tokens (admin_id, family_id, token_hash, expires_at) "
        "VALUES ($1, $2, $3, $4)",
        admin_id,
        family_id or str(uuid.uuid4()),
        token_digest(token),
        datetime.now(UTC) + timedelta(seconds=ttl_seconds),
    )
    return token


class RotationOutcome(Enum):
    """What presenting a refresh token led to."""

    ROTATED = "rotated"
    UNKNOWN = "unknown"  # no such token, expired or revoked
    REPLAYED = "replayed"  # already rotated: the family is now revoked


@dataclass(frozen=True)
class Rotation:
    """The outcome of a refresh; `admin_id` and `token` are set only when ROTATED."""

    outcome: RotationOutcome
    admin_id: str | None = None
    token: str | None = None
    session_version: int = 0


async def rotate_refresh_token(pool: asyncpg.Pool, *, token: str, ttl_seconds: int) -> Rotation:
    """Exchange a live refresh token for a new one of the same family.

    A token that was already rotated means two parties hold the family (a stolen cookie): the
    whole family is revoked, so the thief's and the owner's newest tokens both stop working.
    """
    async with pool.acquire() as connection, connection.transaction():
        # FOR UPDATE serialises two concurrent refreshes of one token: the second sees it rotated.
        row = await connection.fetchrow(
            "SELECT r.id, r.admin_id, r.family_id, r.expires_at, r.rotated_at, r.revoked_at, "
            "a.session_version FROM refresh_tokens r JOIN admins a ON a.id = r.admin_id "
            "WHERE r.token_hash = $1 FOR UPDATE OF r",
            token_digest(token),
        )
        if row is None or row["revoked_at"] is not None:
            return Rotation(RotationOutcome.UNKNOWN)
        if row["rotated_at"] is not None:
            await connection.execute(
                "UPDATE refresh_tokens SET revoked_at = now() "
                "WHERE family_id = $1 AND revoked_at IS NULL",
                row["family_id"],
            )
            return Rotation(RotationOutcome.REPLAYED)
        if row["expires_at"] <= datetime.now(UTC):
            return Rotation(RotationOutcome.UNKNOWN)
        await connection.execute(
            "UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1", row["id"]
        )
        admin_id = str(row["admin_id"])
        fresh = await issue_refresh_token(
            connection,
            admin_id=admin_id,
            ttl_seconds=ttl_seconds,
            family_id=str(row["family_id"]),
        )
    return Rotation(
        RotationOutcome.ROTATED,
        admin_id=admin_id,
        token=fresh,
        session_version=int(row["session_version"]),
    )


async def revoke_refresh_family(pool: asyncpg.Pool, *, token: str) -> tuple[str, int] | None:
    """A logout: revoke every token of the family `token` belongs to and bump the admin's
    session version, so its access tokens end too; the admin id and new version, or None for
    an unknown token."""
    async with pool.acquire() as connection, connection.transaction():
        admin_id = await connection.fetchval(
            "SELECT admin_id FROM refresh_tokens WHERE token_hash = $1", token_digest(token)
        )
        if admin_id is None:
            return None
        await connection.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND "
            "family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
            token_digest(token),
        )
        version = await bump_session_version(connection, admin_id=str(admin_id))
    return str(admin_id), version


async def end_other_sessions(
    connection: asyncpg.Connection, *, admin_id: str, password_hash: str
) -> int:
    """A password change: set the hash, revoke every refresh token and bump the session
    version (inside the caller's transaction); the new version."""
    await connection.execute(
        "UPDATE admins SET password_hash = $2, updated_at = now() WHERE id = $1",
        admin_id,
        password_hash,
    )
    await connection.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE admin_id = $1 AND revoked_at IS NULL",
        admin_id,
    )
    return await bump_session_version(connection, admin_id=admin_id)


def reset_link_token(reset_id: str, *, secret: str) -> str:
    """The token of a reset link: derived from the reset row's id with a server secret, so the
    database keeps only its digest and the link exists only in the outgoing mail."""
    key = hmac.new(secret.encode(), b"recomengine password-reset link", hashlib.sha256).digest()
    digest = hmac.new(key, str(reset_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def request_password_reset(
    pool: asyncpg.Pool, *, email: str, ttl_seconds: int, dashboard_url: str, secret: str
) -> int | None:
    """For an existing account: a single-use reset and its mail in the outbox, whose link is
    rendered only when the mail is sent (store.mail.claim_mail).

    Returns the outbox id of the mail to send, or None when no account has this email (the
    caller answers the same either way).
    """
    async with pool.acquire() as connection, connection.transaction():
        admin = await connection.fetchrow(
            "SELECT id, email, name FROM admins WHERE lower(email) = lower($1)", email
        )
        if admin is None:
            return None
        # Only the newest link works: an older mail lying in an inbox is no longer a way in.
        await connection.execute(
            "UPDATE password_resets SET used_at = now() WHERE admin_id = $1 AND used_at IS NULL",
            admin["id"],
        )
        reset_id = str(uuid.uuid4())
        await connection.execute(
            "INSERT INTO password_resets (id, admin_id, token_hash, expires_at) "
            "VALUES ($1, $2, $3, $4)",
            reset_id,
            admin["id"],
            token_digest(reset_link_token(reset_id, secret=secret)),
            datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        )
        link = f"{dashboard_url.rstrip('/')}/reset-password?token={RESET_TOKEN_PLACEHOLDER}"
        minutes = max(1, ttl_seconds // 60)
        body = (
            f"Hello {admin['name']},\n\n"
            "Someone asked to reset the password of your RecomEngine account. To choose a new "
            f"password, open this link within {minutes} minutes:\n\n{link}\n\n"
            "If it was not you, ignore this mail: your password stays as it is.\n"
        )
        return await enqueue_mail(
            connection,
            to_address=admin["email"],
            subject="Reset your RecomEngine password",
            body=body,
            password_reset_id=reset_id,
        )


async def reset_token_email(pool: asyncpg.Pool, *, token: str) -> str | None:
    """The email of the account a live reset token is for, or None."""
    value = await pool.fetchval(
        "SELECT a.email FROM password_resets r JOIN admins a ON a.id = r.admin_id "
        "WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.expires_at > now()",
        token_digest(token),
    )
    return str(value) if value is not None else None


async def reset_password(
    pool: asyncpg.Pool, *, token: str, password_hash: str
) -> tuple[str, int] | None:
    """Consume a live reset token: set the new password hash, revoke every refresh token and
    bump the session version.

    Returns the admin id and new session version, or None when the token is unknown, used or
    expired.
    """
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            "UPDATE password_resets SET used_at = now() "
            "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() "
            "RETURNING admin_id",
            token_digest(token),
        )
        if row is None:
            return None
        # A reset means the old password may be known to someone else: end every session.
        version = await end_other_sessions(
            connection, admin_id=str(row["admin_id"]), password_hash=password_hash
        )
    return str(row["admin_id"]), version
