"""Ingestion actor: store a message's events once, then count, project and attribute them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import dramatiq
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.event_message import (
    EVENT_MESSAGE_VERSION,
    EventMessage,
    MalformedMessage,
    MessageEvent,
)
from store.answers import TRENDING_REWRITE_SECONDS, AnswerProjector
from store.event_queue import BULK_QUEUE, LIVE_QUEUE
from store.events import ingest_and_project
from store.models import ServingReader
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool, redis_client

log = logging.getLogger("recomengine.ingest")

MAX_RETRIES = 4
# While PostgreSQL or Redis is down a message is retried this many times (about 8 hours at the
# 30 s backoff cap) instead of being dead-lettered: an outage must not lose accepted events.
MAX_OUTAGE_RETRIES = 1000

# Messages of one tenant that arrive while a store of that tenant runs are stored together: one
# transaction, one attribution query and one projections script for all of them. A group is
# capped so that the projections script (which blocks Redis while it runs) stays short.
MAX_GROUP_EVENTS = 400
# Groups stored at once by one worker process: one overlaps its PostgreSQL wait with the
# Python and Redis work of another; more would only make smaller groups.
GROUPS_IN_FLIGHT = 2
# A second group starts beside a running one only when this many events wait: a trickle of
# small messages (coalesced single events) then waits for the running group and joins the
# next, larger one, which costs a transaction and a script per group instead of per message.
OVERLAP_MIN_EVENTS = 100
# A message that finds the process idle waits this long for others before its group starts,
# unless the overlap threshold is reached first: a few milliseconds more between accepting an
# event and storing it, for groups several times larger when single events trickle in.
LINGER_SECONDS = 0.005


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


Store = Callable[[str, list[MessageEvent]], Awaitable[Any]]
_Waiting = tuple[list[MessageEvent], "asyncio.Future[None]"]


class IngestGroups:
    """Stores the messages of one event loop in groups per tenant: a message waits while the
    process already stores a group (or `in_flight` groups, when `overlap_min_events` wait), or
    for `linger` seconds when it finds the process idle, and joins the messages of its tenant
    that wait with it. Each `submit` returns once its events are stored and projected (the
    message may then be acknowledged) or raises what storing them raised.

    A group that fails for another reason than an outage is stored again message by message,
    so that one poison message fails alone instead of taking its group with it.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_events: int = MAX_GROUP_EVENTS,
        in_flight: int = GROUPS_IN_FLIGHT,
        overlap_min_events: int = OVERLAP_MIN_EVENTS,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._store = store
        self._max_events = max_events
        self._in_flight = in_flight
        self._overlap_min_events = overlap_min_events
        self._linger = linger
        self._lingering: asyncio.TimerHandle | None = None
        self._running = 0
        self._waiting: dict[str, list[_Waiting]] = {}
        self._waiting_events = 0

    async def submit(self, tenant_id: str, events: list[MessageEvent]) -> None:
        """Store and project `events` of the tenant, in a group with other waiting messages."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        idle = self._running == 0 and not self._waiting
        self._waiting.setdefault(tenant_id, []).append((events, future))
        self._waiting_events += len(events)
        if self._waiting_events >= self._overlap_min_events or not (idle or self._lingering):
            self._start_next()
        elif idle and self._linger > 0:
            self._lingering = loop.call_later(self._linger, self._start_next)
        elif idle:
            self._start_next()
        await future

    def _start_next(self) -> None:
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        while self._waiting and (
            self._running == 0
            or (
                self._running < self._in_flight and self._waiting_events >= self._overlap_min_events
            )
        ):
            # The tenant waiting longest first (dicts keep insertion order).
            tenant_id = next(iter(self._waiting))
            waiting = self._waiting[tenant_id]
            taken, size = 0, 0
            while taken < len(waiting) and (
                taken == 0 or size + len(waiting[taken][0]) <= self._max_events
            ):
                size += len(waiting[taken][0])
                taken += 1
            group, rest = waiting[:taken], waiting[taken:]
            self._waiting_events -= size
            if rest:
                # Re-inserted at the end: other tenants' messages go before the rest.
                del self._waiting[tenant_id]
                self._waiting[tenant_id] = rest
            else:
                del self._waiting[tenant_id]
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._run(tenant_id, group))
            task.add_done_callback(self._finished)

    def _finished(self, _: asyncio.Task[None]) -> None:
        self._running -= 1
        self._start_next()

    async def _run(self, tenant_id: str, group: list[_Waiting]) -> None:
        live = [(events, future) for events, future in group if not future.done()]
        if not live:
            return
        try:
            await self._store(tenant_id, [e for events, _ in live for e in events])
        except Exception as exc:
            if len(live) == 1 or _is_outage(exc):
                for _, future in live:
                    _settle(future, exc)
                return
            log.warning(
                "a group of %d messages failed (%r); storing them one by one", len(live), exc
            )
            for events, future in live:
                try:
                    await self._store(tenant_id, events)
                except Exception as alone:
                    _settle(future, alone)
                else:
                    _settle(future, None)
        except BaseException as exc:
            for _, future in live:
                _settle(future, exc)
            raise
        else:
            for _, future in live:
                _settle(future, None)


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():  # its message gave up waiting (a time limit, a shutdown)
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


# One grouping per event loop: Dramatiq runs every async actor of a worker process on one loop.
_groups: dict[asyncio.AbstractEventLoop, IngestGroups] = {}


class ReaderProjections:
    """Rewrites the projected answers of users whose events were just stored, after their
    message is acknowledged: users of one tenant that arrive while a run goes are coalesced
    into the next run (a debounce per user as long as the one before). The tenant's trending
    list is rewritten beside them, at most every TRENDING_REWRITE_SECONDS (the lookup serves
    it up to TRENDING_LAG_SECONDS behind the live counters): its wait never holds back the
    users' answers, which must follow their events within the freshness promised for them."""

    def __init__(self) -> None:
        self._pending: dict[str, set[str]] = {}
        self._running: set[str] = set()
        self._trending_due: set[str] = set()
        self._trending_running: set[str] = set()
        self._trending_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def touch(self, tenant_id: str, user_ids: set[str]) -> None:
        """Project these users' answers again, soon, and the tenant's trending list."""
        self._pending.setdefault(tenant_id, set()).update(user_ids)
        if tenant_id not in self._running:
            self._running.add(tenant_id)
            self._spawn(self._drain(tenant_id))
        self._trending_due.add(tenant_id)
        if tenant_id not in self._trending_running:
            self._trending_running.add(tenant_id)
            self._spawn(self._rewrite_trending(tenant_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Held until done: the loop keeps only a weak reference to its tasks.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _projector(self) -> AnswerProjector:
        redis = redis_client()
        return AnswerProjector(redis, ServingReader(redis))

    async def _drain(self, tenant_id: str) -> None:
        try:
            projector = self._projector()
            while users := self._pending.pop(tenant_id, None):
                await projector.reproject_readers(tenant_id=tenant_id, user_ids=sorted(users))
        except Exception:
            # A projection left stale only sends its next request to the ranking.
            log.warning("projected answers could not be rewritten", exc_info=True)
        finally:
            self._running.discard(tenant_id)

    async def _rewrite_trending(self, tenant_id: str) -> None:
        try:
            projector = self._projector()
            while tenant_id in self._trending_due:
                wait = self._trending_at.get(tenant_id, 0.0) + TRENDING_REWRITE_SECONDS
                wait -= time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the last events' trending, a little later
                self._trending_due.discard(tenant_id)
                self._trending_at[tenant_id] = time.monotonic()
                await projector.project_trending(tenant_id=tenant_id)
        except Exception:
            log.warning("the trending projection could not be rewritten", exc_info=True)
        finally:
            self._trending_running.discard(tenant_id)


_projections: dict[asyncio.AbstractEventLoop, ReaderProjections] = {}


async def _store(tenant_id: str, events: list[MessageEvent]) -> None:
    await ingest_and_project(await db_pool(), redis_client(), tenant_id=tenant_id, events=events)
    loop = asyncio.get_running_loop()
    projections = _projections.get(loop) or _projections.setdefault(loop, ReaderProjections())
    projections.touch(tenant_id, {event["user"] for event in events})


def _groups_of_this_loop() -> IngestGroups:
    loop = asyncio.get_running_loop()
    groups = _groups.get(loop)
    if groups is None:
        for stale in [other for other in _groups if other.is_closed()]:
            del _groups[stale]
        groups = _groups[loop] = IngestGroups(_store)
    return groups


_OPTIONS: dict[str, Any] = {
    "max_retries": MAX_RETRIES,
    "retry_when": retry_ingest,
    "throws": (MalformedMessage,),
    "time_limit": 60_000,
    "min_backoff": 500,
    "max_backoff": 30_000,
}


async def _ingest(tenant_id: str, events: Any, version: Any) -> None:
    message = EventMessage.read(tenant_id, events, version)
    # Returns nothing: Dramatiq logs a warning for every message whose actor returns a value
    # without a results backend, which cost the worker a log line per message.
    await _groups_of_this_loop().submit(message.tenant_id, message.events)


@dramatiq.actor(queue_name=LIVE_QUEUE, **_OPTIONS)
async def ingest_events(
    tenant_id: str, events: list[dict[str, Any]], version: int = EVENT_MESSAGE_VERSION
) -> None:
    """Store the tenant's events (dedupe), then apply their side effects at most once each:
    the live lane (single events, small batches)."""
    await _ingest(tenant_id, events, version)


@dramatiq.actor(queue_name=BULK_QUEUE, **_OPTIONS)
async def ingest_bulk_events(
    tenant_id: str, events: list[dict[str, Any]], version: int = EVENT_MESSAGE_VERSION
) -> None:
    """The same for the bulk lane (large batches, replays), served by pools of its own."""
    await _ingest(tenant_id, events, version)
