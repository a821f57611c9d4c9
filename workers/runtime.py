"""Per-process resources of a worker, built on first use inside the worker's event loop.

Dramatiq's AsyncIO middleware runs every async actor on one event loop per worker process, so
one asyncpg pool and one Redis client per process serve every actor.
"""

from __future__ import annotations

import asyncio

import asyncpg
from redis.asyncio import Redis

from store.db import create_pool
from store.redis import create_redis
from store.settings import get_settings

_pool: asyncpg.Pool | None = None
_redis: Redis | None = None
_lock: asyncio.Lock | None = None


async def db_pool() -> asyncpg.Pool:
    """The process's PostgreSQL pool."""
    global _pool, _lock
    if _pool is None:
        _lock = _lock or asyncio.Lock()
        async with _lock:
            if _pool is None:
                _pool = await create_pool(get_settings())
    return _pool


def redis_client() -> Redis:
    """The process's Redis client for projections and counters."""
    global _redis
    if _redis is None:
        _redis = create_redis(get_settings())
    return _redis
