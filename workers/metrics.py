"""Prometheus metrics of the queues (depth, lag, dead letters) and of the workers (processed and
failed messages, processing time). A pool's parent serves them for all its worker processes on
one loopback port (prometheus-client's multiprocess mode); the api serves the queue metrics at
GET /metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.watchdog import REQUEUED_KEY, claims_key

log = logging.getLogger("recomengine.metrics")

NAMESPACE = "dramatiq"
# How many ports from the configured one a pool tries (further pools on one machine).
METRICS_PORTS_TO_TRY = 32


@dataclass(frozen=True)
class QueueStats:
    """How one queue stands right now."""

    queue: str
    ready: int
    unacked: int
    delayed: int
    dead: int
    lag_seconds: float
    # Age of the oldest message a consumer has fetched and not acked, as the claim watchdog
    # first saw it (workers.watchdog); messages it took back from stuck consumers so far.
    oldest_claimed_seconds: float = 0.0
    requeued_from_stuck: int = 0


def _keys(queue: str) -> tuple[str, str, str, str, str]:
    base = f"{NAMESPACE}:{queue}"
    return base, f"{base}.msgs", f"{base}.DQ", f"{base}.DQ.msgs", f"{base}.XQ"


def _stats(queue: str, raw: list[Any], oldest: bytes | None, now: float) -> QueueStats:
    ready, pending, delayed, dead, requeued = (int(v or 0) for v in raw[:5])
    claimed_since = [float(seen) for seen in raw[5]]
    lag = 0.0
    if oldest is not None:
        # Age of the oldest waiting message: what a new event waits before a worker sees it.
        lag = max(0.0, now - Message.decode(oldest).message_timestamp / 1000)
    oldest_claimed = max(0.0, now - min(claimed_since) / 1000) if claimed_since else 0.0
    return QueueStats(
        queue, ready, max(0, pending - ready), delayed, dead, lag, oldest_claimed, requeued
    )


def _read(pipe: Any, queue: str) -> None:
    base, msgs, delayed, _, dead = _keys(queue)
    pipe.llen(base).hlen(msgs).llen(delayed).zcard(dead).hget(REQUEUED_KEY, queue)
    pipe.hvals(claims_key(queue)).lindex(base, 0)


def queue_stats(client: Any, queues: Iterable[str]) -> list[QueueStats]:
    """Depth, delayed, dead and lag of each queue, read with a synchronous Redis client."""
    found = []
    for queue in queues:
        _, msgs, *_ = _keys(queue)
        pipe = client.pipeline(transaction=False)
        _read(pipe, queue)
        *raw, head = pipe.execute()
        oldest = client.hget(msgs, head) if head is not None else None
        found.append(_stats(queue, raw, oldest, time.time()))
    return found


async def queue_stats_async(client: Any, queues: Iterable[str]) -> list[QueueStats]:
    """The same as `queue_stats`, with an asyncio Redis client."""
    found = []
    for queue in queues:
        _, msgs, *_ = _keys(queue)
        async with client.pipeline(transaction=False) as pipe:
            _read(pipe, queue)
            *raw, head = await pipe.execute()
        oldest = await client.hget(msgs, head) if head is not None else None
        found.append(_stats(queue, raw, oldest, time.time()))
    return found


def queue_families(stats: Iterable[QueueStats]) -> list[GaugeMetricFamily]:
    """Prometheus gauges of queue stats."""
    families = {
        "ready": GaugeMetricFamily(
            "recomengine_queue_depth", "Messages waiting on the queue", labels=["queue"]
        ),
        "unacked": GaugeMetricFamily(
            "recomengine_queue_in_progress",
            "Messages taken by workers, not acked",
            labels=["queue"],
        ),
        "delayed": GaugeMetricFamily(
            "recomengine_queue_delayed", "Messages waiting for a retry", labels=["queue"]
        ),
        "dead": GaugeMetricFamily(
            "recomengine_queue_dead_letters", "Messages in the dead-letter queue", labels=["queue"]
        ),
        "lag_seconds": GaugeMetricFamily(
            "recomengine_queue_lag_seconds", "Age of the oldest waiting message", labels=["queue"]
        ),
        "oldest_claimed_seconds": GaugeMetricFamily(
            "recomengine_queue_oldest_claimed_seconds",
            "Age of the oldest message fetched by a consumer and not acked",
            labels=["queue"],
        ),
        "requeued_from_stuck": GaugeMetricFamily(
            "recomengine_queue_requeued_from_stuck",
            "Messages taken back from consumers that stopped progressing (all pools, so far)",
            labels=["queue"],
        ),
    }
    for item in stats:
        for name, family in families.items():
            family.add_metric([item.queue], getattr(item, name))
    return list(families.values())


class QueueCollector(Collector):
    """Collects queue gauges from the broker's Redis at scrape time."""

    def __init__(self, client: Any, queues: Iterable[str]) -> None:
        self._client = client
        self._queues = list(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current gauges (none when Redis cannot be read)."""
        try:
            yield from queue_families(queue_stats(self._client, self._queues))
        except Exception:  # a scrape must not fail because the broker blinked
            log.warning("could not read queue stats", exc_info=True)


class WorkerMetrics(Middleware):
    """Counts processed and failed messages per queue and actor and times them (in each worker
    process; the pool's parent serves the sums, see serve_pool_metrics)."""

    def __init__(self, queues: Iterable[str], registry: CollectorRegistry) -> None:
        self.registry = registry
        self._queues = list(queues)
        self.processed = Counter(
            "recomengine_messages_processed",
            "Messages processed successfully",
            ["queue", "actor"],
            registry=self.registry,
        )
        self.failed = Counter(
            "recomengine_messages_failed",
            "Messages whose processing raised",
            ["queue", "actor"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "recomengine_message_seconds",
            "Processing time",
            ["queue", "actor"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
        )
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Remember when the message started."""
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Count and time the message."""
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, None)
        if started is not None:
            self.seconds.labels(*labels).observe(time.perf_counter() - started)
        (self.failed if exception is not None else self.processed).labels(*labels).inc()

    after_skip_message = after_process_message


def serve_pool_metrics(
    *, queues: Iterable[str], broker_url: str, host: str, port: int
) -> int | None:
    """In a pool's parent: serve the sums of its worker processes' metrics (written to
    PROMETHEUS_MULTIPROC_DIR, which must be set before they start) and the queue gauges on the
    first free port from `port`; returns the port, or None when none was free."""
    from prometheus_client import multiprocess
    from redis import Redis

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(QueueCollector(Redis.from_url(broker_url, socket_timeout=2), queues))
    for candidate in range(port, port + METRICS_PORTS_TO_TRY):
        try:
            start_http_server(candidate, addr=host, registry=registry)
        except OSError:
            continue
        log.info("worker pool metrics on %s:%d", host, candidate)
        return candidate
    log.warning("no free port for the worker pool's metrics from %d", port)
    return None
