"""A tenant's model versions with their evaluation and publish-gate decision, and publishing
a kept version on purpose (admin JWT)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import owned_tenant, require_admin
from api.validation import ApiModel
from domain.errors import Conflict, NotFound
from store.models import list_version_records, publish_kept_version, read_version_record

bp = Blueprint("models", url_prefix="/api/v1")


class ModelSizes(ApiModel):
    """What the version was trained on."""

    users: int
    products: int
    events: int


class GateRead(ApiModel):
    """The publish gate's decision: passed, or the reasons it refused the version."""

    passed: bool
    reasons: list[str]


class ModelVersionRead(ApiModel):
    """One model version."""

    version: str
    status: Literal["published", "rejected", "previous"]
    trained_at: str
    seconds: float = Field(description="Wall time of the whole retrain, evaluation included.")
    sizes: ModelSizes
    metrics: dict[str, dict[str, float]] = Field(
        description="Per strategy and for the popularity baseline: ndcg10, recall10, hr10, "
        "coverage on the last 7 days held out (each strategy also carries popularityNdcg10, "
        "the baseline on its own protocol); empty when the evaluation was skipped."
    )
    gate: GateRead
    evaluation: dict[str, Any] | None = Field(
        default=None, description="How the evaluation went: skipped (why), details, seconds."
    )


class ModelVersionList(ApiModel):
    """The tenant's recent versions, newest first."""

    data: list[ModelVersionRead]


def _read(record: dict[str, Any]) -> dict[str, Any]:
    return ModelVersionRead(
        version=record["version"],
        status=record["status"],
        trained_at=record["trainedAt"],
        seconds=record["seconds"],
        sizes=ModelSizes(**record["sizes"]),
        metrics=record.get("metrics") or {},
        gate=GateRead(**record["gate"]),
        evaluation=record.get("evaluation"),
    ).model_dump(by_alias=True)


@bp.get("/tenants/<tenant_id:str>/models")
@document(
    summary="Model versions with their evaluation and publish-gate decision",
    tags=["models"],
    responses={200: ModelVersionList},
    security="bearer",
)
@require_admin
async def list_models(request: Request, tenant_id: str) -> HTTPResponse:
    """The caller's tenant's recent model versions, newest first."""
    tenant = await owned_tenant(request, tenant_id)
    records = await list_version_records(request.app.ctx.redis, tenant_id=str(tenant["id"]))
    return json({"data": [_read(record) for record in records]})


@bp.post("/tenants/<tenant_id:str>/models/<version:str>/publish")
@document(
    summary="Publish a kept model version now (e.g. one the gate rejected)",
    tags=["models"],
    responses={200: ModelVersionRead, 404: None, 409: None},
    security="bearer",
)
@require_admin
async def publish_model_version(request: Request, tenant_id: str, version: str) -> HTTPResponse:
    """Make a rejected or previous version the one served, while its lists are still kept."""
    tenant = await owned_tenant(request, tenant_id, write=True)
    redis = request.app.ctx.redis
    tid = str(tenant["id"])
    if await read_version_record(redis, tenant_id=tid, version=version) is None:
        raise NotFound("No such model version.")
    if await publish_kept_version(redis, tenant_id=tid, version=version) is None:
        raise Conflict(
            "This version's lists are no longer kept (a previous version goes 5 minutes after "
            "it is replaced, a rejected one after 7 days); retrain instead."
        )
    record = await read_version_record(redis, tenant_id=tid, version=version)
    return json(_read({**(record or {}), "status": "published"}))
