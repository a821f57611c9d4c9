"""Redis clients for projections, counters and rate limits, built in start-up hooks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

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
