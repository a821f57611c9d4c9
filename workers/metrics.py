"""Prometheus metrics of the queues (depth, lag, dead letters) and of the workers (processed and
failed messages, processing time). A pool's parent serves them for all its worker processes on
one loopback port (prometheus-client's multiprocess mode); the api serves the queue metrics at
GET /metrics.

Every worker process also adds its processed and failed messages to per-minute counters in the
broker's Redis (one hash per minute, a field per queue and outcome, kept two hours), so the
operators' console shows each queue's throughput summed over every worker host."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from store.event_queue import LANES, TenantBacklog, lane_backlogs, lane_backlogs_async
from workers.watchdog import REQUEUED_KEY, claims_key

log = logging.getLogger("recomengine.metrics")

NAMESPACE = "dramatiq"
# How many ports from the configured one a pool tries (further pools on one machine).
METRICS_PORTS_TO_TRY = 32
# Per-minute throughput counters: how many minutes the console shows, how long a minute's hash
# lives (past the hour shown, with room for clocks of worker hosts that disagree a little), and
# how often a worker process adds what it counted (one pipeline a second, none when idle,
# instead of a round trip per message on the latency-sensitive ingest path).
THROUGHPUT_MINUTES = 60
THROUGHPUT_TTL_SECONDS = 2 * 3600
THROUGHPUT_FLUSH_SECONDS = 1.0
OUTCOMES = ("processed", "failed")


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


def throughput_key(minute: int) -> str:
    """The hash of one minute's counts (minutes since the epoch), fields `<queue>:<outcome>`."""
    return f"recomengine:throughput:{minute}"


@dataclass(frozen=True)
class QueueThroughput:
    """Messages one queue's workers processed and failed per minute over the last hour."""

    queue: str
    # Minutes since the epoch, oldest first; the last is the current, unfinished minute.
    minutes: list[int]
    processed: list[int]
    failed: list[int]
    processed_per_minute: float
    failed_per_minute: float


def recent_rate(per_minute: list[int], *, elapsed: float) -> float:
    """Messages in about the last 60 seconds: all of the current minute's, plus the share of
    the previous minute's that falls in the window (`elapsed` is the fraction of the current
    minute gone, 0..1), as sliding-window rate limiters estimate it."""
    if not per_minute:
        return 0.0
    previous = per_minute[-2] if len(per_minute) > 1 else 0
    return per_minute[-1] + previous * (1.0 - min(1.0, max(0.0, elapsed)))


def _throughput(
    queues: Iterable[str], first: int, rows: list[dict[bytes, bytes]], now: float
) -> list[QueueThroughput]:
    minutes = list(range(first, first + len(rows)))
    elapsed = (now % 60) / 60
    found = []
    for queue in queues:
        counts = {
            outcome: [int(row.get(f"{queue}:{outcome}".encode(), 0)) for row in rows]
            for outcome in OUTCOMES
        }
        found.append(
            QueueThroughput(
                queue,
                minutes,
                counts["processed"],
                counts["failed"],
                round(recent_rate(counts["processed"], elapsed=elapsed), 2),
                round(recent_rate(counts["failed"], elapsed=elapsed), 2),
            )
        )
    return found


async def queue_throughput_async(
    client: Any, queues: Iterable[str], *, now: float | None = None
) -> list[QueueThroughput]:
    """Each queue's processed and failed messages per minute over the last hour, every worker
    host summed, read in one round trip with an asyncio Redis client."""
    now = time.time() if now is None else now
    first = int(now // 60) - THROUGHPUT_MINUTES + 1
    async with client.pipeline(transaction=False) as pipe:
        for minute in range(first, first + THROUGHPUT_MINUTES):
            pipe.hgetall(throughput_key(minute))
        rows = await pipe.execute()
    return _throughput(queues, first, rows, now)


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


def _with_lanes(stats: QueueStats, backlogs: list[TenantBacklog]) -> QueueStats:
    """A lane's stats counting its tenants' sub-queues (store.event_queue) as waiting."""
    mine = [b for b in backlogs if b.queue == stats.queue]
    if not mine:
        return stats
    waiting = sum(b.messages for b in mine)
    return replace(
        stats,
        ready=stats.ready + waiting,
        unacked=max(0, stats.unacked - waiting),
        lag_seconds=max(stats.lag_seconds, *(b.oldest_seconds for b in mine)),
    )


def queue_stats(client: Any, queues: Iterable[str]) -> list[QueueStats]:
    """Depth, delayed, dead and lag of each queue, read with a synchronous Redis client."""
    found = []
    queues = list(queues)
    for queue in queues:
        _, msgs, *_ = _keys(queue)
        pipe = client.pipeline(transaction=False)
        _read(pipe, queue)
        *raw, head = pipe.execute()
        oldest = client.hget(msgs, head) if head is not None else None
        found.append(_stats(queue, raw, oldest, time.time()))
    backlogs = lane_backlogs(client, tuple(q for q in queues if q in LANES))
    return [_with_lanes(stats, backlogs) for stats in found]


async def queue_stats_async(client: Any, queues: Iterable[str]) -> list[QueueStats]:
    """The same as `queue_stats`, with an asyncio Redis client."""
    found = []
    queues = list(queues)
    for queue in queues:
        _, msgs, *_ = _keys(queue)
        async with client.pipeline(transaction=False) as pipe:
            _read(pipe, queue)
            *raw, head = await pipe.execute()
        oldest = await client.hget(msgs, head) if head is not None else None
        found.append(_stats(queue, raw, oldest, time.time()))
    backlogs = await lane_backlogs_async(client, tuple(q for q in queues if q in LANES))
    return [_with_lanes(stats, backlogs) for stats in found]


def lane_families(backlogs: Iterable[TenantBacklog]) -> list[GaugeMetricFamily]:
    """Prometheus gauges of each tenant's backlog in each ingestion lane."""
    labels = ["queue", "tenant"]
    families = {
        "messages": GaugeMetricFamily(
            "recomengine_lane_backlog_messages",
            "Messages of a tenant waiting in an ingestion lane",
            labels=labels,
        ),
        "events": GaugeMetricFamily(
            "recomengine_lane_backlog_events",
            "Events of a tenant waiting in an ingestion lane",
            labels=labels,
        ),
        "oldest_seconds": GaugeMetricFamily(
            "recomengine_lane_oldest_seconds",
            "Age of a tenant's oldest message waiting in an ingestion lane",
            labels=labels,
        ),
    }
    for backlog in backlogs:
        for name, family in families.items():
            family.add_metric([backlog.queue, backlog.tenant_id], getattr(backlog, name))
    return list(families.values())


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
            lanes = tuple(q for q in self._queues if q in LANES)
            yield from lane_families(lane_backlogs(self._client, lanes))
        except Exception:  # a scrape must not fail because the broker blinked
            log.warning("could not read queue stats", exc_info=True)


class WorkerMetrics(Middleware):
    """Counts processed and failed messages per queue and actor and times them (in each worker
    process; the pool's parent serves the sums, see serve_pool_metrics), and adds the per-queue
    counts to the broker's per-minute throughput hashes."""

    def __init__(self, queues: Iterable[str], registry: CollectorRegistry) -> None:
        self.registry = registry
        self._queues = list(queues)
        # (minute, "<queue>:<outcome>") -> messages not yet added to Redis.
        self._pending: Tally[tuple[int, str]] = Tally()
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
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
        outcome = "failed" if exception is not None else "processed"
        field = f"{message.queue_name.removesuffix('.DQ')}:{outcome}"
        with self._pending_lock:
            self._pending[(int(time.time() // 60), field)] += 1

    after_skip_message = after_process_message

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Start adding this process's counts to the throughput hashes every second."""
        self._stop.clear()
        thread = threading.Thread(target=self._run, args=(broker,), name="throughput", daemon=True)
        thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Stop, adding what is left."""
        self._stop.set()
        try:
            self.flush(broker.client)  # type: ignore[attr-defined]
        except Exception:  # shutting down while Redis is away: these counts are lost
            log.debug("could not add the last throughput counts", exc_info=True)

    def _run(self, broker: Any) -> None:
        while not self._stop.wait(THROUGHPUT_FLUSH_SECONDS):
            try:
                self.flush(broker.client)
            except Exception:  # Redis away: the counts wait for the next flush
                log.warning("could not add throughput counts", exc_info=True)

    def flush(self, client: Any) -> None:
        """Add the counts taken since the last flush to Redis (kept for the next one if Redis
        refuses, except those too old to show)."""
        with self._pending_lock:
            pending, self._pending = self._pending, Tally()
        if not pending:
            return
        pipe = client.pipeline(transaction=False)
        for (minute, field), count in pending.items():
            pipe.hincrby(throughput_key(minute), field, count)
        for minute in {minute for minute, _ in pending}:
            pipe.expire(throughput_key(minute), THROUGHPUT_TTL_SECONDS)
        try:
            pipe.execute()
        except Exception:
            oldest = int(time.time() // 60) - THROUGHPUT_MINUTES
            with self._pending_lock:
                self._pending.update({k: v for k, v in pending.items() if k[0] > oldest})
            raise


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
