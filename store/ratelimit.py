"""Sliding-window rate limits in Redis, atomic through one Lua script per check."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from store.redis import run_script

# KEYS: window zset, tenant auth epoch (or a dummy), last-used hash (or a dummy),
#       index of tenants with unflushed last-used times (or a dummy), then the follow-up's keys
# ARGV: now_ms, window_ms, limit, member, last-used field ("" for none), last-used value,
#       tenant id for the index, then the follow-up's arguments
# The window, the epoch read and the last-used mark happen in one round trip so that an
# authenticated request costs a single Redis call; a caller's follow-up (Lua that sets
# `extra`, run only for an allowed request that passed more than four keys) rides along.
_WINDOW = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local epoch = redis.call('GET', KEYS[2]) or '0'
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
  redis.call('SADD', KEYS[4], ARGV[7])
end
local allowed = 0
if count < limit then
  allowed = 1
  count = count + 1
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local extra = false
"""


def _script(follow_up: str) -> str:
    return (
        _WINDOW
        + "if allowed == 1 and #KEYS > 4 then\n"
        + follow_up
        + "\nend\nreturn {allowed, count, tonumber(first[2]) or now, epoch, extra}"
    )


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may go on, with what the RateLimit-* headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    epoch: str
    count: int = 0
    extra: Any = None  # what the follow-up script returned, if one ran
    metered: bool = True  # False when Redis was down and the request went on uncounted

    def with_limit(self, limit: int) -> RateDecision:
        """The same count judged against another limit (a tenant's limits just changed).

        A request refused under the old limit was not counted, so it stays refused.
        """
        if limit == self.limit:
            return self
        allowed = self.allowed and self.count <= limit
        return replace(self, allowed=allowed, limit=limit, remaining=max(0, limit - self.count))

    @property
    def headers(self) -> dict[str, str]:
        """RateLimit-* headers (IETF draft), plus Retry-After when refused; none unmetered."""
        if not self.metered:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class RateLimiter:
    """Counts requests per subject in a sliding window of `window_seconds`.

    `follow_up` is Lua run after an allowed hit that passes `follow_up_keys`; it sees the
    window's locals (`epoch`, ...) and sets `extra`, which comes back as `RateDecision.extra`.
    """

    def __init__(self, redis: Redis, *, follow_up: str = "") -> None:
        self._redis = redis
        self._source = _script(follow_up)
        # Window members only need to be unique: a random prefix per limiter and a counter
        # cost less than a UUID per request.
        self._member_prefix = os.urandom(8).hex() + ":"
        self._members = itertools.count()

    async def hit(
        self,
        *,
        key: str,
        limit: int,
        window_seconds: int = 60,
        epoch_key: str = "reco:none",
        touch_hash: str = "reco:none",
        touch_field: str = "",
        touch_value: str = "",
        touch_index: str = "reco:none:index",
        touch_member: str = "",
        follow_up_keys: Sequence[str] = (),
        follow_up_args: Sequence[str] = (),
    ) -> RateDecision:
        """Count one request against `key`; also read an epoch and touch a hash, atomically."""
        now_ms = int(time.time() * 1000)
        window_ms = window_seconds * 1000
        script_keys = [key, epoch_key, touch_hash, touch_index, *follow_up_keys]
        script_args: list[str | int] = [
            now_ms,
            window_ms,
            limit,
            f"{self._member_prefix}{next(self._members)}",
            touch_field,
            touch_value,
            touch_member,
            *follow_up_args,
        ]
        reply = await run_script(self._redis, self._source, script_keys, *script_args)
        allowed, count, oldest, epoch, extra = reply
        # The oldest request still in the window leaves it first: that is when the budget
        # starts to grow back, so it is both RateLimit-Reset and, when refused, Retry-After.
        reset = max(1, -(-(int(oldest) + window_ms - now_ms) // 1000))
        epoch_text = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        return RateDecision(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(0, limit - int(count)),
            reset_seconds=reset,
            epoch=epoch_text,
            count=int(count),
            extra=extra,
        )
