"""Ingestion actor: store a message's events once, then count, project and attribute them."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import dramatiq
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.events import ingest_and_project
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool, redis_client

log = logging.getLogger("recomengine.ingest")

MAX_RETRIES = 4
# While PostgreSQL or Redis is down a message is retried this many times (about 8 hours at the
# 30 s backoff cap) instead of being dead-lettered: an outage must not lose accepted events.
MAX_OUTAGE_RETRIES = 1000
_REQUIRED = ("id", "type", "user", "product", "ts")


class MalformedMessage(ValueError):
    """The message is not a list of message-form events; retrying cannot help."""


def _is_outage(exception: BaseException) -> bool:
    return isinstance(
        exception,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CrashShutdownError
        | asyncpg.InterfaceError
        | RedisConnectionError
        | RedisTimeoutError
        | TimeoutError,
    )


def retry_ingest(retries: int, exception: BaseException) -> bool:
    """Retry outages for hours, anything else a few times, malformed messages never."""
    if isinstance(exception, MalformedMessage):
        return False
    if _is_outage(exception):
        return retries < MAX_OUTAGE_RETRIES
    return retries < MAX_RETRIES


def _check(events: Any) -> list[dict[str, Any]]:
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and all(isinstance(e.get(k), str) for k in _REQUIRED) for e in events
    ):
        raise MalformedMessage("events must be a list of objects with id, type, user, product, ts")
    return events


@dramatiq.actor(
    queue_name="ingest",
    max_retries=MAX_RETRIES,
    retry_when=retry_ingest,
    throws=(MalformedMessage,),
    time_limit=60_000,
    min_backoff=500,
    max_backoff=30_000,
)
async def ingest_events(tenant_id: str, events: list[dict[str, Any]]) -> None:
    """Store the tenant's events (dedupe), then apply their side effects at most once each."""
    # Returns nothing: Dramatiq logs a warning for every message whose actor returns a value
    # without a results backend, which cost the worker a log line per message.
    await ingest_and_project(
        await db_pool(), redis_client(), tenant_id=tenant_id, events=_check(events)
    )
