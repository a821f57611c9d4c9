"""The Dramatiq broker: Redis, with the middleware every actor relies on.

Dramatiq binds actors to the broker when their modules are imported, so the broker object is
made here at import time; it opens no connection until the first message is sent or fetched.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from store.settings import get_settings

QUEUES = ("ingest", "catalog", "projections", "training", "maintenance")

# A killed worker's unacked messages are requeued once its heartbeat is this old; the default
# (60 s) would leave them waiting a minute, so keep it short and run maintenance often.
HEARTBEAT_TIMEOUT_MS = 10_000
MAINTENANCE_CHANCE = 1000  # out of 100,000 fetches


def build_broker(url: str) -> RedisBroker:
    """A Redis broker with explicit middleware (retries and time limits are set per actor)."""
    broker = RedisBroker(
        url=url,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            Retries(max_retries=3, min_backoff=500, max_backoff=10_000),
            CurrentMessage(),
            AsyncIO(),
        ],
    )
    return broker


broker = build_broker(get_settings().broker_url)
dramatiq.set_broker(broker)
