"""HTTP routes of the events area: ingestion (API key) and the event viewer (admin)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field
from redis.exceptions import RedisError
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json, raw

from api.blueprints.storefront import apply_server_variants
from api.event_batches import ingest_batch
from api.metrics import check_metrics_access, request_metrics
from api.openapi import METRICS_ACCESS, document
from api.security import Admission, admit_api_key, owned_tenant, require_admin, require_api_key
from api.validation import ApiModel, parse_query, read_json
from domain.errors import FieldError, Unavailable, ValidationFailed
from domain.events import (
    EVENT_TYPES,
    WARNING_UNKNOWN_PRODUCT,
    Event,
    batch_items,
    parse_event,
)
from store.events import (
    ADMITTED_SCREEN,
    QueueFrame,
    decode_cursor,
    encode_cursor,
    list_events,
    precheck,
    read_screen,
    screen_arguments,
)
from store.ratelimit import RateDecision, RateLimiter
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
    """A page of events, newest first: `data` like every other list (`items`, the same list,
    stays for the clients written before)."""

    data: list[EventRead]
    items: list[EventRead]
    next_cursor: str | None


Send = Callable[[str, list[dict[str, Any]]], Coroutine[Any, Any, None]]
# The queue message one script call fills and queues itself (None: queue with `Send`).
Frame = Callable[[str], QueueFrame]


class Answer(NamedTuple):
    """What became of one event handed to the ingest queue."""

    duplicate: bool
    message: dict[str, Any]  # its queue message, warning flags added
    # The rate-limit count of its request, when the delivery made it.
    decision: RateDecision | None = None
    # False when that count refused it, or found its key changed since it was cached: then
    # nothing was checked or queued.
    screened: bool = True


def _repeats(events: list[Event]) -> list[bool]:
    """Whether each event repeats an earlier one of the same request or message."""
    repeats = []
    before: set[str] = set()
    for event in events:
        repeats.append(event.digest in before or event.event_id in before)
        before.update((event.digest, event.event_id))
    return repeats


class QueueDelivery:
    """Pre-checks events of one tenant and queues the fresh ones as one message.

    With a `frame`, the pre-check script queues them in the same Redis call (the broker is on
    the projections' server); otherwise `send` queues them after it, in a second call. Events
    of admitted requests (see api.security.admit_api_key) are counted by `limiter` in that
    call too.
    """

    def __init__(
        self,
        redis: Any,
        *,
        limiter: RateLimiter,
        send: Send,
        frame: Frame | None,
        encode: Callable[[dict[str, Any]], bytes],
    ) -> None:
        self._redis = redis
        self._limiter = limiter
        self._send = send
        self._frame = frame
        self._encode = encode

    async def deliver(
        self,
        tenant_id: str,
        events: list[Event],
        checked: Callable[[], None] = lambda: None,
        admission: Admission | None = None,
    ) -> list[Answer]:
        """What became of each event, once the broker holds the fresh ones; `checked()` runs
        as soon as the pre-check has answered. With an `admission`, the requests of `events`
        are counted against its window first, and only those it allows are checked."""
        repeats = _repeats(events)
        messages = [event.to_message() for event in events]
        frame = self._frame(tenant_id) if self._frame else None
        bodies = []
        if frame:
            bodies = [b"" if r else self._encode(m) for m, r in zip(messages, repeats, strict=True)]
        counted = None
        try:
            if admission is None:
                found = await precheck(
                    self._redis, tenant_id=tenant_id, events=events, frame=frame, bodies=bodies
                )
            else:
                script_keys, script_args = screen_arguments(
                    tenant_id=tenant_id, events=events, frame=frame, bodies=bodies
                )
                counted = await self._limiter.count(
                    admission.window,
                    requests=len(events),
                    touch=admission.touch,
                    follow_up_keys=script_keys,
                    follow_up_args=[admission.epoch, *script_args],
                )
                found = read_screen(counted.extra or b"")
        except (RedisError, OSError) as exc:
            raise Unavailable("Event ingestion is unavailable; retry shortly.") from exc
        checked()
        answers = []
        fresh = []
        for index, (message, repeat) in enumerate(zip(messages, repeats, strict=True)):
            decision = counted.decision(index) if counted else None
            if index >= len(found.seen):
                answers.append(Answer(False, message, decision, screened=False))
                continue
            if not found.known_product[index]:
                message["flags"].append(WARNING_UNKNOWN_PRODUCT)
            duplicate = found.seen[index] or found.seen_client_id[index] or repeat
            if not duplicate:
                fresh.append(message)
            answers.append(Answer(duplicate, message, decision))
        if fresh and frame is None:
            await self._send(tenant_id, fresh)
        return answers


class _Pending:
    def __init__(self, admission: Admission | None) -> None:
        self.admission = admission
        self.events: list[Event] = []
        # One future per waiting request: a request that goes away (cancelled) takes only its
        # own future with it.
        self.waiters: list[asyncio.Future[Answer]] = []


class IngestEnqueuer:
    """Puts events on the ingest queue: a batch as one message, single events coalesced per
    tenant and admission (one pre-check and one message for all of them). Every call returns
    only once the broker holds its events.

    Single events of a group wait while `in_flight` messages of that group are being
    pre-checked, and go together as soon as one is: under load a message carries what came in
    during one pre-check, when idle an event goes at once. `window` adds a fixed wait before a
    group's first message (0: none beyond the current loop iteration).
    """

    def __init__(
        self,
        delivery: QueueDelivery,
        *,
        window: float = COALESCE_SECONDS,
        in_flight: int = COALESCE_IN_FLIGHT,
    ) -> None:
        self._delivery = delivery
        self._window = window
        self._in_flight = in_flight
        self._pending: dict[tuple[Any, ...], _Pending] = {}
        self._sending: dict[tuple[Any, ...], int] = {}

    async def enqueue_batch(self, tenant_id: str, events: list[Event]) -> list[Answer]:
        """One message for the fresh events of a batch; what became of each event."""
        return await self._delivery.deliver(tenant_id, events)

    async def enqueue_one(
        self, tenant_id: str, event: Event, admission: Admission | None = None
    ) -> Answer:
        """Join the pending events of the tenant (and admission); what became of the event."""
        loop = asyncio.get_running_loop()
        group = (tenant_id,) if admission is None else (tenant_id, *admission.group)
        pending = self._pending.get(group)
        if pending is None:
            pending = self._pending[group] = _Pending(admission)
            if self._sending.get(group, 0) < self._in_flight:
                if self._window > 0:
                    loop.call_later(self._window, self._flush, group, pending)
                else:
                    loop.call_soon(self._flush, group, pending)
            # else: sent when one of the group's messages on their way arrives.
        elif admission is not None and admission.touch[0]:
            pending.admission = admission  # the one due to mark the key used
        waiter: asyncio.Future[Answer] = loop.create_future()
        pending.events.append(event)
        pending.waiters.append(waiter)
        if len(pending.events) >= COALESCE_MAX_EVENTS:
            self._flush(group, pending)
        return await waiter

    def _flush(self, group: tuple[Any, ...], pending: _Pending) -> None:
        if self._pending.get(group) is not pending:
            return  # already sent (it filled up, or a message before it arrived)
        del self._pending[group]
        self._sending[group] = self._sending.get(group, 0) + 1
        released = False

        def release() -> None:
            # The next events of the group may go: with the broker on another server, their
            # pre-check overlaps this message's enqueue.
            nonlocal released
            if released:
                return
            released = True
            left = self._sending.pop(group) - 1
            if left:
                self._sending[group] = left
            waiting = self._pending.get(group)
            if waiting is not None:
                self._flush(group, waiting)

        task = asyncio.get_running_loop().create_task(
            self._delivery.deliver(group[0], pending.events, release, pending.admission)
        )

        def settle(done: asyncio.Task[list[Answer]]) -> None:
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


@bp.before_server_start
async def build_enqueuer(app: Sanic) -> None:
    """The process's enqueuer, writing Dramatiq messages to the broker without blocking."""
    from workers.actors.ingest import ingest_events
    from workers.broker import encode_value, enqueue_async, message_frame

    async def send(tenant_id: str, events: list[dict[str, Any]]) -> None:
        try:
            await enqueue_async(app.ctx.broker_redis, ingest_events.message(tenant_id, events))
        except (RedisError, OSError) as exc:
            raise Unavailable("The event queue is unavailable; retry shortly.") from exc

    broker_db = int(app.ctx.broker_redis.connection_pool.connection_kwargs.get("db") or 0)

    def frame(tenant_id: str) -> QueueFrame:
        return message_frame(ingest_events.message(tenant_id, []), db=broker_db)

    same_server = _server_of(app.ctx.redis) == _server_of(app.ctx.broker_redis)
    delivery = QueueDelivery(
        app.ctx.redis,
        limiter=RateLimiter(app.ctx.redis, follow_up=ADMITTED_SCREEN),
        send=send,
        frame=frame if same_server else None,
        encode=encode_value,
    )
    app.ctx.ingest = IngestEnqueuer(delivery)


def _server_of(client: Any) -> tuple[Any, ...]:
    """What tells a Redis server apart in a client's settings (everything but the database)."""
    pool = client.connection_pool
    settings = pool.connection_kwargs
    return (
        pool.connection_class,
        *(settings.get(name) for name in ("host", "port", "path", "username", "password")),
    )


@bp.post("/events")
@document(
    summary="Ingest one event",
    tags=["events"],
    body=EventCreate,
    responses={202: EventAccepted, 200: EventAccepted},
    security="apiKey",
)
@admit_api_key(write=True)
async def post_event(request: Request) -> HTTPResponse:
    """Validate one event and queue it; 200 `duplicate` when it was ingested before."""
    body = read_json(request)
    await apply_server_variants(request, [body])  # experiment variants are the server's
    event = parse_event(body, tenant_id=request.ctx.tenant_id, now=datetime.now(UTC))
    ingest: IngestEnqueuer = request.app.ctx.ingest
    admission = request.ctx.admission
    answer = await ingest.enqueue_one(request.ctx.tenant_id, event, admission)
    if answer.decision is not None:
        request.ctx.rate_decision = answer.decision
        if not answer.screened:
            # Refused, or the key changed since it was cached: judged again on a fresh copy of
            # the key (401, 403 or 429 are raised here), then queued the usual way.
            _, request.ctx.rate_decision = await request.app.ctx.api_keys.settle(
                admission, answer.decision
            )
            answer = await ingest.enqueue_one(request.ctx.tenant_id, event)
    if answer.duplicate:
        return json({"status": "duplicate", "eventId": event.event_id}, status=200)
    warnings = list(answer.message["flags"])
    return json({"status": "accepted", "eventId": event.event_id, "warnings": warnings}, status=202)


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
    await apply_server_variants(request, items)  # experiment variants are the server's
    return json(await ingest_batch(request, items), status=202)


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
    return json({"data": items, "items": items, "nextCursor": next_cursor})


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


@metrics_bp.get("/metrics")
@document(
    summary="Queue depth, lag and dead letters (Prometheus text format)",
    errors=METRICS_ACCESS,
    tags=["operations"],
    responses={200: None},
    content_type="text/plain",
)
async def queue_metrics(request: Request) -> HTTPResponse:
    """Prometheus gauges of every queue, read from the broker, and the request metrics."""
    check_metrics_access(request, token=request.app.ctx.settings.metrics_token)
    try:
        stats = await queue_stats_async(request.app.ctx.broker_redis, QUEUES)
    except (RedisError, OSError) as exc:
        raise Unavailable("The broker cannot be read.") from exc
    registry = CollectorRegistry()
    registry.register(_Families(queue_families(stats)))
    return raw(generate_latest(registry) + request_metrics(), content_type=CONTENT_TYPE_LATEST)
