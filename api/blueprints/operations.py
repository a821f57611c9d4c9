"""The operators' console endpoints: queues, worker processes, dead letters and every tenant's
models. Only admins with the operator role may call them."""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from datetime import UTC, datetime
from functools import wraps
from typing import Any, Literal

from pydantic import Field
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import Handler, require_admin
from api.validation import ApiModel, parse_body, parse_query
from domain.errors import Forbidden
from store import keys
from store.admins import get_admin
from store.event_queue import lane_backlogs_async
from store.models import read_meta
from store.tenants import list_all_tenants
from store.training import read_training_runs
from workers.broker import QUEUES, broker
from workers.dead_letters import dead_messages, describe, replay
from workers.metrics import (
    THROUGHPUT_MINUTES,
    QueueThroughput,
    queue_stats_async,
    queue_throughput_async,
)
from workers.watchdog import WORKERS_KEY

bp = Blueprint("operations", url_prefix="/api/v1/ops")

QueueName = Literal["ingest", "catalog", "projections", "training", "maintenance"]


def require_operator(handler: Handler) -> Handler:
    """Route decorator: an admin access token of an account with the operator role."""

    @require_admin
    @wraps(handler)
    async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        admin = await get_admin(request.app.ctx.db, admin_id=request.ctx.admin_id)
        if admin is None or not admin.is_operator:
            raise Forbidden("The operators' console needs the operator role.")
        return await handler(request, *args, **kwargs)

    return guarded


class QueueMinuteRead(ApiModel):
    """One minute of a queue's throughput, every worker host summed."""

    minute: str = Field(description="Start of the minute (UTC).")
    processed: int
    failed: int = Field(description="Messages whose processing raised (each retry counts).")


class LaneTenantRead(ApiModel):
    """What waits for one tenant in an ingestion lane."""

    tenant_id: str
    messages: int
    events: int
    oldest_seconds: float = Field(description="Age of the tenant's oldest waiting message.")


class QueueRead(ApiModel):
    """How one queue stands now."""

    queue: str
    ready: int = Field(description="Messages waiting for a worker.")
    in_progress: int = Field(description="Messages fetched by a worker and not yet acked.")
    delayed: int = Field(description="Messages waiting for a retry.")
    dead_letters: int
    lag_seconds: float = Field(description="Age of the oldest waiting message.")
    oldest_claimed_seconds: float = Field(
        description="Age of the oldest message a worker holds without acking it; past the "
        "actor's time limit plus a margin, the watchdog gives it to another worker."
    )
    requeued_from_stuck: int = Field(
        description="Messages taken back from workers that stopped making progress, so far."
    )
    processed_per_minute: float = Field(
        description="Messages processed in about the last 60 seconds, every worker host summed.",
    )
    failed_per_minute: float = Field(
        description="Messages whose processing raised in about the last 60 seconds."
    )
    processed_last_hour: int
    failed_last_hour: int
    throughput: list[QueueMinuteRead] = Field(
        description=f"Per minute over the last {THROUGHPUT_MINUTES}, oldest first; the last "
        "is the current, unfinished minute.",
    )
    tenants: list[LaneTenantRead] = Field(
        default=[],
        description="An ingestion lane's backlog per tenant, served fairly in turn (other "
        "queues: empty).",
    )


class QueueList(ApiModel):
    """Every queue."""

    data: list[QueueRead]


@bp.get("/queues")
@document(
    summary="Queue depth, lag, claims and throughput per queue",
    tags=["operations"],
    responses={200: QueueList},
    security="bearer",
)
@require_operator
async def queues(request: Request) -> HTTPResponse:
    """Every queue's depth, in-progress and delayed messages, dead letters, ages and
    throughput per minute over the last hour."""
    stats = await queue_stats_async(request.app.ctx.broker_redis, QUEUES)
    throughput = {
        item.queue: item
        for item in await queue_throughput_async(request.app.ctx.broker_redis, QUEUES)
    }
    backlogs = await lane_backlogs_async(request.app.ctx.broker_redis)
    rows = [
        QueueRead(
            queue=item.queue,
            ready=item.ready,
            in_progress=item.unacked,
            delayed=item.delayed,
            dead_letters=item.dead,
            lag_seconds=round(item.lag_seconds, 3),
            oldest_claimed_seconds=round(item.oldest_claimed_seconds, 3),
            requeued_from_stuck=item.requeued_from_stuck,
            **_throughput_fields(throughput[item.queue]),
            tenants=[
                LaneTenantRead(
                    tenant_id=b.tenant_id,
                    messages=b.messages,
                    events=b.events,
                    oldest_seconds=round(b.oldest_seconds, 3),
                )
                for b in backlogs
                if b.queue == item.queue
            ],
        )
        for item in stats
    ]
    return json(QueueList(data=rows).model_dump(by_alias=True))


def _throughput_fields(found: QueueThroughput) -> dict[str, Any]:
    return {
        "processed_per_minute": found.processed_per_minute,
        "failed_per_minute": found.failed_per_minute,
        "processed_last_hour": sum(found.processed),
        "failed_last_hour": sum(found.failed),
        "throughput": [
            QueueMinuteRead(minute=_moment(minute * 60), processed=processed, failed=failed)
            for minute, processed, failed in zip(
                found.minutes, found.processed, found.failed, strict=True
            )
        ],
    }


class WorkerRead(ApiModel):
    """One worker process."""

    id: str = Field(description="The process's consumer id in the broker.")
    host: str | None
    pid: int | None
    queues: list[str]
    threads: int | None
    started_at: str | None
    last_heartbeat_at: str
    alive: bool = Field(description="Heartbeat within the broker's timeout (10 s).")


class SchedulerRead(ApiModel):
    """The scheduler process."""

    alive: bool
    host: str | None = None
    pid: int | None = None
    last_heartbeat_at: str | None = None


class WorkerList(ApiModel):
    """The worker processes the broker heard from, and the scheduler."""

    data: list[WorkerRead]
    scheduler: SchedulerRead


def _moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@bp.get("/workers")
@document(
    summary="Worker processes and the scheduler, with their heartbeats",
    tags=["operations"],
    responses={200: WorkerList},
    security="bearer",
)
@require_operator
async def workers(request: Request) -> HTTPResponse:
    """Each worker process's queues, threads and heartbeat; whether the scheduler beats."""
    client = request.app.ctx.broker_redis
    async with client.pipeline(transaction=False) as pipe:
        pipe.zrange(f"{broker.namespace}:__heartbeats__", 0, -1, withscores=True)
        pipe.hgetall(WORKERS_KEY)
        beats, registered = await pipe.execute()
    about = {key.decode(): jsonlib.loads(value) for key, value in registered.items()}
    timeout = broker.heartbeat_timeout / 1000
    now = time.time()
    rows = []
    for consumer, beat_ms in beats:
        consumer_id = consumer.decode()
        info = about.get(consumer_id, {})
        rows.append(
            WorkerRead(
                id=consumer_id,
                host=info.get("host"),
                pid=info.get("pid"),
                queues=info.get("queues", []),
                threads=info.get("threads"),
                started_at=info.get("startedAt"),
                last_heartbeat_at=_moment(beat_ms / 1000),
                alive=now - beat_ms / 1000 <= timeout,
            )
        )
    raw_beat = await request.app.ctx.redis.get(keys.SCHEDULER_HEARTBEAT)
    scheduler = SchedulerRead(alive=False)
    if raw_beat is not None:
        beat = jsonlib.loads(raw_beat)
        scheduler = SchedulerRead(
            alive=True, host=beat["host"], pid=beat["pid"], last_heartbeat_at=beat["at"]
        )
    return json(WorkerList(data=rows, scheduler=scheduler).model_dump(by_alias=True))


class DeadLetterQuery(ApiModel):
    """Which dead letters to list."""

    queue: QueueName | None = Field(default=None, description="Default: every queue.")
    limit: int = Field(default=100, ge=1, le=1000)


class DeadLetterRead(ApiModel):
    """One dead-lettered message."""

    id: str
    queue: str
    actor: str
    failed_at: str
    retries: int
    error: str = Field(description="The last line of the last failure's traceback.")
    args: str = Field(description="The message's arguments as JSON, cut at 500 characters.")


class DeadLetterList(ApiModel):
    """Dead-lettered messages, oldest first per queue."""

    data: list[DeadLetterRead]


def _queues(chosen: str | None) -> list[str]:
    return [chosen] if chosen else list(QUEUES)


@bp.get("/dead-letters")
@document(
    summary="Dead-lettered messages",
    tags=["operations"],
    query=DeadLetterQuery,
    responses={200: DeadLetterList, 400: None},
    security="bearer",
)
@require_operator
async def dead_letters(request: Request) -> HTTPResponse:
    """The dead letters of one queue or all, oldest first."""
    query = parse_query(request, DeadLetterQuery)

    def read() -> list[dict[str, Any]]:
        return [
            describe(dead)
            for queue in _queues(query.queue)
            for dead in dead_messages(broker.client, queue=queue, limit=query.limit)
        ]

    found = await asyncio.to_thread(read)
    return json(DeadLetterList.model_validate({"data": found}).model_dump(by_alias=True))


class ReplayCommand(ApiModel):
    """Which dead letters to put back on their queue (retries reset)."""

    ids: list[str] | None = Field(default=None, max_length=1000, description="Default: all.")
    queue: QueueName | None = Field(default=None, description="Default: every queue.")


class ReplayOutcome(ApiModel):
    """How many messages went back."""

    replayed: int


@bp.post("/dead-letters/replay")
@document(
    summary="Replay dead-lettered messages",
    tags=["operations"],
    body=ReplayCommand,
    responses={200: ReplayOutcome, 400: None},
    security="bearer",
)
@require_operator
async def replay_dead_letters(request: Request) -> HTTPResponse:
    """Enqueue the chosen dead letters again (our actors are idempotent), then drop them."""
    command = parse_body(request, ReplayCommand)
    only = set(command.ids) if command.ids is not None else None

    def run() -> int:
        return sum(
            replay(broker.client, broker, queue=queue, limit=10_000, only=only)
            for queue in _queues(command.queue)
        )

    replayed = await asyncio.to_thread(run)
    return json(ReplayOutcome(replayed=replayed).model_dump(by_alias=True))


class TenantModelRead(ApiModel):
    """One tenant's published model and retrains."""

    tenant_id: str
    tenant_name: str
    status: str
    model_version: str | None
    trained_at: str | None
    last_full_retrain_at: str | None
    last_incremental_retrain_at: str | None
    last_incremental_retrain_seconds: float | None
    last_duration_seconds: float | None = Field(description="Of the last full retrain.")
    failures: int
    last_failure_at: str | None
    last_error: str | None
    last_gate: dict[str, Any] | None = Field(
        default=None,
        description="The publish gate's last decision (full or incremental retrain): passed, "
        "reasons, version, kind, at.",
    )


class TenantModelList(ApiModel):
    """Every tenant's models."""

    data: list[TenantModelRead]


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


@bp.get("/models")
@document(
    summary="Every tenant's model version, retrains and failures",
    tags=["operations"],
    responses={200: TenantModelList},
    security="bearer",
)
@require_operator
async def models(request: Request) -> HTTPResponse:
    """Per tenant: the published version, when it was trained, the last retrains, failures."""
    redis = request.app.ctx.redis
    rows = []
    for tenant in await list_all_tenants(request.app.ctx.db):
        tenant_id = str(tenant["id"])
        meta = await read_meta(redis, tenant_id=tenant_id)
        runs = await read_training_runs(redis, tenant_id=tenant_id)
        rows.append(
            TenantModelRead(
                tenant_id=tenant_id,
                tenant_name=tenant["name"],
                status=tenant["status"],
                model_version=meta.get("version"),
                trained_at=meta.get("trainedAt"),
                last_full_retrain_at=runs.get("fullAt"),
                last_incremental_retrain_at=runs.get("incrementalAt"),
                last_incremental_retrain_seconds=_float(runs.get("incrementalSeconds")),
                last_duration_seconds=_float(runs.get("fullSeconds")),
                failures=int(runs.get("failures", 0)),
                last_failure_at=runs.get("lastFailureAt"),
                last_error=runs.get("lastError"),
                last_gate=jsonlib.loads(runs["lastGate"]) if runs.get("lastGate") else None,
            )
        )
    return json(TenantModelList(data=rows).model_dump(by_alias=True))
