"""Sliding-window rate limits in Redis, atomic through one Lua script per check."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS: window zset, tenant auth epoch (or a dummy), last-used hash (or a dummy),
#       index of tenants with unflushed last-used times (or a dummy)
# ARGV: now_ms, window_ms, limit, member, last-used field ("" for none), last-used value,
#       tenant id for the index
# The window, the epoch read and the last-used mark happen in one round trip so that an
# authenticated request costs a single Redis call.
_SCRIPT = """
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
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, count, tonumber(oldest[2]) or now, epoch}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {1, count + 1, tonumber(first[2]) or now, epoch}
"""


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may go on, with what the RateLimit-* headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    epoch: str
    count: int = 0

    def with_limit(self, limit: int) -> RateDecision:
        """The same count judged against another limit (a tenant's limits just changed).

        A request refused under the old limit was not counted, so it stays refused.
        """
        if limit == self.limit:
            return self
        allowed = self.allowed and self.count <= limit
        return RateDecision(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - self.count),
            reset_seconds=self.reset_seconds,
            epoch=self.epoch,
            count=self.count,
        )

    @property
    def headers(self) -> dict[str, str]:
        """RateLimit-* headers (IETF draft), plus Retry-After when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class RateLimiter:
    """Counts requests per subject in a sliding window of `window_seconds`."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)

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
    ) -> RateDecision:
        """Count one request against `key`; also read an epoch and touch a hash, atomically."""
        now_ms = int(time.time() * 1000)
        window_ms = window_seconds * 1000
        allowed, count, oldest, epoch = await self._script(
            keys=[key, epoch_key, touch_hash, touch_index],
            args=[
                now_ms,
                window_ms,
                limit,
                uuid.uuid4().hex,
                touch_field,
                touch_value,
                touch_member,
            ],
        )
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
        )
