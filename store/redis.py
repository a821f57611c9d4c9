"""Redis clients for projections, counters and rate limits, built in start-up hooks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError

from store.settings import Settings


def create_redis(settings: Settings, url: str | None = None) -> Redis:
    """An asyncio Redis client for projections (lazy: connects on first use), or for `url`.

    Its pool holds at most `redis_pool_max` connections and a call waits (up to 2 s) for a free
    one: redis-py's default pool refuses a call outright once 100 are in use, which turned a
    burst of concurrent requests into 503s."""
    pool = BlockingConnectionPool.from_url(
        url or settings.redis_url,
        max_connections=settings.redis_pool_max,
        timeout=2,
        decode_responses=False,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


_SCRIPT_SHAS: dict[str, str] = {}


async def run_script(redis: Redis, source: str, script_keys: Sequence[Any], *args: Any) -> Any:
    """Run a Lua script by its SHA1 (EVALSHA), loading it when Redis does not have it yet."""
    sha = _SCRIPT_SHAS.get(source)
    if sha is None:
        sha = _SCRIPT_SHAS[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324
    try:
        # The command itself rather than the client's Script wrapper, which costs more per call
        # than the command on the api's hottest paths.
        return await redis.execute_command("EVALSHA", sha, len(script_keys), *script_keys, *args)
    except NoScriptError:
        # A restarted or flushed Redis forgets scripts; EVAL runs it and caches it again.
        return await redis.eval(source, len(script_keys), *script_keys, *args)
