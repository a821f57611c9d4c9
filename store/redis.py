"""Redis clients for projections, counters and rate limits, built in start-up hooks."""

from __future__ import annotations

from redis.asyncio import Redis

from store.settings import Settings


def create_redis(settings: Settings) -> Redis:
    """An asyncio Redis client for projections (lazy: connects on first use)."""
    return Redis.from_url(
        settings.redis_url,
        decode_responses=False,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
