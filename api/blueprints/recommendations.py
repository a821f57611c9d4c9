"""GET /recommendations (API key, read): the rate-limit call carries the answer lookup
(store.answers); the answer is api.recommending's. And the readiness of a tenant's strategies."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.recommending import (
    RecommendationAnswer,
    RecommendationService,
    RecommendationsQuery,
    excluded,
)
from api.security import FollowUp, owned_tenant, require_admin, require_api_key
from api.user_tokens import user_is_signed
from api.validation import ApiModel, parse_query
from domain.serving import answer_cache_seconds
from domain.storefront import strip_because
from domain.strategies.registry import (
    projected_product_strategies,
    strategy_names,
    tenant_projected_strategies,
)
from domain.usage import REQUESTS
from store.answers import (
    DEFAULT_FIELD,
    ProjectedArgs,
    answer_lookup_keys,
    decode_lookup,
    lookup_args,
    meter_args,
)
from store.api_keys import KeyRecord
from store.models import read_meta
from store.usage import meter_for

bp = Blueprint("recommendations", url_prefix="/api/v1")


class RecommendationReason(ApiModel):
    """Why an item is recommended: the strategy that placed it and, for a read_write key or
    a signed user only, the shopper's products that led to it."""

    strategy: str
    because: list[str] | None = None


class RecommendedItem(ApiModel):
    """One recommended product."""

    product_id: str
    score: float
    name: str | None
    price: float | None
    currency: str | None
    image_url: str | None
    url: str | None
    category: str | None
    reason: RecommendationReason


class RecommendationsMeta(ApiModel):
    """How the answer was made."""

    strategy: str
    requested_strategy: str
    is_fallback: bool
    fallback_reason: str | None
    placement_id: str | None
    experiment_id: str | None
    variant: str | None
    recommendation_id: str
    model_version: str | None
    generated_at: str
    holdout: bool = Field(description="the user is in the tenant's holdout (baseline served)")


class RecommendationsRead(ApiModel):
    """Answer of GET /recommendations."""

    data: list[RecommendedItem]
    meta: RecommendationsMeta


class ReadinessRead(ApiModel):
    """Readiness of every strategy of a tenant and the published model version."""

    model_version: str | None
    trained_at: str | None
    strategies: dict[str, Any]
    counts: dict[str, Any]


def _last(request: Request, name: str) -> str:
    values = request.args.getlist(name)
    return values[-1] if values else ""


def _projected_args(request: Request) -> ProjectedArgs | None:
    """What the user's projected answer must be filtered by, read from the raw query (the
    route checks it against the validated query); None when no projection can answer it."""
    product_id = _last(request, "productId") or None
    # A user's answer is projected whatever the strategy (ranked, or the head of a trending
    # fallback); a product's only for strategies with item-context lists.
    strategies = projected_product_strategies() if product_id else strategy_names()
    strategy = _last(request, "strategy")
    if (
        strategy and strategy not in strategies and strategy not in tenant_projected_strategies()
    ) or (product_id and len(product_id) > 256):
        return None
    if product_id and not strategy:
        return None  # who answers may depend on the shopper (experiments, holdouts)
    limit, purchased = _last(request, "limit"), _last(request, "includePurchased")
    if (limit and not limit.isdigit()) or purchased not in ("", "true", "false"):
        return None
    return ProjectedArgs(
        field=strategy or DEFAULT_FIELD,
        product_id=product_id,
        limit=int(limit) if limit else None,
        category=_last(request, "category").casefold() or None,
        include_purchased=purchased == "true",
        exclude=excluded(_last(request, "exclude")),
    )


def _answer_follow_up(request: Request) -> FollowUp | None:
    """The request's usage meter, and the cached or projected answer when caching is on,
    riding on the rate-limit call.

    An answer is keyed by the whole query string, so only a query that was valid when it was
    answered can ever be served from the cache; the stamp covers everything else it used. A
    request without a valid userId is refused before any answer, so nothing meters it.
    """
    user_id, placement_id = _last(request, "userId"), _last(request, "placementId")
    settings = request.app.ctx.settings
    if not 0 < len(user_id) <= 256:
        return None
    digest = hashlib.blake2b(request.query_string.encode(), digest_size=16).hexdigest()
    projected = request.ctx.projected_args = _projected_args(request)

    def lookup(record: KeyRecord) -> tuple[list[str], list[str]]:
        meter = request.ctx.meter = meter_for(
            tenant_id=record.tenant_id,
            environment=record.environment,
            metric=REQUESTS,
            now=datetime.now(UTC),
        )
        max_age = answer_cache_seconds(record.tenant_config, default=settings.answer_cache_seconds)
        if not max_age:
            # The tenant's answers are computed afresh every time: the call only meters.
            return [meter.key], meter_args(meter)
        request.ctx.answer_cache_seconds = max_age
        answer_keys = answer_lookup_keys(
            tenant_id=record.tenant_id,
            user_id=user_id,
            placement_id=placement_id,
            query_digest=digest,
            product_id=projected.product_id if projected else None,
            meter=meter,
        )
        request.ctx.answer_key = answer_keys[1]
        # The live counters' hour: a trending answer must not outlive the hour it read.
        hour = int(time.time()) // 3600
        return answer_keys, lookup_args(
            hour, projected, max_age, meter, user_id=user_id, placement_id=placement_id
        )

    return lookup


def _respond(answer: RecommendationAnswer, *, signed: bool) -> HTTPResponse:
    """The answer: its cacheable head closed with this response's own recommendationId;
    `reason.because` (the shopper's history) only for a read_write key or a signed user."""
    body_head = answer.head if signed else strip_because(answer.head)
    body = body_head + b',"recommendationId":"' + os.urandom(16).hex().encode() + b'"}}'
    return HTTPResponse(
        body,
        content_type="application/json",
        headers={
            "Cache-Control": "private, no-store",
            "X-Recommendation-Cache": answer.cache,
            "X-Recommendation-Projection": answer.projection,
        },
    )


@bp.get("/recommendations")
@document(
    summary="Personalised recommendations for a user, a product or a placement",
    tags=["recommendations"],
    query=RecommendationsQuery,
    responses={200: RecommendationsRead},
    security="apiKey",
)
@require_api_key(write=False, follow_up=_answer_follow_up)
async def recommendations(request: Request) -> HTTPResponse:
    """Serve recommendations from a still-valid cached answer, else the projections and models."""
    reply = request.ctx.follow_up_reply  # None: no look-up ran
    lookup = decode_lookup(reply) if reply else None
    signed = user_is_signed(request, _last(request, "userId"))
    gated = bool((request.ctx.tenant_config or {}).get("requireUserToken")) and not signed
    service: RecommendationService = request.app.ctx.recommendations
    answer = service.cached(lookup, gated=gated)
    if answer is None:
        answer = await service.answer(
            tenant_id=request.ctx.tenant_id,
            tenant_config=request.ctx.tenant_config,
            query=parse_query(request, RecommendationsQuery),
            lookup=lookup,
            projected=getattr(request.ctx, "projected_args", None),
            gated=gated,
            answer_key=getattr(request.ctx, "answer_key", None),
            cache_seconds=getattr(request.ctx, "answer_cache_seconds", 0),
        )
    return _respond(answer, signed=signed)


@bp.before_server_start
async def build_recommendations(app: Sanic) -> None:
    """The process's recommendation service (api.recommending)."""
    app.ctx.recommendations = RecommendationService(
        redis=app.ctx.redis,
        reader=app.ctx.serving_reader,
        projector=app.ctx.answer_projector,
        spawn=app.add_task,
    )


@bp.get("/tenants/<tenant_id>/recommendations/readiness")
@document(
    summary="Readiness of each strategy (minimum data) and the published model",
    tags=["recommendations"],
    responses={200: ReadinessRead},
    security="bearer",
)
@require_admin
async def readiness(request: Request, tenant_id: str) -> HTTPResponse:
    """What the last training run found: which strategies have enough data."""
    tenant = await owned_tenant(request, tenant_id)
    meta = await read_meta(request.app.ctx.redis, tenant_id=str(tenant["id"]))
    return json(
        {
            "modelVersion": meta.get("version"),
            "trainedAt": meta.get("trainedAt"),
            "strategies": meta.get("readiness") or {},
            "counts": meta.get("counts") or {},
        }
    )
