"""Sliding-window rate limits in Redis, atomic through one Lua script per check."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from store.redis import run_script

# KEYS: window zset, tenant auth epoch (or a dummy), last-used hash (or a dummy),
#       index of tenants with unflushed last-used times (or a dummy), the subject's shared
#       window zset (the tenant's, for a key; or a dummy), the gate hash (the tenant's usage
#       meter; or a dummy), then the follow-up's keys
# ARGV: now_ms, window_ms, limit, member prefix, requests counted, last-used field ("" for
#       none), last-used value, tenant id for the index, the shared window's limit (0: none),
#       the gate's field ("" for none) and limit, then the follow-up's arguments
# The window, the epoch read and the last-used mark happen in one round trip so that an
# authenticated request costs a single Redis call, and the concurrent requests of one subject
# share it: they are allowed in order while the budget lasts. A shared window (every key of a
# tenant writes against the tenant's budget) is counted in the same call: a request is
# allowed only while both have room, and counted in both. A gate (a plan's quota: the month's
# metered events) refuses every request, uncounted, once its field has reached its limit. A
# caller's follow-up (Lua that
# sets `extra`, run only for an allowed request that passed more keys than the window's) rides
# along; it finds its own keys and arguments after KEYS[kb] and ARGV[ab].
_WINDOW = """
local kb, ab = 6, 11
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local wanted = tonumber(ARGV[5])
local shared_limit = tonumber(ARGV[9])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local epoch = redis.call('GET', KEYS[2]) or '0'
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
  redis.call('SADD', KEYS[4], ARGV[8])
end
local allowed = math.max(0, math.min(wanted, limit - count))
local gated = 0
if ARGV[10] ~= '' then
  local used = tonumber(redis.call('HGET', KEYS[6], ARGV[10]) or '0')
  if used >= tonumber(ARGV[11]) then gated, allowed = 1, 0 end
end
local shared_count, shared_first = 0, false
if shared_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
  shared_count = redis.call('ZCARD', KEYS[5])
  allowed = math.max(0, math.min(allowed, shared_limit - shared_count))
end
if allowed > 0 then
  local members = {}
  for i = 1, allowed do
    members[2 * i - 1] = now
    members[2 * i] = ARGV[4] .. i
  end
  redis.call('ZADD', KEYS[1], unpack(members))
  redis.call('PEXPIRE', KEYS[1], window)
  if shared_limit > 0 then
    redis.call('ZADD', KEYS[5], unpack(members))
    redis.call('PEXPIRE', KEYS[5], window)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if shared_limit > 0 then
  shared_first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')[2]
end
local extra = false
"""


def _script(follow_up: str) -> str:
    return (
        _WINDOW
        + "if allowed > 0 and #KEYS > kb then\n"
        + follow_up
        + "\nend\nreturn {allowed, count, tonumber(first[2]) or now, epoch, extra, shared_count,"
        + " tonumber(shared_first) or now, gated}"
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
    # The shared window (the tenant's budget of a key's writes); limit 0 when there is none.
    shared_limit: int = 0
    shared_count: int = 0
    shared_reset_seconds: int = 0
    gated: bool = False  # refused by the window's gate (a plan's quota), not by a limit

    def with_limit(self, limit: int) -> RateDecision:
        """The same count judged against another limit (a tenant's limits just changed).

        A request refused under the old limit was not counted, so it stays refused.
        """
        if limit == self.limit:
            return self
        allowed = self.allowed and self.count <= limit
        return replace(self, allowed=allowed, limit=limit, remaining=max(0, limit - self.count))

    @property
    def shared_binds(self) -> bool:
        """Whether the shared window, not the subject's own, is what limits this request: it
        refused it, or it has less room left."""
        if not self.shared_limit:
            return False
        shared_remaining = self.shared_limit - self.shared_count
        if not self.allowed:
            return self.count < self.limit  # the own window had room: the shared one refused
        return shared_remaining < self.remaining

    @property
    def headers(self) -> dict[str, str]:
        """RateLimit-* headers (IETF draft) of whichever window binds, plus Retry-After when
        refused; none unmetered."""
        if not self.metered:
            return {}
        limit, remaining, reset = self.limit, self.remaining, self.reset_seconds
        if self.shared_binds:
            limit = self.shared_limit
            remaining = max(0, self.shared_limit - self.shared_count)
            reset = self.shared_reset_seconds
        headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(reset)
        return headers


@dataclass(frozen=True, slots=True)
class Window:
    """One subject's sliding window, with the epoch its script call reads and the hash and
    index it marks the subject used in (dummies when unused), and the window it shares with
    other subjects (a tenant's keys), if any."""

    key: str
    limit: int
    seconds: int = 60
    epoch_key: str = "reco:none"
    touch_hash: str = "reco:none"
    touch_index: str = "reco:none:index"
    touch_member: str = ""
    shared_key: str = "reco:none"
    shared_limit: int = 0  # 0: no shared window
    # A gate: every request is refused once the hash's field has reached the limit.
    gate_key: str = "reco:none"
    gate_field: str = ""  # "": no gate
    gate_limit: int = 0


# A last-used mark: the field of the window's touch hash and its value ("" for none).
Touch = tuple[str, str]
NO_TOUCH: Touch = ("", "")


@dataclass(frozen=True, slots=True)
class Counted:
    """What one script call counted for the requests it carried, in their order."""

    allowed: int  # the first `allowed` requests were let through
    counted_before: int
    limit: int
    reset_seconds: int
    epoch: str
    extra: Any
    shared_limit: int = 0
    shared_before: int = 0
    shared_reset_seconds: int = 0
    gated: bool = False

    def decision(self, index: int) -> RateDecision:
        """The decision of the request at `index`."""
        allowed = index < self.allowed
        counted = index + 1 if allowed else self.allowed
        count = self.counted_before + counted
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=max(0, self.limit - count),
            reset_seconds=self.reset_seconds,
            epoch=self.epoch,
            count=count,
            extra=self.extra,
            shared_limit=self.shared_limit,
            shared_count=self.shared_before + counted,
            shared_reset_seconds=self.shared_reset_seconds,
            gated=self.gated,
        )


class _Waiting:
    """Hits of one window waiting to be counted together."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[RateDecision]] = []
        self.touch = NO_TOUCH


class RateLimiter:
    """Counts requests per subject in a sliding window (`Window`).

    Hits of one window made in the same turn of the event loop (the requests that arrived
    together) are counted in one call, in arrival order: a busy key costs one Redis call per
    turn instead of one per request, and no hit waits for another call to return.

    `follow_up` is Lua run after the allowed requests of a `count` that passes
    `follow_up_keys`; it sees the window's locals (`allowed`, `epoch`, ...) and sets `extra`,
    which comes back as `Counted.extra`. Such counts are sent alone.
    """

    MAX_SHARED = 200

    def __init__(self, redis: Redis, *, follow_up: str = "") -> None:
        self._redis = redis
        self._source = _script(follow_up)
        # Window members only need to be unique: a random prefix per limiter and a counter
        # cost less than a UUID per request.
        self._member_prefix = os.urandom(8).hex() + ":"
        self._members = itertools.count()
        self._waiting: dict[Window, _Waiting] = {}

    async def count(
        self,
        window: Window,
        *,
        requests: int,
        touch: Touch = NO_TOUCH,
        follow_up_keys: Sequence[str] = (),
        follow_up_args: Sequence[Any] = (),
    ) -> Counted:
        """Count `requests` requests of one window in one call of their own, with the
        follow-up (which sees how many were `allowed`)."""
        return await self._count(window, requests, touch, follow_up_keys, follow_up_args)

    async def hit(self, window: Window, *, touch: Touch = NO_TOUCH) -> RateDecision:
        """Count one request; also read an epoch and mark the subject used, atomically."""
        waiting = self._waiting.get(window)
        if waiting is None:
            waiting = self._waiting[window] = _Waiting()
            asyncio.get_running_loop().call_soon(self._send, window)
        future: asyncio.Future[RateDecision] = asyncio.get_running_loop().create_future()
        waiting.futures.append(future)
        if touch[0]:
            waiting.touch = touch
        if len(waiting.futures) >= self.MAX_SHARED:
            del self._waiting[window]
            self._start(window, waiting)
        return await future

    def _send(self, window: Window) -> None:
        waiting = self._waiting.pop(window, None)
        if waiting is not None:
            self._start(window, waiting)

    def _start(self, window: Window, waiting: _Waiting) -> None:
        task = asyncio.get_running_loop().create_task(
            self._count(window, len(waiting.futures), waiting.touch, (), ())
        )

        def settle(done: asyncio.Task[Counted]) -> None:
            for index, future in enumerate(waiting.futures):
                if future.done():
                    continue  # its request went away; it was counted all the same
                if done.cancelled():
                    future.cancel()
                elif (failure := done.exception()) is not None:
                    future.set_exception(failure)
                else:
                    future.set_result(done.result().decision(index))

        task.add_done_callback(settle)

    async def _count(
        self,
        window: Window,
        requests: int,
        touch: Touch,
        follow_up_keys: Sequence[str],
        follow_up_args: Sequence[Any],
    ) -> Counted:
        """Count `requests` requests in one script call."""
        now_ms = int(time.time() * 1000)
        window_ms = window.seconds * 1000
        script_keys = [
            window.key,
            window.epoch_key,
            window.touch_hash,
            window.touch_index,
            window.shared_key,
            window.gate_key,
            *follow_up_keys,
        ]
        script_args: list[Any] = [
            now_ms,
            window_ms,
            window.limit,
            f"{self._member_prefix}{next(self._members)}:",
            requests,
            *touch,
            window.touch_member,
            window.shared_limit,
            window.gate_field,
            window.gate_limit,
            *follow_up_args,
        ]
        reply = await run_script(self._redis, self._source, script_keys, *script_args)
        allowed, counted_before, oldest, epoch, extra, shared_before, shared_oldest, gated = reply

        # The oldest request still in a window leaves it first: that is when its budget starts
        # to grow back, so it is both RateLimit-Reset and, when refused, Retry-After.
        def reset(oldest_ms: Any) -> int:
            return max(1, -(-(int(oldest_ms) + window_ms - now_ms) // 1000))

        return Counted(
            allowed=int(allowed),
            counted_before=int(counted_before),
            limit=window.limit,
            reset_seconds=reset(oldest),
            epoch=epoch.decode() if isinstance(epoch, bytes) else str(epoch),
            extra=extra,
            shared_limit=window.shared_limit,
            shared_before=int(shared_before),
            shared_reset_seconds=reset(shared_oldest),
            gated=bool(gated),
        )
