"""The Dramatiq broker: Redis, with the middleware every actor relies on.

Dramatiq binds actors to the broker when their modules are imported, so the broker object is
made here at import time; it opens no connection until the first message is sent or fetched.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import dramatiq
import orjson
import redis
import ujson
from dramatiq.broker import MessageProxy
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

from store.event_queue import (
    LANE_ENQUEUE,
    LANE_FETCH,
    LANES,
    lane_enqueue_args,
    lane_fetch_args,
    message_tenant_and_size,
)
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
# How long a retry that the broker could not take waits before it is queued again.
RETRY_ENQUEUE_PAUSE_SECONDS = 1.0

log = logging.getLogger(__name__)


class _EnqueueUntilQueued:
    """The broker as Retries sees it: its `enqueue` is tried again while Redis is unreachable."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def enqueue(
        self, message: dramatiq.Message[Any], *, delay: int | None = None
    ) -> dramatiq.Message[Any]:
        while True:
            try:
                return self._broker.enqueue(message, delay=delay)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning(
                    "the retry of message %s could not be queued (%s); trying again in %.1f s",
                    message.message_id,
                    error,
                    RETRY_ENQUEUE_PAUSE_SECONDS,
                )
                time.sleep(RETRY_ENQUEUE_PAUSE_SECONDS)


class RetriesThroughOutages(Retries):
    """Dramatiq's Retries, whose retry waits for the broker when the broker is down.

    Dramatiq logs and drops an error of this middleware, then acknowledges the message (it tries
    the acknowledgement again until Redis is back): a message that failed because Redis died
    (its rows stored, its projections not) would be acknowledged with its retry never queued,
    and its projections never applied. The retry waits for Redis as the acknowledgement does.
    """

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Queue the retry of a failed message (see the class), or fail it as Retries does."""
        retrying: Any = _EnqueueUntilQueued(broker)
        super().after_process_message(retrying, message, result=result, exception=exception)


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


class LaneBroker(RedisBroker):
    """Dramatiq's Redis broker, with the ingestion lanes served fairly per tenant: a lane's
    messages go to their tenant's sub-queue, and a lane's consumers take Dramatiq's own list
    first (messages it requeued), then the sub-queues by deficit round robin
    (store.event_queue). Every other queue, and delayed messages, are Dramatiq's as ever."""

    def __init__(self, *, lanes: tuple[str, ...] = LANES, **options: Any) -> None:
        super().__init__(**options)
        self.lanes = frozenset(lanes)
        self._lane_enqueue = self.client.register_script(LANE_ENQUEUE)
        self._lane_fetch = self.client.register_script(LANE_FETCH)

    def enqueue(
        self, message: dramatiq.Message[Any], *, delay: int | None = None
    ) -> dramatiq.Message[Any]:
        """Enqueue `message`: in its tenant's sub-queue when its queue is a lane."""
        placed = message_tenant_and_size(message)
        if delay is not None or message.queue_name not in self.lanes or placed is None:
            return super().enqueue(message, delay=delay)
        tenant_id, events = placed
        message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
        self.emit_before("enqueue", message, delay)
        script_keys, args = lane_enqueue_args(
            message.queue_name,
            tenant_id=tenant_id,
            redis_id=message.options["redis_message_id"],
            body=message.encode(),
            events=events,
        )
        self._lane_enqueue(keys=script_keys, args=args)
        self.emit_after("enqueue", message, delay)
        return message

    def do_fetch(self, queue_name: str, prefetch: int) -> list[bytes]:
        """Up to `prefetch` message bodies of the queue (Dramatiq's consumer asks this)."""
        fetched: list[bytes] = self._dispatch("fetch")(queue_name, prefetch)
        if queue_name not in self.lanes or len(fetched) >= prefetch:
            return fetched
        script_keys, args = lane_fetch_args(
            queue_name,
            acks_key=f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}",
            count=prefetch - len(fetched),
        )
        return [*fetched, *self._lane_fetch(keys=script_keys, args=args)]


def build_broker(url: str) -> LaneBroker:
    """A Redis broker with explicit middleware (retries and time limits are set per actor)."""
    registry = CollectorRegistry()  # what each worker process serves on its metrics port
    broker = LaneBroker(
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
            RetriesThroughOutages(max_retries=3, min_backoff=500, max_backoff=10_000),
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
