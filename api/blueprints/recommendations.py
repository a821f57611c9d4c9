"""GET /recommendations (API key, read): one Redis call answers from the answer cache or the
user's projected answers (store.answers); otherwise the answer is ranked from the projections
and hydrated, and the user's projection is written for the next request."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
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
from domain.serving import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Hydration,
    RankedCandidate,
    ServingDecision,
    ServingRequest,
    answer_cache_seconds,
    rank,
    select,
)
from domain.storefront import requires_signed_user, strip_because
from domain.strategies.base import STRATEGY_NAMES, TRENDING
from store import keys
from store.answers import (
    DEFAULT_FIELD,
    PROJECTED_PRODUCT_STRATEGIES,
    PROJECTED_STRATEGIES,
    PROJECTION_DEPTH,
    AnswerLookup,
    AnswerProjector,
    ProjectedArgs,
    answer_lookup_keys,
    cache_answer,
    decode_lookup,
    lookup_args,
)
from store.models import ServingReader, read_meta

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


def _live_hours(now: datetime) -> list[str]:
    return [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]


def _last(request: Request, name: str) -> str:
    values = request.args.getlist(name)
    return values[-1] if values else ""


def _projected_args(request: Request) -> ProjectedArgs | None:
    """What the user's projected answer must be filtered by, read from the raw query (the
    route checks it against the validated query); None when no projection can answer it."""
    product_id = _last(request, "productId") or None
    strategies = PROJECTED_PRODUCT_STRATEGIES if product_id else PROJECTED_STRATEGIES
    strategy = _last(request, "strategy")
    if (strategy and strategy not in strategies) or (product_id and len(product_id) > 256):
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
        exclude=_excluded(_last(request, "exclude")),
    )


def _excluded(raw: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (raw or "").split(",") if p.strip())


def _answer_follow_up(request: Request) -> FollowUp | None:
    """The cached or projected answer riding on the rate-limit call, when caching is on.

    An answer is keyed by the whole query string, so only a query that was valid when it was
    answered can ever be served from the cache; the stamp covers everything else it used.
    """
    user_id, placement_id = _last(request, "userId"), _last(request, "placementId")
    settings = request.app.ctx.settings
    if not 0 < len(user_id) <= 256:
        return None
    digest = hashlib.blake2b(request.query_string.encode(), digest_size=16).hexdigest()
    projected = request.ctx.projected_args = _projected_args(request)

    def lookup(
        tenant_id: str, tenant_config: Mapping[str, Any]
    ) -> tuple[list[str], list[str]] | None:
        max_age = answer_cache_seconds(tenant_config, default=settings.answer_cache_seconds)
        if not max_age:
            return None  # the tenant's answers are computed afresh every time
        request.ctx.answer_cache_seconds = max_age
        answer_keys = answer_lookup_keys(
            tenant_id=tenant_id,
            user_id=user_id,
            placement_id=placement_id,
            query_digest=digest,
            product_id=projected.product_id if projected else None,
        )
        request.ctx.answer_key = answer_keys[0]
        # The live counters' hour: a trending answer must not outlive the hour it read.
        hour = int(time.time()) // 3600
        return answer_keys, lookup_args(hour, projected, max_age)

    return lookup


def _matches(args: ProjectedArgs | None, query: RecommendationsQuery) -> bool:
    """Whether the projection was filtered exactly as the validated query asks."""
    return (
        args is not None
        and args.product_id == query.product_id
        and args.limit == query.limit
        and args.category == (query.category.casefold() if query.category else None)
        and args.include_purchased == query.include_purchased
        and args.exclude == _excluded(query.exclude)
    )


def _projected_head(answer: AnswerLookup, query: RecommendationsQuery) -> bytes:
    """The projected answer's body without its closing braces (see `_respond`)."""
    head = ujson.loads(answer.head)
    meta = {
        "strategy": head["strategy"],
        "isFallback": head["isFallback"],
        "fallbackReason": head["fallbackReason"],
        "requestedStrategy": head["requestedStrategy"],
        "placementId": query.placement_id,
        "experimentId": None,
        "variant": None,
        "modelVersion": head["modelVersion"],
        "generatedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "holdout": False,
    }
    encoded = ujson.dumps(meta, escape_forward_slashes=False, ensure_ascii=False).encode()
    return b'{"data":[' + answer.items + b'],"meta":' + encoded[:-1]


def _respond(
    body_head: bytes, *, cache: str, signed: bool, projection: str = "none"
) -> HTTPResponse:
    """The answer: its cacheable head closed with this response's own recommendationId;
    `reason.because` (the shopper's history) only for a read_write key or a signed user."""
    if not signed:
        body_head = strip_because(body_head)
    body = body_head + b',"recommendationId":"' + os.urandom(16).hex().encode() + b'"}}'
    return HTTPResponse(
        body,
        content_type="application/json",
        headers={
            "Cache-Control": "private, no-store",
            "X-Recommendation-Cache": cache,
            "X-Recommendation-Projection": projection,
        },
    )


def _projection_of(
    answer: AnswerLookup | None, query: RecommendationsQuery, *, gated: bool
) -> str | None:
    """The key of the projection this computed answer should be written to (None: none).
    Only a ranking without the request's own exclusions can be reused for other requests."""
    if (
        answer is None
        or gated
        or answer.projection not in ("absent", "stale")
        or not answer.field
        or not answer.current
        or _excluded(query.exclude)
    ):
        return None
    return answer.field


def _project_later(
    request: Request,
    *,
    answer: AnswerLookup,
    query: RecommendationsQuery,
    decision: ServingDecision,
    ranked: list[RankedCandidate],
    hydration: Hydration,
    depth: int,
    model_version: str | None,
) -> None:
    """Write the ranking just computed as the projection (the user's, or the product's in item
    context) of the field this request read, after the response: the next requests with other
    filters or limits are then answered by the lookup call alone."""
    if decision.experiment_id is not None:
        return
    if query.product_id and decision.choice.mode != "product":
        return  # fell back to the shopper's own history: not the product's answer
    if not query.product_id and decision.choice.strategy == TRENDING:
        return  # follows the live counters, which move with every event
    tenant_id = request.ctx.tenant_id
    if query.product_id:
        key = keys.product_answers(tenant_id, query.product_id)
    else:
        key = keys.user_answers(tenant_id, query.user_id)
    projector: AnswerProjector = request.app.ctx.answer_projector
    default = (request.ctx.tenant_config or {}).get("defaultStrategy")

    async def project() -> None:
        try:
            await projector.store(
                tenant_id=tenant_id,
                key=key,
                stamp=answer.current,
                ranked_by_field={answer.field: (decision, ranked, depth)},
                hydration=hydration,
                model_version=model_version,
                default_strategy=default,
                reader=None if query.product_id else query.user_id,
            )
        except (RedisError, OSError):
            log.warning("projected answers could not be written", exc_info=True)

    request.app.add_task(project())


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
    reply = request.ctx.follow_up_reply  # None: no look-up ran
    answer = decode_lookup(reply) if reply else None
    signed = user_is_signed(request, _last(request, "userId"))
    # With requireUserToken an unsigned shopper's cached answer is served only after the
    # strategy check below: the cached bytes do not say which strategy was asked for.
    gated = bool((request.ctx.tenant_config or {}).get("requireUserToken")) and not signed
    if answer is not None and answer.cached is not None and not gated:
        return _respond(answer.cached, cache="hit", signed=signed)
    query = parse_query(request, RecommendationsQuery)
    if (
        answer is not None
        and answer.projection == "hit"
        and not gated
        and _matches(request.ctx.projected_args, query)
        # The holdout slice is served its baseline, never a projected strategy.
        and holdout_baseline(
            tenant_id=request.ctx.tenant_id, user_id=query.user_id, config=request.ctx.tenant_config
        )
        is None
    ):
        return _respond(
            _projected_head(answer, query), cache="miss", projection="hit", signed=signed
        )
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
    exclude = _excluded(query.exclude)
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
    # Rank and hydrate only the head (as deep as a projection keeps when this ranking is to
    # become one); look deeper only when filters (unavailable, bought, other category)
    # thinned it out.
    projecting = holdout is None and _projection_of(answer, query, gated=gated) is not None
    depth = max(3 * (serving_request.limit or DEFAULT_LIMIT), 30)
    if projecting:
        depth = max(depth, PROJECTION_DEPTH)
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
    if answer is not None:
        # A trending answer is kept behind the stamp that also covers the live counters.
        stamp = answer.live if meta["strategy"] == "trending" else answer.stamp
        await _cache(request, head=head, stamp=stamp)
        if projecting:
            _project_later(
                request,
                answer=answer,
                query=query,
                decision=decision,
                ranked=ranked,
                hydration=hydration,
                depth=depth,
                model_version=context.model_version,
            )
    return _respond(
        head,
        cache="miss" if answer else "off",
        signed=signed,
        projection=answer.projection if answer else "none",
    )


async def _cache(request: Request, *, head: bytes, stamp: bytes) -> None:
    """Keep the answer for the next identical request; a failure only costs that reuse."""
    try:
        await cache_answer(
            request.app.ctx.redis,
            answer_key=request.ctx.answer_key,
            stamp=stamp,
            body=head,
            ttl_seconds=request.ctx.answer_cache_seconds,
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
