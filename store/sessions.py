"""Admin session versions and the sign-in delay of an account and address pair.

Every access token carries the session version of its admin; ending the admin's sessions bumps
the version in PostgreSQL and then in Redis, where every request reads it (one GET).
"""

from __future__ import annotations

import hashlib
import time

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from store import keys

# The cached version is rewritten by every bump; the expiry only bounds stale copies should a
# bump's Redis write fail after its commit.
VERSION_CACHE_SECONDS = 600
# A pair's failures are forgotten this long after the last one.
FAILURE_MEMORY_SECONDS = 15 * 60


async def cached_session_version(redis: Redis, pool: asyncpg.Pool, *, admin_id: str) -> int | None:
    """The admin's session version from Redis, else PostgreSQL (then cached); None when the
    account is gone. Redis being down falls back to PostgreSQL rather than trusting the token."""
    key = keys.admin_session_version(admin_id)
    try:
        cached = await redis.get(key)
    except (RedisError, OSError):
        cached, key = None, ""
    if cached is not None:
        return int(cached)
    value = await pool.fetchval("SELECT session_version FROM admins WHERE id = $1", admin_id)
    if value is None:
        return None
    if key:
        # NX: a bump that landed meanwhile has written the newer value; never overwrite it.
        try:
            await redis.set(key, int(value), nx=True, ex=VERSION_CACHE_SECONDS)
        except (RedisError, OSError):
            pass
    return int(value)


async def bump_session_version(
    connection: asyncpg.Pool | asyncpg.Connection, *, admin_id: str
) -> int:
    """Bump the admin's session version in PostgreSQL (inside the caller's transaction)."""
    value = await connection.fetchval(
        "UPDATE admins SET session_version = session_version + 1 WHERE id = $1 "
        "RETURNING session_version",
        admin_id,
    )
    return int(value or 0)


async def publish_session_version(redis: Redis, *, admin_id: str, version: int) -> None:
    """Write a committed bump to Redis, so every api process refuses older tokens at once."""
    await redis.set(keys.admin_session_version(admin_id), version, ex=VERSION_CACHE_SECONDS)


def pair_subject(email: str, address: str) -> str:
    """The throttle subject of an account and client address (a digest: no email in Redis)."""
    material = f"{email.strip().lower()}\n{address}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def login_delay(failures: int, *, free: int, cap_seconds: int) -> int:
    """Seconds a pair with `failures` recent failures waits after the last one: none for the
    first `free`, then 1, 2, 4... up to `cap_seconds`."""
    if failures < free:
        return 0
    return int(min(cap_seconds, 2 ** (failures - free)))


async def login_wait_seconds(
    redis: Redis, *, subject: str, free: int, cap_seconds: int
) -> int | None:
    """Seconds the pair must still wait before its next try, or None when it may try now."""
    count, last_ms = await redis.hmget(keys.login_failures(subject), ["count", "last"])
    if count is None or last_ms is None:
        return None
    delay_ms = login_delay(int(count), free=free, cap_seconds=cap_seconds) * 1000
    left_ms = int(last_ms) + delay_ms - int(time.time() * 1000)
    if left_ms <= 0:
        return None
    return max(1, -(-left_ms // 1000))


async def record_login_failure(redis: Redis, *, subject: str) -> None:
    """Count one failed sign-in of the pair."""
    key = keys.login_failures(subject)
    pipe = redis.pipeline(transaction=True)
    pipe.hincrby(key, "count", 1)
    pipe.hset(key, "last", int(time.time() * 1000))
    pipe.expire(key, FAILURE_MEMORY_SECONDS)
    await pipe.execute()


async def clear_login_failures(redis: Redis, *, subject: str) -> None:
    """Forget the pair's failures after a successful sign-in."""
    await redis.delete(keys.login_failures(subject))
