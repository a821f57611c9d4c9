"""Refresh tokens (rotated, in families), password-reset tokens and login-failure counts.

Only SHA-256 digests of tokens are stored: a copy of the database cannot be replayed as a session
or a reset link.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import asyncpg
from redis.asyncio import Redis

from store.mail import enqueue_mail

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


async def rotate_refresh_token(pool: asyncpg.Pool, *, token: str, ttl_seconds: int) -> Rotation:
    """Exchange a live refresh token for a new one of the same family.

    A token that was already rotated means two parties hold the family (a stolen cookie): the
    whole family is revoked, so the thief's and the owner's newest tokens both stop working.
    """
    async with pool.acquire() as connection, connection.transaction():
        # FOR UPDATE serialises two concurrent refreshes of one token: the second sees it rotated.
        row = await connection.fetchrow(
            "SELECT id, admin_id, family_id, expires_at, rotated_at, revoked_at "
            "FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
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
    return Rotation(RotationOutcome.ROTATED, admin_id=admin_id, token=fresh)


async def revoke_refresh_family(pool: asyncpg.Pool, *, token: str) -> int:
    """Revoke every token of the family `token` belongs to (a logout); how many were live."""
    result = await pool.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family_id = "
        "(SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        token_digest(token),
    )
    return int(result.split()[-1])


async def request_password_reset(
    pool: asyncpg.Pool, *, email: str, ttl_seconds: int, dashboard_url: str
) -> int | None:
    """For an existing account: a single-use reset token and its mail in the outbox.

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
        token = new_token()
        await connection.execute(
            "INSERT INTO password_resets (admin_id, token_hash, expires_at) VALUES ($1, $2, $3)",
            admin["id"],
            token_digest(token),
            datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        )
        link = f"{dashboard_url.rstrip('/')}/reset-password?token={token}"
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
        )


async def reset_password(pool: asyncpg.Pool, *, token: str, password_hash: str) -> str | None:
    """Consume a live reset token: set the new password hash and revoke every refresh token.

    Returns the admin id, or None when the token is unknown, used or expired.
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
        await connection.execute(
            "UPDATE admins SET password_hash = $2, updated_at = now() WHERE id = $1",
            row["admin_id"],
            password_hash,
        )
        # A reset means the old password may be known to someone else: end every session.
        await connection.execute(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE admin_id = $1 AND revoked_at IS NULL",
            row["admin_id"],
        )
    return str(row["admin_id"])


def account_subject(email: str) -> str:
    """The throttle subject of an account: a digest, so Redis keys carry no email address."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]


async def login_lockout_seconds(
    redis: Redis, *, key: str, limit: int, window_seconds: int
) -> int | None:
    """Seconds until the account may try again when `limit` failures fill the window; else None.

    A read-only look at the failure window written by RateLimiter.hit: a locked account must be
    refused before its password is checked, or a right guess would still tell itself apart.
    """
    now_ms = int(time.time() * 1000)
    window_ms = window_seconds * 1000
    pipe = redis.pipeline(transaction=False)
    pipe.zcount(key, now_ms - window_ms + 1, "+inf")
    pipe.zrangebyscore(key, now_ms - window_ms + 1, "+inf", start=0, num=1, withscores=True)
    count, oldest = await pipe.execute()
    if int(count) < limit or not oldest:
        return None
    return max(1, -(-(int(oldest[0][1]) + window_ms - now_ms) // 1000))
