"""HTTP routes of the events area: ingestion (API key) and the event viewer (admin)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field
from redis.exceptions import RedisError
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json, raw

from api.openapi import document
from api.security import owned_tenant, require_admin, require_api_key
from api.validation import ApiModel, parse_query, read_json
from domain.errors import FieldError, Unavailable, ValidationFailed
from domain.events import (
    EVENT_TYPES,
    WARNING_UNKNOWN_PRODUCT,
    Event,
    batch_items,
    check_event,
    parse_event,
)
from store.events import decode_cursor, encode_cursor, list_events, precheck
from workers.broker import QUEUES
from workers.metrics import queue_families, queue_stats_async

bp = Blueprint("events", url_prefix="/api/v1")
# Prometheus scrapes /metrics at the root, outside the versioned api.
metrics_bp = Blueprint("queue_metrics")

# Single events of a tenant share one queue message: one message (and one worker transaction)
# per event caps a worker near 1,000 events/s. They wait for the pre-check of the tenant's
# previous message rather than for a fixed window: the clients of one busy moment go together,
# and nobody waits when nothing is being sent.
COALESCE_SECONDS = 0.0
COALESCE_IN_FLIGHT = 1
COALESCE_MAX_EVENTS = 100


class EventCreate(ApiModel):
    """One behavioural event."""

    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    user_id: str = Field(min_length=1, max_length=256)
    product_id: str = Field(min_length=1, max_length=256)
    timestamp: datetime | None = None
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, Any] | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=128)


class EventBatchCreate(ApiModel):
    """Up to 100 events."""

    events: list[EventCreate] = Field(min_length=1, max_length=100)


class EventAccepted(ApiModel):
    """The answer to one posted event."""

    status: Literal["accepted", "duplicate"]
    event_id: str
    warnings: list[str] = []


class BatchItemResult(ApiModel):
    """What happened to one event of a batch."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    warnings: list[str] | None = None
    errors: list[dict[str, str]] | None = None


class EventBatchResult(ApiModel):
    """The answer to a batch."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItemResult]


class EventQuery(ApiModel):
    """Filters and page of the event viewer."""

    event_type: Literal[EVENT_TYPES] | None = None  # type: ignore[valid-type]
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    product_id: str | None = Field(default=None, min_length=1, max_length=256)
    since: datetime | None = Field(default=None, alias="from")
    until: datetime | None = Field(default=None, alias="to")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=512)


class EventRead(ApiModel):
    """One stored event."""

    event_id: str
    event_type: str
    user_id: str
    product_id: str
    session_id: str | None
    metadata: dict[str, Any]
    flags: list[str]
    timestamp: datetime
    received_at: datetime


class EventPage(ApiModel):
    """A page of events, newest first."""

    items: list[EventRead]
    next_cursor: str | None


Send = Callable[[str, list[dict[str, Any]]], Coroutine[Any, Any, None]]
# Pre-checks events of one tenant: their queue messages (warning flags added) and whether each
# was ingested before.
Screen = Callable[[str, list[Event]], Coroutine[Any, Any, tuple[list[dict[str, Any]], list[bool]]]]


class _Pending:
    def __init__(self) -> None:
        self.events: list[Event] = []
        # One future per waiting request: a request that goes away (cancelled) takes only its
        # own future with it.
        self.waiters: list[asyncio.Future[tuple[bool, dict[str, Any]]]] = []


def _mark_repeats(duplicates: list[bool], events: list[Event]) -> None:
    """Mark as duplicates the events that repeat an earlier one of the same request or window
    (in place)."""
    in_batch: set[str] = set()
    for index, event in enumerate(events):
        if event.digest in in_batch or event.event_id in in_batch:
            duplicates[index] = True
        in_batch.update((event.digest, event.event_id))


class IngestEnqueuer:
    """Puts events on the ingest queue: a batch as one message, single events coalesced per
    tenant (one pre-check and one message for all of them). Every call returns only once the
    broker holds its events.

    Single events of a tenant wait while `in_flight` messages of that tenant are being
    pre-checked, and go together as soon as one is (its enqueue overlaps their pre-check):
    under load a message carries what came in during one pre-check, when idle an event goes at
    once. `window` adds a fixed wait before a tenant's first message (0: none beyond the
    current loop iteration).
    """

    def __init__(
        self,
        send: Send,
        screen: Screen,
        *,
        window: float = COALESCE_SECONDS,
        in_flight: int = COALESCE_IN_FLIGHT,
    ) -> None:
        self._send = send
        self._screen = screen
        self._window = window
        self._in_flight = in_flight
        self._pending: dict[str, _Pending] = {}
        self._sending: dict[str, int] = {}

    async def enqueue_batch(self, tenant_id: str, events: list[dict[str, Any]]) -> None:
        """One message for the batch."""
        await self._send(tenant_id, events)

    async def enqueue_one(self, tenant_id: str, event: Event) -> tuple[bool, dict[str, Any]]:
        """Join the tenant's pending events; whether the event was a duplicate, and its
        message (with warning flags)."""
        loop = asyncio.get_running_loop()
        pending = self._pending.get(tenant_id)
        if pending is None:
            pending = self._pending[tenant_id] = _Pending()
            if self._sending.get(tenant_id, 0) < self._in_flight:
                if self._window > 0:
                    loop.call_later(self._window, self._flush, tenant_id, pending)
                else:
                    loop.call_soon(self._flush, tenant_id, pending)
            # else: sent when one of the tenant's messages on their way arrives.
        waiter: asyncio.Future[tuple[bool, dict[str, Any]]] = loop.create_future()
        pending.events.append(event)
        pending.waiters.append(waiter)
        if len(pending.events) >= COALESCE_MAX_EVENTS:
            self._flush(tenant_id, pending)
        return await waiter

    def _flush(self, tenant_id: str, pending: _Pending) -> None:
        if self._pending.get(tenant_id) is not pending:
            return  # already sent (it filled up, or a message before it arrived)
        del self._pending[tenant_id]
        self._sending[tenant_id] = self._sending.get(tenant_id, 0) + 1
        released = False

        def release() -> None:
            # The next events of the tenant may be pre-checked while these are enqueued.
            nonlocal released
            if released:
                return
            released = True
            left = self._sending.pop(tenant_id) - 1
            if left:
                self._sending[tenant_id] = left
            waiting = self._pending.get(tenant_id)
            if waiting is not None:
                self._flush(tenant_id, waiting)

        task = asyncio.get_running_loop().create_task(
            self._deliver(tenant_id, pending.events, release)
        )

        def settle(done: asyncio.Task[list[tuple[bool, dict[str, Any]]]]) -> None:
            release()
            failure = (
                Unavailable("The event queue is unavailable.")
                if done.cancelled()
                else done.exception()
            )
            answers = done.result() if failure is None else []
            for index, waiter in enumerate(pending.waiters):
                if waiter.done():
                    continue
                if failure is None:
                    waiter.set_result(answers[index])
                else:
                    waiter.set_exception(failure)

        task.add_done_callback(settle)

    async def _deliver(
        self, tenant_id: str, events: list[Event], screened: Callable[[], None]
    ) -> list[tuple[bool, dict[str, Any]]]:
        messages, duplicates = await self._screen(tenant_id, events)
        screened()
        _mark_repeats(duplicates, events)
        fresh = [m for m, duplicate in zip(messages, duplicates, strict=True) if not duplicate]
        if fresh:
            await self._send(tenant_id, fresh)
        return list(zip(duplicates, messages, strict=True))


@bp.before_server_start
async def build_enqueuer(app: Sanic) -> None:
    """The process's enqueuer, writing Dramatiq messages to the broker without blocking."""
    from workers.actors.ingest import ingest_events
    from workers.broker import enqueue_async

    async def send(tenant_id: str, events: list[dict[str, Any]]) -> None:
        try:
            await enqueue_async(app.ctx.broker_redis, ingest_events.message(tenant_id, events))
        except (RedisError, OSError) as exc:
            raise Unavailable("The event queue is unavailable; retry shortly.") from exc

    async def screen(
        tenant_id: str, events: list[Event]
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        return await _screen(app.ctx.redis, tenant_id, events)

    app.ctx.ingest = IngestEnqueuer(send, screen)


async def _screen(
    redis: Any, tenant_id: str, events: list[Event]
) -> tuple[list[dict[str, Any]], list[bool]]:
    """The queue message of each event with its warning flags, and whether it was already
    ingested (fast Redis pre-check)."""
    try:
        found = await precheck(
            redis,
            tenant_id=tenant_id,
            product_ids=[e.product_id for e in events],
            digests=[(e.digest, e.occurred_at) for e in events],
            client_ids=[e.event_id for e in events if e.client_event_id],
        )
    except (RedisError, OSError) as exc:
        raise Unavailable("Event ingestion is unavailable; retry shortly.") from exc
    client_seen = iter(found.seen_client_id)
    duplicate = []
    messages = []
    for event, is_known, is_seen in zip(events, found.known_product, found.seen, strict=True):
        by_client = next(client_seen) if event.client_event_id else False
        duplicate.append(is_seen or by_client)
        message = event.to_message()
        # Flagging the message, not the frozen event, spares a dataclass copy per event.
        if not is_known and WARNING_UNKNOWN_PRODUCT not in message["flags"]:
            message["flags"].append(WARNING_UNKNOWN_PRODUCT)
        messages.append(message)
    return messages, duplicate


@bp.post("/events")
@document(
    summary="Ingest one event",
    tags=["events"],
    body=EventCreate,
    responses={202: EventAccepted, 200: EventAccepted},
    security="apiKey",
)
@require_api_key(write=True)
async def post_event(request: Request) -> HTTPResponse:
    """Validate one event and queue it; 200 `duplicate` when it was ingested before."""
    event = parse_event(read_json(request), tenant_id=request.ctx.tenant_id, now=datetime.now(UTC))
    duplicate, message = await request.app.ctx.ingest.enqueue_one(request.ctx.tenant_id, event)
    if duplicate:
        return json({"status": "duplicate", "eventId": event.event_id}, status=200)
    return json(
        {"status": "accepted", "eventId": event.event_id, "warnings": list(message["flags"])},
        status=202,
    )


@bp.post("/events/batch")
@document(
    summary="Ingest up to 100 events",
    tags=["events"],
    body=EventBatchCreate,
    responses={202: EventBatchResult},
    security="apiKey",
)
@require_api_key(write=True)
async def post_event_batch(request: Request) -> HTTPResponse:
    """Validate each event, queue the valid new ones as one message, report per event."""
    items = batch_items(read_json(request))
    now = datetime.now(UTC)
    results: list[dict[str, Any]] = [{} for _ in items]
    valid: list[tuple[int, Event]] = []
    for index, item in enumerate(items):
        event, errors = check_event(item, tenant_id=request.ctx.tenant_id, now=now)
        if event is None:
            results[index] = {
                "index": index,
                "status": "rejected",
                "errors": [{"field": e.field, "message": e.message} for e in errors],
            }
        else:
            valid.append((index, event))
    to_send: list[dict[str, Any]] = []
    if valid:
        screened = [event for _, event in valid]
        messages, duplicates = await _screen(request.app.ctx.redis, request.ctx.tenant_id, screened)
        # The same event twice in one batch is a duplicate of itself.
        _mark_repeats(duplicates, screened)
        for (index, event), message, duplicate in zip(valid, messages, duplicates, strict=True):
            if duplicate:
                results[index] = {"index": index, "status": "duplicate", "eventId": event.event_id}
                continue
            results[index] = {
                "index": index,
                "status": "accepted",
                "eventId": event.event_id,
                "warnings": list(message["flags"]),
            }
            to_send.append(message)
    if to_send:
        await request.app.ctx.ingest.enqueue_batch(request.ctx.tenant_id, to_send)
    counts = {status: 0 for status in ("accepted", "duplicate", "rejected")}
    for result in results:
        counts[result["status"]] += 1
    return json(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        },
        status=202,
    )


@bp.get("/tenants/<tenant_id:str>/events")
@document(
    summary="Browse a tenant's events, newest first",
    tags=["events"],
    query=EventQuery,
    responses={200: EventPage},
    security="bearer",
)
@require_admin
async def browse_events(request: Request, tenant_id: str) -> HTTPResponse:
    """One page of the tenant's events matching the filters."""
    tenant = await owned_tenant(request, tenant_id)
    query = parse_query(request, EventQuery)
    after = None
    if query.cursor is not None:
        after = decode_cursor(query.cursor)
        if after is None:
            raise ValidationFailed(
                "The cursor is not valid.", errors=[FieldError("cursor", "Not a valid cursor")]
            )
    for name, moment in (("from", query.since), ("to", query.until)):
        if moment is not None and moment.tzinfo is None:
            raise ValidationFailed(
                "Times need a time zone.", errors=[FieldError(name, "Must include an offset")]
            )
    rows = await list_events(
        request.app.ctx.db,
        tenant_id=str(tenant["id"]),
        event_type=query.event_type,
        user_id=query.user_id,
        product_id=query.product_id,
        since=query.since,
        until=query.until,
        after=after,
        limit=query.limit + 1,
    )
    page = rows[: query.limit]
    next_cursor = (
        encode_cursor(page[-1]["occurred_at"], page[-1]["event_id"])
        if len(rows) > query.limit
        else None
    )
    items = [
        {
            "eventId": r["event_id"],
            "eventType": r["event_type"],
            "userId": r["user_id"],
            "productId": r["product_id"],
            "sessionId": r["session_id"],
            "metadata": r["metadata"],
            "flags": list(r["flags"]),
            "timestamp": r["occurred_at"].isoformat(),
            "receivedAt": r["received_at"].isoformat(),
        }
        for r in page
    ]
    return json({"items": items, "nextCursor": next_cursor})


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


@metrics_bp.get("/metrics")
@document(
    summary="Queue depth, lag and dead letters (Prometheus text format)",
    tags=["operations"],
    responses={200: None},
    content_type="text/plain",
)
async def queue_metrics(request: Request) -> HTTPResponse:
    """Prometheus gauges of every queue, read from the broker."""
    try:
        stats = await queue_stats_async(request.app.ctx.broker_redis, QUEUES)
    except (RedisError, OSError) as exc:
        raise Unavailable("The broker cannot be read.") from exc
    registry = CollectorRegistry()
    registry.register(_Families(queue_families(stats)))
    return raw(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
