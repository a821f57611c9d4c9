"""HTTP routes of the tenants area: owner-scoped CRUD, lifecycle and soft delete."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator
from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.openapi import document
from api.security import owned_tenant, require_admin
from api.validation import ApiModel, NonBlank, parse_body
from domain.errors import Forbidden, NotFound, Unavailable
from domain.strategies.registry import STRATEGY_NAMES
from store import tenants as tenant_store

bp = Blueprint("tenants", url_prefix="/api/v1")

STRATEGIES = Literal[STRATEGY_NAMES]  # type: ignore[valid-type]
# An hour at most: a cached answer also outlives trending backfill and widget timing that long.
MAX_ANSWER_CACHE_SECONDS = 3600
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# An origin as _origins_are_http_origins accepts it, stated in the document: http(s), a host
# name, an optional port (0-65535), nothing after.
_PORT = r"(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_ORIGIN_PATTERN = (
    r"^[hH][tT][tT][pP][sS]?://"
    r"[^\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000/?#@:\[\]]+"
    rf"(?::{_PORT})?$"
)


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class RateLimitsConfig(ApiModel):
    """Per-tenant override of the per-key limits (requests per minute)."""

    reads_per_minute: int | None = Field(default=None, ge=1, le=100_000)
    writes_per_minute: int | None = Field(default=None, ge=1, le=50_000)


class PublishGateConfig(ApiModel):
    """How much worse a retrained model may score than the published one and still go out."""

    ndcg_tolerance: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Largest relative loss of NDCG@10 per strategy (default 0.1 = 10%).",
    )


class TenantConfig(ApiModel):
    """A tenant's settings; unknown keys are refused so typos never pass silently."""

    default_strategy: STRATEGIES | None = None
    currency: str | None = Field(
        default=None,
        description="ISO 4217 code, e.g. EUR",
        json_schema_extra={"pattern": _CURRENCY.pattern},
    )
    allowed_origins: (
        list[
            Annotated[str, Field(json_schema_extra={"maxLength": 255, "pattern": _ORIGIN_PATTERN})]
        ]
        | None
    ) = Field(default=None, max_length=50)
    rate_limits: RateLimitsConfig | None = None
    timezone: str | None = Field(default=None, description="IANA time zone, e.g. Europe/Paris")
    require_user_token: bool | None = Field(
        default=None,
        strict=True,
        description="Personalised answers need a signed userId (X-User-Token)",
    )
    require_consent: bool | None = Field(
        default=None,
        strict=True,
        description="The SDK tracks nothing until the shopper's consent(true)",
    )
    publish_gate: PublishGateConfig | None = None
    holdout_percent: int | None = Field(
        default=None, ge=0, le=20, description="% of shoppers kept on the baseline (default 0)"
    )
    holdout_baseline: Literal["trending", "none"] | None = Field(
        default=None, description="what the holdout is served: trending (default) or no widget"
    )
    answer_cache_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ANSWER_CACHE_SECONDS,
        strict=True,
        description="How long a recommendation answer (or a shopper's projected answers) may be "
        "served unchanged, in seconds; 0 computes every answer afresh (default: the server's "
        "RECOMENGINE_ANSWER_CACHE_SECONDS)",
    )
    train_on_test_events: bool | None = Field(
        default=None,
        strict=True,
        description="Train the models on test keys' events too (kept out by default)",
    )

    @field_validator("currency")
    @classmethod
    def _currency_is_iso_4217(cls, value: str | None) -> str | None:
        if value is not None and not _CURRENCY.fullmatch(value):
            raise ValueError("must be a three-letter ISO 4217 code in capitals, e.g. EUR")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_http_origins(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for origin in value:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username is not None
                or len(origin) > 255
            ):
                raise ValueError(f"{origin!r} is not an http(s) origin like https://shop.example")
            try:
                _ = parts.port
            except ValueError as exc:
                raise ValueError(f"{origin!r} has an invalid port") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str | None) -> str | None:
        if value is not None and value not in _timezones():
            raise ValueError("must be an IANA time zone name, e.g. Europe/Paris")
        return value

    def stored(self) -> dict[str, Any]:
        """The config as stored and answered: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True)


class TenantCreate(ApiModel):
    """Body of POST /tenants."""

    name: NonBlank = Field(min_length=1, max_length=200)
    config: TenantConfig | None = None


class TenantUpdate(ApiModel):
    """Body of PUT/PATCH /tenants/{id}: any of name, config (replaced whole), status."""

    # At least one of them, not null (null is "not given"), as the document states it.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": kind}}}
                for name, kind in (("name", "string"), ("config", "object"), ("status", "string"))
            ]
        }
    )

    name: NonBlank | None = Field(default=None, min_length=1, max_length=200)
    config: TenantConfig | None = None
    status: Literal["active", "suspended"] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> TenantUpdate:
        if self.name is None and self.config is None and self.status is None:
            raise ValueError("give at least one of name, config, status")
        return self


class TenantRead(ApiModel):
    """A tenant as answered."""

    id: str
    name: str
    status: Literal["active", "suspended"]
    config: dict[str, Any]
    plan: Literal["sandbox", "starter", "growth", "scale", "enterprise"] = Field(
        description="The usage plan (only an operator changes it)"
    )
    created_at: datetime
    updated_at: datetime


class TenantUsage(ApiModel):
    """Cheap counts of what a tenant holds."""

    api_keys: int
    max_api_keys: int
    catalog_items: int
    events_this_month: int
    running_experiments: int
    widgets: int


class TenantDetail(TenantRead):
    """A tenant with its usage."""

    usage: TenantUsage


class TenantList(ApiModel):
    """The caller's tenants."""

    data: list[TenantRead]


def _tenant(row: Any) -> dict[str, Any]:
    return TenantRead(
        id=str(row["id"]),
        name=row["name"],
        status=row["status"],
        config=row["config"] or {},
        plan=row["plan"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    ).model_dump(mode="json", by_alias=True)


async def _announce_auth_change(request: Request, tenant_id: str) -> None:
    """Bump the tenant's auth epoch after the commit so every api worker reloads its keys."""
    try:
        await tenant_store.bump_auth_epoch(request.app.ctx.redis, tenant_id=tenant_id)
    except (RedisError, OSError) as exc:
        # The change is saved; retrying the same request is harmless and bumps again.
        raise Unavailable(
            "The change was saved but could not be announced to the api workers; retry."
        ) from exc


@bp.post("/tenants")
@document(
    summary="Create a tenant",
    tags=["tenants"],
    body=TenantCreate,
    responses={201: TenantRead},
    security="bearer",
)
@require_admin
async def create_tenant(request: Request) -> HTTPResponse:
    """A new active tenant owned by the caller."""
    body = parse_body(request, TenantCreate)
    try:
        row = await tenant_store.create_tenant(
            request.app.ctx.db,
            owner_id=request.ctx.admin_id,
            name=body.name,
            config=body.config.stored() if body.config else {},
            within_plans=True,
        )
    except tenant_store.TooManyTenants as exc:
        raise Forbidden(
            f"Your plans allow {exc.allowed} tenant(s); an operator can move a tenant to a plan "
            "that allows more."
        ) from exc
    # create_tenant answers no updated_at; a new row's is its created_at.
    return json(_tenant({**dict(row), "updated_at": row["created_at"]}), status=201)


@bp.get("/tenants")
@document(
    summary="List the caller's tenants",
    tags=["tenants"],
    responses={200: TenantList},
    security="bearer",
)
@require_admin
async def list_tenants(request: Request) -> HTTPResponse:
    """The caller's tenants that are not deleted."""
    rows = await tenant_store.list_tenants_for_owner(
        request.app.ctx.db, owner_id=request.ctx.admin_id
    )
    return json({"data": [_tenant(row) for row in rows]})


@bp.get("/tenants/<tenant_id:str>")
@document(
    summary="A tenant with its usage",
    tags=["tenants"],
    responses={200: TenantDetail},
    security="bearer",
)
@require_admin
async def get_tenant(request: Request, tenant_id: str) -> HTTPResponse:
    """The caller's tenant and cheap usage counts."""
    row = await owned_tenant(request, tenant_id)
    usage = await tenant_store.tenant_usage(request.app.ctx.db, tenant_id=str(row["id"]))
    return json({**_tenant(row), "usage": usage})


@bp.route("/tenants/<tenant_id:str>", methods=["PUT", "PATCH"])
@document(
    summary="Change a tenant's name, config or status",
    tags=["tenants"],
    body=TenantUpdate,
    responses={200: TenantRead},
    security="bearer",
)
@require_admin
async def update_tenant(request: Request, tenant_id: str) -> HTTPResponse:
    """Rename, reconfigure, suspend or reactivate the caller's tenant."""
    current = await owned_tenant(request, tenant_id)
    body = parse_body(request, TenantUpdate)
    if current["status"] != "active" and body.status != "active":
        raise Forbidden("The tenant is suspended; reactivate it (status: active) to change it.")
    row = await tenant_store.update_tenant(
        request.app.ctx.db,
        owner_id=request.ctx.admin_id,
        tenant_id=tenant_id,
        name=body.name,
        config=body.config.stored() if body.config is not None else None,
        status=body.status,
    )
    if row is None:  # deleted meanwhile
        raise NotFound("No such tenant.")
    if body.status is not None or body.config is not None:
        await _announce_auth_change(request, str(row["id"]))
    return json(_tenant(row))


@bp.delete("/tenants/<tenant_id:str>")
@document(
    summary="Delete a tenant (soft; purged after 30 days)",
    tags=["tenants"],
    responses={204: None},
    security="bearer",
)
@require_admin
async def delete_tenant(request: Request, tenant_id: str) -> HTTPResponse:
    """Soft-delete the caller's tenant; its keys stop working at once."""
    deleted = await tenant_store.soft_delete_tenant(
        request.app.ctx.db, owner_id=request.ctx.admin_id, tenant_id=tenant_id
    )
    if deleted is None:
        raise NotFound("No such tenant.")
    await _announce_auth_change(request, deleted)
    return empty(status=204)
