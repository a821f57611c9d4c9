"""Shoppers' personal data: erasure on request (right to erasure)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from redis.asyncio import Redis
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import require_api_key
from api.validation import ApiModel
from domain.errors import FieldError, ValidationFailed
from store.erasure import erase_user, user_digest

bp = Blueprint("users", url_prefix="/api/v1")
log = logging.getLogger("recomengine.audit")

USER_ID_MAX_CHARS = 256
# Events of the shopper that were still queued when the erasure ran land within seconds; these
# passes remove them too, so that within a minute nothing of the shopper is left.
FOLLOW_UP_DELAYS_SECONDS = (10.0, 40.0)


class ErasureRead(ApiModel):
    """What an erasure removed (counts only)."""

    user_id: str
    status: str
    removed: dict[str, int]


@bp.delete("/users/<user_id:str>")
@document(
    summary="Erase a shopper: events, history, purchases, cached answers and personal counters "
    "(aggregates stay; repeated within a minute for events still queued)",
    tags=["users"],
    responses={202: ErasureRead},
    security="apiKey",
)
@require_api_key(write=True)
async def erase(request: Request, user_id: str) -> HTTPResponse:
    """Erase everything of the shopper `user_id` of the key's tenant; logged for audit."""
    if not user_id.strip() or len(user_id) > USER_ID_MAX_CHARS:
        raise ValidationFailed(
            "The user id is not valid.",
            errors=[FieldError("userId", f"must be 1-{USER_ID_MAX_CHARS} characters")],
        )
    tenant_id: str = request.ctx.tenant_id
    settings = request.app.ctx.settings
    request_id = getattr(request.ctx, "request_id", None)
    pool, redis = request.app.ctx.db, request.app.ctx.redis
    report = await erase_user(
        pool,
        redis,
        tenant_id=tenant_id,
        user_id=user_id,
        secret=settings.api_key_secret,
        api_key_id=request.ctx.api_key_id,
        request_id=request_id,
    )
    digest = user_digest(tenant_id, user_id, secret=settings.api_key_secret)
    log.info(
        "shopper erased",
        extra={
            "tenant_id": tenant_id,
            "user_digest": digest,
            "api_key_id": request.ctx.api_key_id,
            "request_id": request_id,
            "removed": report.as_dict(),
        },
    )
    request.app.add_task(
        _follow_up(pool, redis, tenant_id, user_id, settings.api_key_secret, request_id)
    )
    body = ErasureRead(user_id=user_id, status="erased", removed=report.as_dict())
    return json(body.model_dump(by_alias=True), status=202)


async def _follow_up(
    pool: asyncpg.Pool,
    redis: Redis,
    tenant_id: str,
    user_id: str,
    secret: str,
    request_id: str | None,
) -> None:
    for delay in FOLLOW_UP_DELAYS_SECONDS:
        await asyncio.sleep(delay)
        try:
            report = await erase_user(
                pool,
                redis,
                tenant_id=tenant_id,
                user_id=user_id,
                secret=secret,
                request_id=request_id,
                audit=False,
            )
        except Exception:
            log.exception("a follow-up erasure pass failed", extra={"request_id": request_id})
            continue
        if any(report.as_dict().values()):
            log.info(
                "shopper erased: late events removed",
                extra={"tenant_id": tenant_id, "request_id": request_id, **report.as_dict()},
            )
