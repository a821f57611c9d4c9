"""HTTP routes of the api keys area: issue (shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.openapi import document, linked
from api.security import owned_tenant, require_admin
from api.validation import ApiModel, NonBlank, parse_body
from domain import apikeys
from domain.errors import Conflict, NotFound, Unavailable
from store import api_keys as key_store
from store.tenants import bump_auth_epoch

bp = Blueprint("api_keys", url_prefix="/api/v1")


class ApiKeyCreate(ApiModel):
    """Body of POST /tenants/{id}/api-keys."""

    name: NonBlank = Field(min_length=1, max_length=100)
    permission: Literal["read", "read_write"]
    environment: Literal["live", "test"] = "live"


class ApiKeyCreated(ApiModel):
    """A new key: the only answer that ever contains the key itself."""

    id: str
    name: str
    permission: Literal["read", "read_write"]
    environment: Literal["live", "test"]
    prefix: str
    key: str
    created_at: datetime


class ApiKeyRead(ApiModel):
    """A key as listed (never the key or its HMAC)."""

    id: str
    name: str
    permission: Literal["read", "read_write"]
    environment: Literal["live", "test"]
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyList(ApiModel):
    """A tenant's keys, newest first."""

    data: list[ApiKeyRead]


def _key(row: dict[str, Any]) -> dict[str, Any]:
    return ApiKeyRead(
        id=str(row["id"]),
        name=row["name"],
        permission=row["permission"],
        environment=row["environment"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    ).model_dump(mode="json", by_alias=True)


@bp.post("/tenants/<tenant_id:str>/api-keys")
@document(
    summary="Issue an API key (shown only in this answer)",
    errors={409: "The tenant already has 10 active keys; revoke one first."},
    tags=["api-keys"],
    body=ApiKeyCreate,
    responses={201: ApiKeyCreated},
    security="bearer",
    links=linked(
        ["DELETE /api/v1/tenants/{tenant_id}/api-keys/{key_id}"], key_id="$response.body#/id"
    ),
)
@require_admin
async def create_api_key(request: Request, tenant_id: str) -> HTTPResponse:
    """A new key for the caller's active tenant; 409 past the active-key limit."""
    tenant = await owned_tenant(request, tenant_id, write=True)
    body = parse_body(request, ApiKeyCreate)
    try:
        row, raw_key = await key_store.issue_api_key(
            request.app.ctx.db,
            tenant_id=str(tenant["id"]),
            name=body.name,
            permission=body.permission,
            environment=body.environment,
            secret=request.app.ctx.settings.api_key_secret,
        )
    except key_store.TooManyKeys as exc:
        raise Conflict(
            f"A tenant may have at most {apikeys.MAX_ACTIVE_KEYS} active keys; revoke one first."
        ) from exc
    created = ApiKeyCreated(
        id=str(row["id"]),
        name=row["name"],
        permission=row["permission"],
        environment=row["environment"],
        prefix=row["prefix"],
        key=raw_key,
        created_at=row["created_at"],
    )
    return json(
        created.model_dump(mode="json", by_alias=True),
        status=201,
        headers={"Cache-Control": "no-store"},
    )


@bp.get("/tenants/<tenant_id:str>/api-keys")
@document(
    summary="List a tenant's API keys",
    tags=["api-keys"],
    responses={200: ApiKeyList},
    security="bearer",
)
@require_admin
async def list_api_keys(request: Request, tenant_id: str) -> HTTPResponse:
    """The tenant's keys with current last-used times (revoked ones included)."""
    tenant = await owned_tenant(request, tenant_id)
    rows = await key_store.list_api_keys(
        request.app.ctx.db, request.app.ctx.redis, tenant_id=str(tenant["id"])
    )
    return json({"data": [_key(row) for row in rows]})


@bp.delete("/tenants/<tenant_id:str>/api-keys/<key_id:str>")
@document(
    summary="Revoke an API key (it stops working at once)",
    tags=["api-keys"],
    responses={204: None},
    security="bearer",
)
@require_admin
async def revoke_api_key(request: Request, tenant_id: str, key_id: str) -> HTTPResponse:
    """Revoke the key; allowed on a suspended tenant too, since it only takes access away."""
    tenant = await owned_tenant(request, tenant_id)
    found = await key_store.revoke_api_key(
        request.app.ctx.db, tenant_id=str(tenant["id"]), key_id=key_id
    )
    if not found:
        raise NotFound("No such API key.")
    try:
        await bump_auth_epoch(request.app.ctx.redis, tenant_id=str(tenant["id"]))
    except (RedisError, OSError) as exc:
        # Revoked in PostgreSQL; retrying is harmless and bumps the epoch again.
        raise Unavailable(
            "The key was revoked but the api workers could not be told; retry."
        ) from exc
    return empty(status=204)
