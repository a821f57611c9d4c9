"""A leader lease in Redis: of all running schedulers, only the holder fires jobs."""

from __future__ import annotations

import os
import socket
import uuid

from redis import Redis

# Take the lease when free, or extend it when this holder already has it; 1 when held.
_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if not current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
# Give the lease up only when this holder has it (a graceful stop hands over at once).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    """A lease that one holder at a time keeps by renewing it well within `ttl_seconds`."""

    def __init__(self, redis: Redis, *, key: str, ttl_seconds: float = 15.0) -> None:
        self._redis = redis
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take or extend the lease; True while this holder leads."""
        return bool(self._hold(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> None:
        """Give the lease up if this holder has it."""
        self._release(keys=[self.key], args=[self.holder])
