"""HTTP routes of the events area: ingestion (API key) and the event viewer (admin)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.config import JsonDict, JsonValue
from redis.exceptions import RedisError
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json, raw

from api.blueprints.storefront import apply_server_variants
from api.ingestion import IngestService, build_ingest_service
from api.metrics import check_metrics_access, request_metrics
from api.openapi import METRICS_ACCESS, document
from api.security import admit_api_key, owned_tenant, require_admin, require_api_key
from api.validation import ApiModel, parse_query, read_json
from domain.errors import FieldError, Unavailable, ValidationFailed
from domain.events import (
    EVENT_TYPES,
    MAX_PLACEMENT_ID_LENGTH,
    MAX_PRICE,
    RECOMMENDATION_TYPES,
    batch_items,
    parse_event,
    warnings_of,
)
from store.event_queue import lane_backlogs_async
from store.events import decode_cursor, encode_cursor, list_events
from workers.broker import QUEUES
from workers.metrics import lane_families, queue_families, queue_stats_async

bp = Blueprint("events", url_prefix="/api/v1")
# Prometheus scrapes /metrics at the root, outside the versioned api.
metrics_bp = Blueprint("queue_metrics")


# Ingestion validates events with domain.events (fast, one pass); this model only documents them,
# so each rule check_event applies is stated here: text without NUL, the metadata fields it
# reads, and which event types need which of them.
_NO_NUL: JsonDict = {"pattern": "^[^\x00]*$"}
_PLACEMENT: JsonDict = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_PLACEMENT_ID_LENGTH,
    **_NO_NUL,
}
_METADATA: JsonDict = {
    # A placementId is checked whenever it is there (null: not there); a price only on purchases.
    "properties": {"placementId": {"anyOf": [_PLACEMENT, {"type": "null"}]}},
    "description": "Free-form JSON, at most 4 KB encoded; `price` is required for a purchase, "
    "`placementId` for recommendation events.",
}


def _needs(event_types: list[JsonValue], field: str, schema: JsonDict) -> JsonDict:
    return {
        "if": {"properties": {"eventType": {"enum": event_types}}, "required": ["eventType"]},
        "then": {
            "properties": {
                "metadata": {
                    "type": "object",
                    "required": [field],
                    "properties": {field: schema},
                }
            },
            "required": ["metadata"],
        },
    }


class EventCreate(ApiModel):
    """One behavioural event."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _needs(
                    ["purchase"], "price", {"type": "number", "minimum": 0, "maximum": MAX_PRICE}
                ),
                _needs([*sorted(RECOMMENDATION_TYPES)], "placementId", _PLACEMENT),
            ]
        }
    )

    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    user_id: str = Field(min_length=1, max_length=256, json_schema_extra=_NO_NUL)
    product_id: str = Field(min_length=1, max_length=256, json_schema_extra=_NO_NUL)
    timestamp: datetime | None = Field(
        default=None, description="With its offset; at most 5 minutes ahead, not before 1970"
    )
    session_id: str | None = Field(
        default=None, min_length=1, max_length=256, json_schema_extra=_NO_NUL
    )
    metadata: dict[str, Any] | None = Field(default=None, json_schema_extra=_METADATA)
    event_id: str | None = Field(
        default=None, min_length=1, max_length=128, json_schema_extra=_NO_NUL
    )


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


def _iso_text(value: Any) -> Any:
    # Pydantic would take "0.5" as seconds since 1970: the document says an RFC 3339 date-time.
    if isinstance(value, str) and not _ISO_MOMENT.fullmatch(value):
        raise ValueError("Must be an ISO 8601 date-time, e.g. 2026-12-01T00:00:00Z")
    return value


_ISO_MOMENT = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?", re.ASCII
)
IsoMoment = Annotated[datetime, BeforeValidator(_iso_text)]


class EventQuery(ApiModel):
    """Filters and page of the event viewer."""

    event_type: Literal[EVENT_TYPES] | None = None  # type: ignore[valid-type]
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    product_id: str | None = Field(default=None, min_length=1, max_length=256)
    since: IsoMoment | None = Field(default=None, alias="from")
    until: IsoMoment | None = Field(default=None, alias="to")
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


@bp.before_server_start
async def build_ingestion(app: Sanic) -> None:
    """The process's ingestion service (api.ingestion), the one owner of every events route."""
    app.ctx.ingest = build_ingest_service(app)


@bp.post("/events")
@document(
    summary="Ingest one event",
    tags=["events"],
    body=EventCreate,
    responses={202: EventAccepted, 200: EventAccepted},
    security="apiKey",
)
@admit_api_key(write=True, quota=True)
async def post_event(request: Request) -> HTTPResponse:
    """Validate one event and queue it; 200 `duplicate` when it was ingested before."""
    body = read_json(request)
    await apply_server_variants(request, [body])  # experiment variants are the server's
    event = parse_event(body, tenant_id=request.ctx.tenant_id, now=datetime.now(UTC))
    ingest: IngestService = request.app.ctx.ingest
    accepted = await ingest.accept_one(
        tenant_id=request.ctx.tenant_id,
        event=event,
        admission=request.ctx.admission,
        test=request.ctx.api_key.environment == "test",
    )
    if accepted.decision is not None:
        request.ctx.rate_decision = accepted.decision
    if accepted.answer.duplicate:
        return json({"status": "duplicate", "eventId": event.event_id}, status=200)
    warnings = warnings_of(accepted.answer.message["flags"])
    return json({"status": "accepted", "eventId": event.event_id, "warnings": warnings}, status=202)


@bp.post("/events/batch")
@document(
    summary="Ingest up to 100 events",
    tags=["events"],
    body=EventBatchCreate,
    responses={202: EventBatchResult},
    security="apiKey",
)
@require_api_key(write=True, quota=True)
async def post_event_batch(request: Request) -> HTTPResponse:
    """Validate each event, queue the valid new ones as one message, report per event."""
    items = batch_items(read_json(request))
    await apply_server_variants(request, items)  # experiment variants are the server's
    ingest: IngestService = request.app.ctx.ingest
    answer = await ingest.accept_batch(
        tenant_id=request.ctx.tenant_id,
        items=items,
        test=request.ctx.api_key.environment == "test",
    )
    return json(answer, status=202)


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
        backlogs = await lane_backlogs_async(request.app.ctx.broker_redis)
    except (RedisError, OSError) as exc:
        raise Unavailable("The broker cannot be read.") from exc
    registry = CollectorRegistry()
    registry.register(_Families([*queue_families(stats), *lane_families(backlogs)]))
    return raw(generate_latest(registry) + request_metrics(), content_type=CONTENT_TYPE_LATEST)
