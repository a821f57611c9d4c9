"""HTTP route of the event viewer's live tail: new events of a tenant as server-sent events."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Literal

import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.openapi import document
from api.security import owned_tenant, require_admin
from api.validation import ApiModel, parse_query
from domain.errors import FieldError, RateLimited, ValidationFailed
from domain.events import EVENT_TYPES
from store.event_stream import (
    decode_position,
    encode_position,
    events_received_after,
    stream_start,
)

bp = Blueprint("event_stream", url_prefix="/api/v1")

# The bounded rate: one poll a second, at most this many events a poll; a backlog past
# MAX_BACKLOG is skipped (the client is told how many) rather than replayed minutes late.
POLL_SECONDS = 1.0
MAX_EVENTS_PER_POLL = 50
MAX_BACKLOG = 500
HEARTBEAT_SECONDS = 15.0
# A stream ends after this long and the client reconnects with Last-Event-ID, so a forgotten
# tab never holds a connection (and a poll a second) forever.
MAX_STREAM_SECONDS = 50.0
MAX_STREAMS_PER_ADMIN = 4
_open_streams: Counter[str] = Counter()


class EventStreamQuery(ApiModel):
    """Filter of the live tail."""

    event_type: Literal[EVENT_TYPES] | None = None  # type: ignore[valid-type]


def _event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventId": row["event_id"],
        "eventType": row["event_type"],
        "userId": row["user_id"],
        "productId": row["product_id"],
        "sessionId": row["session_id"],
        "metadata": row["metadata"],
        "flags": list(row["flags"]),
        "timestamp": row["occurred_at"].isoformat(),
        "receivedAt": row["received_at"].isoformat(),
    }


def _message(event: str, data: Any, *, id_: str | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


@bp.get("/tenants/<tenant_id:str>/events/stream")
@document(
    summary="New events of a tenant as they arrive (server-sent events; Last-Event-ID resumes)",
    tags=["events"],
    query=EventStreamQuery,
    responses={200: None},
    security="bearer",
    content_type="text/event-stream",
    errors={
        429: f"The account already has {MAX_STREAMS_PER_ADMIN} live tails open; "
        "wait `Retry-After` seconds."
    },
)
@require_admin
async def stream_events(request: Request, tenant_id: str) -> HTTPResponse:
    """Poll the tenant's newly received events once a second and send each as an SSE."""
    tenant = await owned_tenant(request, tenant_id)
    query = parse_query(request, EventStreamQuery)
    pool = request.app.ctx.db
    last_id = request.headers.get("last-event-id")
    if last_id:
        position = decode_position(last_id)
        if position is None:
            raise ValidationFailed(
                "The Last-Event-ID is not one of this stream's ids.",
                errors=[FieldError("Last-Event-ID", "Not a valid stream position")],
            )
    else:
        position = await stream_start(pool)
    admin = request.ctx.admin_id
    if _open_streams[admin] >= MAX_STREAMS_PER_ADMIN:
        raise RateLimited(
            f"At most {MAX_STREAMS_PER_ADMIN} live tails per account at once.",
            retry_after=5,
            limit=MAX_STREAMS_PER_ADMIN,
            reset=5,
        )
    _open_streams[admin] += 1
    try:
        response = await request.respond(
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        # The ready message carries the start position, so a reconnect without any event in
        # between still resumes where this stream began.
        ready = _message("ready", {"tenantId": str(tenant["id"])}, id_=encode_position(*position))
        await response.send(b"retry: 3000\n\n" + ready)
        started = last_beat = time.monotonic()
        while time.monotonic() - started < MAX_STREAM_SECONDS:
            rows, waiting = await events_received_after(
                pool,
                tenant_id=str(tenant["id"]),
                after=position,
                event_type=query.event_type,
                limit=MAX_EVENTS_PER_POLL,
            )
            chunk = b""
            for row in rows:
                position = (row["received_at"], row["event_id"])
                chunk += _message("event", _event_json(row), id_=encode_position(*position))
            if waiting > MAX_BACKLOG:
                position = await stream_start(pool)
                chunk += _message("skipped", {"skipped": waiting}, id_=encode_position(*position))
            if chunk:
                await response.send(chunk)
                last_beat = time.monotonic()
            elif time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                await response.send(b": keep-alive\n\n")
                last_beat = time.monotonic()
            await asyncio.sleep(POLL_SECONDS)
        await response.eof()
    finally:
        _open_streams[admin] -= 1
        if _open_streams[admin] <= 0:
            del _open_streams[admin]
    # Sent already through request.respond(); Sanic expects None from such a handler.
    return None  # type: ignore[return-value]
