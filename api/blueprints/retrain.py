"""HTTP route that queues a tenant's full retrain now (the dashboard's "Retrain now")."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import owned_tenant, require_admin
from api.validation import ApiModel
from domain.errors import Unavailable
from workers.actors.training import train_tenant

bp = Blueprint("retrain", url_prefix="/api/v1")


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
