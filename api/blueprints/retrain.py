"""HTTP routes of a tenant's retrains: queue a full one now ("Retrain now") and read the last
ones."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import owned_tenant, require_admin
from api.validation import ApiModel
from domain.errors import Unavailable
from store.training import read_training_runs
from workers.actors.training import train_tenant

bp = Blueprint("retrain", url_prefix="/api/v1")


class RetrainsRead(ApiModel):
    """When the tenant's models were last retrained, how long it took, and failures."""

    last_full_retrain_at: str | None
    last_full_retrain_seconds: float | None
    last_incremental_retrain_at: str | None
    last_incremental_retrain_seconds: float | None
    failures: int
    last_failure_at: str | None


def _seconds(value: str | None) -> float | None:
    return None if value is None else float(value)


@bp.get("/tenants/<tenant_id:str>/retrain")
@document(
    summary="The tenant's last full and incremental retrains and failures",
    tags=["recommendations"],
    responses={200: RetrainsRead},
    security="bearer",
)
@require_admin
async def last_retrains(request: Request, tenant_id: str) -> HTTPResponse:
    """What the training worker recorded of this tenant's runs."""
    tenant = await owned_tenant(request, tenant_id)
    runs = await read_training_runs(request.app.ctx.redis, tenant_id=str(tenant["id"]))
    read = RetrainsRead(
        last_full_retrain_at=runs.get("fullAt"),
        last_full_retrain_seconds=_seconds(runs.get("fullSeconds")),
        last_incremental_retrain_at=runs.get("incrementalAt"),
        last_incremental_retrain_seconds=_seconds(runs.get("incrementalSeconds")),
        failures=int(runs.get("failures", 0)),
        last_failure_at=runs.get("lastFailureAt"),
    )
    return json(read.model_dump(by_alias=True))


class RetrainQueued(ApiModel):
    """A retrain waiting for a training worker."""

    status: str
    tenant_id: str


@bp.post("/tenants/<tenant_id:str>/retrain")
@document(
    summary="Queue a full retrain of the tenant's models",
    tags=["recommendations"],
    responses={202: RetrainQueued},
    security="bearer",
)
@require_admin
async def retrain_now(request: Request, tenant_id: str) -> HTTPResponse:
    """Send the training actor one message for this tenant (an active one)."""
    tenant = await owned_tenant(request, tenant_id, write=True)
    key = str(tenant["id"])
    try:
        await asyncio.to_thread(train_tenant.send, key)
    except Exception as exc:  # the broker is down: say so, nothing was queued
        raise Unavailable("The training queue cannot be reached; retry shortly.") from exc
    return json(RetrainQueued(status="queued", tenant_id=key).model_dump(by_alias=True), status=202)
