"""Event ingestion, one owner for every route that takes events (POST /events, POST
/events/batch, the storefront's events): authenticate -> count -> pre-check -> enqueue.

    IngestService.accept_one / accept_batch      the routes call these, nothing else
      domain.events.check_event                  pure validation, per event (batches)
      IngestEnqueuer                             single events coalesced per tenant and key
        QueueDelivery.count_and_check            ONE Redis call: the rate-limit count (single
                                                 events of cached keys) + the ingest gate's
                                                 script (store.ingest_gate), which queues the
                                                 fresh events itself when it can
        store.event_queue.EventQueue.send        otherwise Dramatiq's own enqueue
                                                 (single events and batches of up to 20 go
                                                 to the live lane, larger batches to the
                                                 bulk lane; each served fairly per tenant)
    -> Answer per event                          accepted / duplicate (+ warnings), or refused

Authentication is the routes' decorators' (api.security): `admit_api_key` leaves a cached key
uncounted (`Admission`) so that its count rides on the gate's call; `require_api_key` (batches)
counts in the decorator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from redis.exceptions import RedisError
from sanic import Sanic

from api.security import Admission, ApiKeyAuthenticator
from domain.errors import FieldError, Unavailable
from domain.event_message import EventMessage, MessageEvent
from domain.events import (
    FLAG_TEST,
    WARNING_UNKNOWN_PRODUCT,
    Event,
    check_event,
    warnings_of,
)
from store.event_queue import LIVE_BATCH_MAX_EVENTS, EventQueue, Lane
from store.ingest_gate import ADMITTED_SCREEN, GateResult, precheck, screen_arguments
from store.ratelimit import RateDecision, RateLimiter

# Single events of a tenant share one queue message: one message (and one worker transaction)
# per event caps a worker near 1,000 events/s. They wait for the pre-check of the tenant's
# previous message rather than for a fixed window: the clients of one busy moment go together,
# and nobody waits when nothing is being sent.
COALESCE_SECONDS = 0.0
COALESCE_IN_FLIGHT = 1
COALESCE_MAX_EVENTS = 100


class Answer(NamedTuple):
    """What became of one event handed to the ingest queue."""

    duplicate: bool
    message: MessageEvent  # its queue message form, warning flags added
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

    When the queue gives a frame, the gate's script queues them in the same Redis call (the
    broker is on the projections' server); otherwise the queue sends them after it. Events of
    admitted requests (see api.security.admit_api_key) are counted by `limiter` in that call
    too.
    """

    def __init__(self, redis: Any, *, limiter: RateLimiter, queue: EventQueue) -> None:
        self._redis = redis
        self._limiter = limiter
        self._queue = queue

    async def count_and_check(
        self,
        tenant_id: str,
        events: list[Event],
        *,
        admission: Admission | None,
        frame: Any,
        bodies: list[bytes],
    ) -> tuple[GateResult, Any]:
        """The one Redis call before anything is queued: the admitted requests' rate-limit
        count (None without an admission) and the gate's check of the events it allowed."""
        try:
            if admission is None:
                found = await precheck(
                    self._redis, tenant_id=tenant_id, events=events, frame=frame, bodies=bodies
                )
                return found, None
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
        except (RedisError, OSError) as exc:
            raise Unavailable("Event ingestion is unavailable; retry shortly.") from exc
        return GateResult.decode(counted.extra or b""), counted

    async def deliver(
        self,
        tenant_id: str,
        events: list[Event],
        checked: Callable[[], None] = lambda: None,
        admission: Admission | None = None,
        lane: Lane = "live",
    ) -> list[Answer]:
        """What became of each event, once the broker holds the fresh ones; `checked()` runs
        as soon as the pre-check has answered. With an `admission`, the requests of `events`
        are counted against its window first, and only those it allows are checked."""
        repeats = _repeats(events)
        messages = [event.to_message() for event in events]
        frame = self._queue.frame(tenant_id, lane=lane)
        bodies = []
        if frame:
            encode = self._queue.encode_event
            bodies = [b"" if r else encode(m) for m, r in zip(messages, repeats, strict=True)]
        found, counted = await self.count_and_check(
            tenant_id, events, admission=admission, frame=frame, bodies=bodies
        )
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
            try:
                await self._queue.send(EventMessage(tenant_id, fresh), lane=lane)
            except (RedisError, OSError) as exc:
                raise Unavailable("The event queue is unavailable; retry shortly.") from exc
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
        """One message for the fresh events of a batch, in the bulk lane when it is large;
        what became of each event."""
        lane: Lane = "bulk" if len(events) > LIVE_BATCH_MAX_EVENTS else "live"
        return await self._delivery.deliver(tenant_id, events, lane=lane)

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


class Accepted(NamedTuple):
    """The answer to one posted event, with the rate-limit decision its response carries."""

    answer: Answer
    decision: RateDecision | None


class IngestService:
    """Takes events from the routes to the broker (see the module's docstring)."""

    def __init__(self, *, enqueuer: IngestEnqueuer, api_keys: ApiKeyAuthenticator) -> None:
        self._enqueuer = enqueuer
        self._api_keys = api_keys

    async def accept_one(
        self, *, tenant_id: str, event: Event, admission: Admission | None, test: bool = False
    ) -> Accepted:
        """Count (when admitted uncounted), check and queue one event; raises 401, 403 or 429
        when its key, found changed or over its limit (or quota), refuses it. `test`: sent with
        a test key, so stored flagged as test."""
        event = _flagged(event, test=test)
        answer = await self._enqueuer.enqueue_one(tenant_id, event, admission)
        decision = answer.decision
        if admission is not None and decision is not None and not answer.screened:
            # Refused, or the key changed since it was cached: judged again on a fresh copy of
            # the key (401, 403 or 429 are raised here), then queued the usual way.
            _, decision = await self._api_keys.settle(admission, decision)
            answer = await self._enqueuer.enqueue_one(tenant_id, event)
        return Accepted(answer, decision)

    async def accept_batch(
        self,
        *,
        tenant_id: str,
        items: list[Any],
        refuse: Callable[[Event], FieldError | None] = lambda _event: None,
        test: bool = False,
    ) -> dict[str, Any]:
        """Check each item, queue the valid new ones as one message, and report per item:
        `{accepted, duplicates, rejected, results}`; `refuse` turns a valid event away (a
        storefront key's event type it may not send, say); `test`: sent with a test key."""
        now = datetime.now(UTC)
        results: list[dict[str, Any]] = [{} for _ in items]
        valid: list[tuple[int, Event]] = []
        for index, item in enumerate(items):
            event, errors = check_event(item, tenant_id=tenant_id, now=now)
            if event is not None and (refused := refuse(event)) is not None:
                event, errors = None, [refused]
            if event is None:
                results[index] = {
                    "index": index,
                    "status": "rejected",
                    "errors": [{"field": e.field, "message": e.message} for e in errors],
                }
            else:
                valid.append((index, _flagged(event, test=test)))
        if valid:
            answers = await self._enqueuer.enqueue_batch(tenant_id, [event for _, event in valid])
            # The same event twice in one batch is a duplicate of itself.
            for (index, event), answer in zip(valid, answers, strict=True):
                if answer.duplicate:
                    results[index] = {
                        "index": index,
                        "status": "duplicate",
                        "eventId": event.event_id,
                    }
                else:
                    results[index] = {
                        "index": index,
                        "status": "accepted",
                        "eventId": event.event_id,
                        "warnings": warnings_of(answer.message["flags"]),
                    }
        counts = {status: 0 for status in ("accepted", "duplicate", "rejected")}
        for result in results:
            counts[result["status"]] += 1
        return {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        }


def _flagged(event: Event, *, test: bool) -> Event:
    """The event flagged as a test key's (kept out of analytics and training), if it is one."""
    return replace(event, flags=(*event.flags, FLAG_TEST)) if test else event


def build_ingest_service(app: Sanic) -> IngestService:
    """The process's ingestion service, on the app's Redis clients and key authenticator."""
    from workers.actors.ingest import ingest_bulk_events, ingest_events

    same_server = _server_of(app.ctx.redis) == _server_of(app.ctx.broker_redis)
    broker_db = int(app.ctx.broker_redis.connection_pool.connection_kwargs.get("db") or 0)
    queue = EventQueue(
        {"live": ingest_events, "bulk": ingest_bulk_events},
        frame_db=broker_db if same_server else None,
    )
    delivery = QueueDelivery(
        app.ctx.redis, limiter=RateLimiter(app.ctx.redis, follow_up=ADMITTED_SCREEN), queue=queue
    )
    return IngestService(enqueuer=IngestEnqueuer(delivery), api_keys=app.ctx.api_keys)


def _server_of(client: Any) -> tuple[Any, ...]:
    """What tells a Redis server apart in a client's settings (everything but the database)."""
    pool = client.connection_pool
    settings = pool.connection_kwargs
    return (
        pool.connection_class,
        *(settings.get(name) for name in ("host", "port", "path", "username", "password")),
    )
