"""The Dramatiq broker: Redis, with the middleware every actor relies on.

Dramatiq binds actors to the broker when their modules are imported, so the broker object is
made here at import time; it opens no connection until the first message is sent or fetched.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import dramatiq
import orjson
import ujson
from dramatiq.brokers.redis import RedisBroker
from dramatiq.encoder import Encoder, MessageData
from dramatiq.errors import DecodeError
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
from prometheus_client import CollectorRegistry

from store.events import QueueFrame
from store.redis import run_script
from store.settings import get_settings
from workers.metrics import WorkerMetrics
from workers.queues import QUEUES
from workers.supervision import ProcessSupervision
from workers.watchdog import ClaimWatchdog

# A killed worker's unacked messages are requeued once its heartbeat is this old; the default
# (60 s) would leave them waiting a minute. Every worker process heartbeats at least once a
# second (its idle delay-queue consumers poll), so 10 s never mistakes a busy worker for dead.
HEARTBEAT_TIMEOUT_MS = 10_000
# Out of 1,000,000 broker commands. Maintenance (requeueing dead workers' messages) only runs on
# one of these, and only for the queue that command reads: a pool consuming just `ingest` polls
# it about once a second when idle, so at 5 % a dead worker's messages waited 20 s on average
# and over a minute one time in twenty. At 25 % they wait a few seconds past the heartbeat
# timeout. Without a dead worker it costs two sorted-set range reads per command.
MAINTENANCE_CHANCE = 250_000
# Dead-lettered messages are kept a week for `recomengine dlq list|replay`.
DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000


class FastJSONEncoder(Encoder):
    """Dramatiq's JSON message format in C: written with orjson (the api encodes every event it
    queues, which cost it five times more with ujson) and read with ujson, which refuses the
    integers past 64 bits that orjson would read as floats. Those, and whatever else the fast
    libraries refuse, go through the stdlib; NaN and infinities are written as null."""

    def encode(self, data: MessageData) -> bytes:
        """The message as UTF-8 JSON."""
        try:
            return orjson.dumps(data)
        except TypeError:  # integers past 64 bits
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> MessageData:
        """The message from UTF-8 JSON; DecodeError when it is not JSON."""
        try:
            return ujson.loads(data)
        except (ValueError, OverflowError):
            pass
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"failed to decode message {data!r}", data, exc) from None


def build_broker(url: str) -> RedisBroker:
    """A Redis broker with explicit middleware (retries and time limits are set per actor)."""
    registry = CollectorRegistry()  # what each worker process serves on its metrics port
    broker = RedisBroker(
        url=url,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
        middleware=[
            ProcessSupervision(registry),
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            # A message failing this often is poison: it goes to the dead-letter queue at once
            # instead of after Dramatiq's default 20 tries spread over a month.
            Retries(max_retries=3, min_backoff=500, max_backoff=10_000),
            CurrentMessage(),
            AsyncIO(),
            WorkerMetrics(QUEUES, registry),
            ClaimWatchdog(QUEUES, registry),
        ],
    )
    return broker


_ENCODER = FastJSONEncoder()
dramatiq.set_encoder(_ENCODER)
broker = build_broker(get_settings().broker_url)
dramatiq.set_broker(broker)


# What Dramatiq's Redis `enqueue` writes, atomically: the body under its id in
# `<ns>:<queue>.msgs` (KEYS[1]), then the id at the tail of `<ns>:<queue>` (KEYS[2]), so that a
# consumer never sees an id without its body. One script call is one command to send and one
# short reply to read, where MULTI/HSET/RPUSH/EXEC is four of each.
_ENQUEUE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
"""


async def enqueue_async(client: Any, message: dramatiq.Message[Any]) -> None:
    """Enqueue `message` from an asyncio program without blocking its loop; returns once Redis
    holds it (Dramatiq's broker is synchronous)."""
    redis_id = str(uuid.uuid4())
    encoded = message.copy(options={"redis_message_id": redis_id}).encode()
    queue = f"{broker.namespace}:{message.queue_name}"
    await run_script(client, _ENQUEUE, [f"{queue}.msgs", queue], redis_id, encoded)


def encode_value(value: dict[str, Any]) -> bytes:
    """`value` encoded as it is inside a message."""
    return _ENCODER.encode(value)


def message_frame(message: dramatiq.Message[Any], *, db: int) -> QueueFrame:
    """`message`, whose last argument is an empty list, encoded around that list, for a Redis
    script to fill and queue in database `db` (see store.events.precheck)."""
    marker = os.urandom(16).hex()
    redis_id = str(uuid.uuid4())
    filled = message.copy(
        args=(*message.args[:-1], [marker]), options={"redis_message_id": redis_id}
    )
    head, tail = filled.encode().split(f'"{marker}"'.encode())
    queue = f"{broker.namespace}:{message.queue_name}"
    return QueueFrame(
        db=db,
        messages_key=f"{queue}.msgs",
        queue_key=queue,
        message_id=redis_id,
        head=head,
        tail=tail,
    )
