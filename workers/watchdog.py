"""The claim watchdog: messages that a live but stuck consumer holds go back to their queue.

Dramatiq's Redis broker requeues a consumer's unacked messages only once its heartbeat is
stale. A process whose worker threads are stuck (a lock, a hung call) keeps heartbeating from
its consumer threads and keeps its claimed messages forever. Every worker process therefore
publishes when it last started or finished a message, and one of them at a time (a Redis
lease) sweeps the claimed sets: a message claimed for longer than its time limit plus a margin
by a consumer that has started or finished nothing for as long goes back to the head of its
queue. A healthy consumer never qualifies, because the TimeLimit middleware ends every message
within its limit. Actors are idempotent, so a stuck consumer that wakes up and runs its copy
too changes nothing twice; its ack then finds the message no longer claimed by it and leaves
the requeued copy alone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter

from store.settings import get_settings

log = logging.getLogger("recomengine.watchdog")

NAMESPACE = "dramatiq"
# Dramatiq's TimeLimit default, for actors that set none.
DEFAULT_TIME_LIMIT_MS = 600_000
PROGRESS_KEY = "recomengine:watchdog:progress"
LEASE_KEY = "recomengine:watchdog:lease"
REQUEUED_KEY = "recomengine:watchdog:requeued"
# HASH consumer id -> JSON {host, pid, queues, threads, startedAt}: who the live ones are.
WORKERS_KEY = "recomengine:workers"


def claims_key(queue: str) -> str:
    """The hash of (consumer, message) -> first time a sweep saw it claimed, in ms."""
    return f"recomengine:watchdog:claimed:{queue}"


# Moves claimed ids back to the head of their queue, atomically per id; an id that the
# consumer acked (or that another sweep moved) in the meantime is left alone.
# KEYS: the consumer's acks set, the queue list, the queue's message bodies; ARGV: ids.
_REQUEUE = """
local moved = 0
for _, id in ipairs(ARGV) do
  if redis.call('SREM', KEYS[1], id) == 1 and redis.call('HEXISTS', KEYS[3], id) == 1 then
    redis.call('LPUSH', KEYS[2], id)
    moved = moved + 1
  end
end
return moved
"""


@dataclass(frozen=True)
class Claim:
    """One message a consumer has fetched and not acked."""

    consumer: str
    queue: str
    message_id: str

    @property
    def field(self) -> str:
        """Its field in the claims hash."""
        return f"{self.consumer}|{self.message_id}"


def _queue_keys(queue: str) -> tuple[str, str]:
    base = f"{NAMESPACE}:{queue}"
    return base, f"{base}.msgs"


def _acks_key(consumer: str, queue: str) -> str:
    return f"{NAMESPACE}:__acks__.{consumer}.{queue}"


def _limit_ms(broker: dramatiq.Broker, body: bytes | None) -> float | None:
    """How long the message may take once started (None: its body is gone, nothing to do).
    A delayed message may be held until its eta before that time even starts."""
    if body is None:
        return None
    message = Message.decode(body)
    limit = message.options.get("time_limit")
    if limit is None:
        try:
            limit = broker.get_actor(message.actor_name).options.get("time_limit")
        except dramatiq.ActorNotFound:
            limit = None
    wait = max(0.0, float(message.options.get("eta", 0)) - time.time() * 1000)
    return float(limit or DEFAULT_TIME_LIMIT_MS) + wait


def sweep(
    client: Any,
    broker: dramatiq.Broker,
    *,
    queues: Iterable[str],
    heartbeat_timeout_ms: float,
    margin_ms: float,
    now_ms: float | None = None,
) -> dict[str, int]:
    """Requeue the messages that stuck consumers hold; returns how many per queue."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    live = [
        consumer.decode()
        for consumer in client.zrangebyscore(
            f"{NAMESPACE}:__heartbeats__", now_ms - heartbeat_timeout_ms, "+inf"
        )
    ]
    progress = {k.decode(): float(v) for k, v in client.hgetall(PROGRESS_KEY).items()}
    departed = [consumer for consumer in progress if consumer not in live]
    if departed:
        client.hdel(PROGRESS_KEY, *departed)
        client.hdel(WORKERS_KEY, *departed)
    all_queues = [name for queue in queues for name in (queue, f"{queue}.DQ")]
    pipe = client.pipeline(transaction=False)
    for consumer in live:
        for queue in all_queues:
            pipe.smembers(_acks_key(consumer, queue))
    claimed = iter(pipe.execute())
    claims: dict[str, list[Claim]] = {queue: [] for queue in all_queues}
    for consumer in live:
        for queue in all_queues:
            for message_id in next(claimed):
                claims[queue].append(Claim(consumer, queue, message_id.decode()))
    requeued: dict[str, int] = {}
    for queue, held in claims.items():
        first_seen = _remember(client, queue, held, now_ms)
        stuck = _stuck(client, broker, queue, held, first_seen, progress, now_ms, margin_ms)
        moved = _requeue(client, queue, stuck)
        if moved:
            requeued[queue] = moved
            client.hincrby(REQUEUED_KEY, queue.removesuffix(".DQ"), moved)
            log.warning(
                "requeued messages held by stuck consumers",
                extra={"queue": queue, "requeued": moved},
            )
    return requeued


def _remember(client: Any, queue: str, held: list[Claim], now_ms: float) -> dict[str, float]:
    """Record when each claim was first seen, forget claims that are gone; returns them all."""
    key = claims_key(queue)
    known = {k.decode(): float(v) for k, v in client.hgetall(key).items()}
    current = {claim.field for claim in held}
    gone = [field for field in known if field not in current]
    new = {claim.field: now_ms for claim in held if claim.field not in known}
    pipe = client.pipeline(transaction=False)
    if gone:
        pipe.hdel(key, *gone)
    for field, seen in new.items():
        pipe.hsetnx(key, field, seen)
    pipe.execute()
    return {field: known.get(field, now_ms) for field in current}


def _stuck(
    client: Any,
    broker: dramatiq.Broker,
    queue: str,
    held: list[Claim],
    first_seen: dict[str, float],
    progress: dict[str, float],
    now_ms: float,
    margin_ms: float,
) -> list[Claim]:
    """The claims older than their limit plus the margin, held by a consumer that started or
    finished nothing for as long."""
    old = [claim for claim in held if now_ms - first_seen[claim.field] > margin_ms]
    if not old:
        return []
    _, messages = _queue_keys(queue)
    bodies = client.hmget(messages, [claim.message_id for claim in old])
    stuck = []
    for claim, body in zip(old, bodies, strict=True):
        limit = _limit_ms(broker, body)
        if limit is None:
            continue
        threshold = limit + margin_ms
        idle_since = progress.get(claim.consumer, first_seen[claim.field])
        if now_ms - first_seen[claim.field] > threshold and now_ms - idle_since > threshold:
            stuck.append(claim)
    return stuck


def _requeue(client: Any, queue: str, stuck: list[Claim]) -> int:
    base, messages = _queue_keys(queue)
    moved = 0
    by_consumer: dict[str, list[str]] = {}
    for claim in stuck:
        by_consumer.setdefault(claim.consumer, []).append(claim.message_id)
    for consumer, ids in by_consumer.items():
        moved += int(client.eval(_REQUEUE, 3, _acks_key(consumer, queue), base, messages, *ids))
    return moved


class ClaimWatchdog(Middleware):
    """Publishes this process's progress; sweeps for stuck consumers while it holds the lease."""

    def __init__(self, queues: Iterable[str], registry: CollectorRegistry) -> None:
        self._queues = list(queues)
        self.requeued = Counter(
            "recomengine_messages_requeued_from_stuck_consumers",
            "Messages this process's sweeps took back from consumers that stopped progressing",
            ["queue"],
            registry=registry,
        )
        self._last_progress = time.time() * 1000
        self._stop = threading.Event()

    def _progressed(self, *_: Any, **__: Any) -> None:
        self._last_progress = time.time() * 1000

    before_process_message = _progressed
    after_process_message = _progressed
    after_skip_message = _progressed

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Register this process, start publishing and sweeping."""
        about = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": sorted(q for q in worker.consumers if not q.endswith(".DQ")),
            "threads": worker.worker_threads,
            "startedAt": datetime.now(UTC).isoformat(),
        }
        try:
            broker.client.hset(WORKERS_KEY, broker.broker_id, json.dumps(about))  # type: ignore[attr-defined]
        except Exception:  # Redis away at boot: the console misses this process for now
            log.warning("could not register the worker process", exc_info=True)
        thread = threading.Thread(target=self._run, args=(broker,), name="watchdog", daemon=True)
        thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Stop, and take this process out of the progress table."""
        self._stop.set()
        try:
            client = broker.client  # type: ignore[attr-defined]
            client.hdel(PROGRESS_KEY, broker.broker_id)  # type: ignore[attr-defined]
            client.hdel(WORKERS_KEY, broker.broker_id)  # type: ignore[attr-defined]
        except Exception:  # shutting down while Redis is away: the entry only goes stale
            log.debug("could not remove the progress entry", exc_info=True)

    def _run(self, broker: Any) -> None:
        settings = get_settings()
        interval = settings.watchdog_interval_seconds
        while not self._stop.wait(interval):
            try:
                self._tick(broker, interval, settings.watchdog_margin_seconds * 1000)
            except Exception:  # Redis away: the next tick tries again
                log.warning("watchdog sweep failed", exc_info=True)

    def _tick(self, broker: Any, interval: float, margin_ms: float) -> None:
        client = broker.client
        client.hset(PROGRESS_KEY, broker.broker_id, self._last_progress)
        lease_ms = int(interval * 2000)
        if not client.set(LEASE_KEY, broker.broker_id, nx=True, px=lease_ms):
            if client.get(LEASE_KEY) != broker.broker_id.encode():
                return
            client.pexpire(LEASE_KEY, lease_ms)
        requeued = sweep(
            client,
            broker,
            queues=self._queues,
            heartbeat_timeout_ms=broker.heartbeat_timeout,
            margin_ms=margin_ms,
        )
        for queue, moved in requeued.items():
            self.requeued.labels(queue.removesuffix(".DQ")).inc(moved)
