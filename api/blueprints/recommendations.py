"""GET /recommendations (API key, read): served from Redis projections in one Lua call."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import ujson
from pydantic import Field, field_validator
from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import FollowUp, owned_tenant, require_admin, require_api_key
from api.user_tokens import user_is_signed
from api.validation import ApiModel, parse_query
from domain.errors import Forbidden
from domain.holdout import BASELINE_STRATEGY, holdout_baseline
from domain.serving import DEFAULT_LIMIT, MAX_LIMIT, Hydration, ServingRequest, rank, select
from domain.storefront import requires_signed_user, strip_because
from domain.strategies.base import STRATEGY_NAMES
from store.models import ServingReader, answer_lookup_keys, cache_answer, read_meta

bp = Blueprint("recommendations", url_prefix="/api/v1")

Strategy = str
HYDRATE_AT_MOST = 300  # candidates looked at before answering with what survived
ID_FIELD = Field(min_length=1, max_length=256)
log = logging.getLogger("recomengine.recommendations")


class RecommendationsQuery(ApiModel):
    """Query of GET /recommendations."""

    user_id: str = ID_FIELD
    strategy: Strategy | None = None
    product_id: str | None = Field(default=None, min_length=1, max_length=256)
    placement_id: str | None = Field(default=None, min_length=1, max_length=128)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    exclude: str | None = Field(default=None, max_length=10_000)
    category: str | None = Field(default=None, min_length=1, max_length=200)
    include_purchased: bool = False

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in STRATEGY_NAMES:
            raise ValueError(f"must be one of {', '.join(STRATEGY_NAMES)}")
        return value


class RecommendationReason(ApiModel):
    """Why an item is recommended."""

    strategy: str
    because: list[str]


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


def _live_hours(now: datetime) -> list[str]:
    return [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]


def _last(request: Request, name: str) -> str:
    values = request.args.getlist(name)
    return values[-1] if values else ""


def _answer_follow_up(request: Request) -> FollowUp | None:
    """The cached-answer look-up riding on the rate-limit call, when caching is on.

    An answer is keyed by the whole query string, so only a query that was valid when it was
    answered can ever be served from the cache; the stamp covers everything else it used.
    """
    user_id, placement_id = _last(request, "userId"), _last(request, "placementId")
    if not request.app.ctx.settings.answer_cache_seconds or not 0 < len(user_id) <= 256:
        return None
    digest = hashlib.blake2b(request.query_string.encode(), digest_size=16).hexdigest()

    def lookup(tenant_id: str) -> tuple[list[str], list[str]]:
        answer_keys = answer_lookup_keys(
            tenant_id=tenant_id, user_id=user_id, placement_id=placement_id, query_digest=digest
        )
        request.ctx.answer_key = answer_keys[0]
        # The live counters' hour: a trending answer must not outlive the hour it read.
        return answer_keys, [str(int(time.time()) // 3600)]

    return lookup


def _respond(body_head: bytes, *, cache: str, signed: bool) -> HTTPResponse:
    """The answer: its cacheable head closed with this response's own recommendationId;
    `reason.because` (the shopper's history) only for a read_write key or a signed user."""
    if not signed:
        body_head = strip_because(body_head)
    body = body_head + b',"recommendationId":"' + os.urandom(16).hex().encode() + b'"}}'
    return HTTPResponse(
        body,
        content_type="application/json",
        headers={"Cache-Control": "private, no-store", "X-Recommendation-Cache": cache},
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
    """Serve recommendations from a still-valid cached answer, else the models and projections."""
    lookup = request.ctx.follow_up_reply  # [stamp, live, cached head?]; None: no look-up
    signed = user_is_signed(request, _last(request, "userId"))
    # With requireUserToken an unsigned shopper's cached answer is served only after the
    # strategy check below: the cached bytes do not say which strategy was asked for.
    gated = bool((request.ctx.tenant_config or {}).get("requireUserToken")) and not signed
    if lookup and len(lookup) > 2 and not gated:
        return _respond(lookup[2], cache="hit", signed=signed)
    query = parse_query(request, RecommendationsQuery)
    tenant_id = request.ctx.tenant_id
    reader: ServingReader = request.app.ctx.serving_reader
    now = datetime.now(UTC)
    context = await reader.read(
        tenant_id=tenant_id,
        user_id=query.user_id,
        product_id=query.product_id,
        placement_id=query.placement_id,
        live_hours=_live_hours(now),
    )
    exclude = frozenset(p.strip() for p in (query.exclude or "").split(",") if p.strip())
    # Holdout (analytics incrementality): a stable slice of shoppers gets the baseline only.
    holdout = holdout_baseline(
        tenant_id=tenant_id, user_id=query.user_id, config=request.ctx.tenant_config
    )
    serving_request = ServingRequest(
        user_id=query.user_id,
        strategy=query.strategy if holdout is None else BASELINE_STRATEGY,
        product_id=query.product_id,
        placement_id=query.placement_id,
        limit=query.limit,
        exclude=exclude,
        category=query.category,
        include_purchased=query.include_purchased,
        tenant_default_strategy=(request.ctx.tenant_config or {}).get("defaultStrategy"),
    )
    # Rank and hydrate only the head; look deeper only when filters (unavailable, bought,
    # other category) thinned it out.
    depth = max(3 * (serving_request.limit or DEFAULT_LIMIT), 30)
    hydration, hydrated = Hydration(), 0
    while True:
        decision, ranked = rank(serving_request, context, depth=depth)
        fresh = [candidate.product_id for candidate in ranked[hydrated:]]
        hydration = hydration.merged(
            await reader.hydrate(tenant_id=tenant_id, user_id=query.user_id, product_ids=fresh)
        )
        hydrated = len(ranked)
        items = select(serving_request, decision, ranked, hydration)
        if len(items) >= decision.limit or len(ranked) < depth or depth >= HYDRATE_AT_MOST:
            break
        depth *= 3
    if gated and requires_signed_user(
        config=request.ctx.tenant_config,
        strategy=decision.requested,
        product_id=query.product_id,
    ):
        raise Forbidden(
            "This shop requires a signed userId (X-User-Token) for personalised recommendations."
        )
    if holdout == "none":  # the holdout's baseline is no widget at all
        items = []
    meta = {
        **decision.choice.to_meta(),
        "requestedStrategy": decision.requested,
        "placementId": query.placement_id,
        "experimentId": decision.experiment_id,
        "variant": decision.variant,
        "modelVersion": context.model_version,
        "generatedAt": now.isoformat().replace("+00:00", "Z"),
        "holdout": holdout is not None,
    }
    body = ujson.dumps(
        {"data": [item.to_dict() for item in items], "meta": meta},
        escape_forward_slashes=False,
        ensure_ascii=False,
    ).encode()
    head = body[:-2]  # without the closing "}}": each response adds its recommendationId
    if lookup:
        # A trending answer is kept behind the stamp that also covers the live counters.
        stamp = lookup[1] if meta["strategy"] == "trending" else lookup[0]
        await _cache(request, head=head, stamp=stamp)
    return _respond(head, cache="miss" if lookup else "off", signed=signed)


async def _cache(request: Request, *, head: bytes, stamp: bytes) -> None:
    """Keep the answer for the next identical request; a failure only costs that reuse."""
    try:
        await cache_answer(
            request.app.ctx.redis,
            answer_key=request.ctx.answer_key,
            stamp=stamp,
            body=head,
            ttl_seconds=request.app.ctx.settings.answer_cache_seconds,
        )
    except (RedisError, OSError):
        log.warning("a recommendations answer could not be cached", exc_info=True)


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
