"""The answer to GET /recommendations, one straight line:

route (api/blueprints/recommendations.py)  the rate-limit call carries ANSWER_LOOKUP
                                           (store.answers): its reply, an AnswerLookup
RecommendationService.cached(lookup)       a still-valid cached answer: served as stored
RecommendationService.answer(...)          else the projected answer when the lookup
                                           filtered it for this query: the user's field, the
                                           product's, or the tenant's trending list (a
                                           trending request, a shopper without events: its
                                           meta from domain.serving.decide_by_trending),
                                           else ranked from the projections and hydrated
                                           (domain.serving), cached, and projected for the
                                           next requests after the response
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import ujson
from pydantic import Field, field_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.validation import ApiModel
from domain.errors import Forbidden
from domain.holdout import BASELINE_STRATEGY, holdout_baseline
from domain.serving import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    RANKING_FALLBACKS,
    Hydration,
    RankedCandidate,
    ServingDecision,
    ServingRequest,
    decide_by_trending,
    rank,
    select,
)
from domain.storefront import requires_signed_user
from domain.strategies.base import TRENDING
from domain.strategies.registry import strategy_names
from store import keys
from store.answers import (
    DEFAULT_FIELD,
    EXPERIMENT_FIELD,
    PROJECTION_DEPTH,
    TRENDING_FIELD,
    AnswerLookup,
    AnswerProjector,
    ProjectedArgs,
    cache_answer,
)
from store.models import ServingReader

HYDRATE_AT_MOST = 300  # candidates looked at before answering with what survived
ID_FIELD = Field(min_length=1, max_length=256)
log = logging.getLogger("recomengine.recommendations")


def _strategy_enum(schema: dict[str, Any]) -> None:
    """The strategies registered when the document is generated, as the field's enum."""
    schema["enum"] = list(strategy_names())


class RecommendationsQuery(ApiModel):
    """Query of GET /recommendations."""

    user_id: str = ID_FIELD
    strategy: str | None = Field(default=None, json_schema_extra=_strategy_enum)
    product_id: str | None = Field(default=None, min_length=1, max_length=256)
    placement_id: str | None = Field(default=None, min_length=1, max_length=128)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    exclude: str | None = Field(default=None, max_length=10_000)
    category: str | None = Field(default=None, min_length=1, max_length=200)
    include_purchased: bool = False

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        if value is not None and value not in strategy_names():
            raise ValueError(f"must be one of {', '.join(strategy_names())}")
        return value


@dataclass(frozen=True)
class RecommendationAnswer:
    """An answer's body without its closing braces (each response adds its own
    recommendationId), and where it came from."""

    head: bytes
    cache: str  # hit | miss | off (no lookup ran)
    projection: str = "none"  # none | absent | stale | short | hit


def excluded(raw: str | None) -> frozenset[str]:
    """The product ids of an `exclude` parameter."""
    return frozenset(p.strip() for p in (raw or "").split(",") if p.strip())


def _live_hours(now: datetime) -> list[str]:
    return [(now - timedelta(hours=h)).strftime("%Y%m%d%H") for h in (0, 1)]


def _matches(args: ProjectedArgs | None, query: RecommendationsQuery) -> bool:
    """Whether the projection was filtered exactly as the validated query asks."""
    return (
        args is not None
        and args.product_id == query.product_id
        and args.limit == query.limit
        and args.category == (query.category.casefold() if query.category else None)
        and args.include_purchased == query.include_purchased
        and args.exclude == excluded(query.exclude)
    )


def _projected_meta(
    answer: AnswerLookup, query: RecommendationsQuery, config: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The meta of a projected answer: the field's own, or, when the tenant's trending list
    answered (a trending request, a shopper without events), decided here from the field
    asked for (None: that decision is not trending, so the answer is computed)."""
    head = ujson.loads(answer.head)
    if answer.source != "tenant":
        return {
            key: head.get(key)
            for key in (
                "strategy",
                "isFallback",
                "fallbackReason",
                "requestedStrategy",
                "experimentId",
                "variant",
                "modelVersion",
            )
        }
    experiment = ujson.loads(answer.experiment) if answer.experiment else None
    if answer.field.startswith(EXPERIMENT_FIELD):
        strategy = None  # the arm's
    elif answer.field == DEFAULT_FIELD:
        strategy, experiment = None, None
    elif answer.field in strategy_names():
        strategy, experiment = answer.field, None
    else:
        return None  # a widget's unknown strategy: answered as ranking decides
    decision = decide_by_trending(
        ServingRequest(
            user_id=query.user_id,
            strategy=strategy,
            product_id=query.product_id,
            placement_id=query.placement_id,
            tenant_default_strategy=config.get("defaultStrategy"),
        ),
        experiment=experiment,
    )
    if decision.choice.strategy != TRENDING:
        return None
    return {
        **decision.choice.to_meta(),
        "requestedStrategy": decision.requested,
        "experimentId": decision.experiment_id,
        "variant": decision.variant,
        "modelVersion": head.get("modelVersion"),
    }


def _projected_head(meta: Mapping[str, Any], items: bytes, query: RecommendationsQuery) -> bytes:
    """The projected answer's body without its closing braces."""
    full = {
        "strategy": meta["strategy"],
        "isFallback": meta["isFallback"],
        "fallbackReason": meta["fallbackReason"],
        "requestedStrategy": meta["requestedStrategy"],
        "placementId": query.placement_id,
        "experimentId": meta["experimentId"],
        "variant": meta["variant"],
        "modelVersion": meta["modelVersion"],
        "generatedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "holdout": False,
    }
    encoded = ujson.dumps(full, escape_forward_slashes=False, ensure_ascii=False).encode()
    return b'{"data":[' + items + b'],"meta":' + encoded[:-1]


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
        or excluded(query.exclude)
    ):
        return None
    return answer.field


class RecommendationService:
    """Answers recommendation requests from the lookup's reply, the projections and models."""

    def __init__(
        self,
        *,
        redis: Redis,
        reader: ServingReader,
        projector: AnswerProjector,
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
    ) -> None:
        """`spawn` runs a coroutine after the response (the app's add_task)."""
        self._redis = redis
        self._reader = reader
        self._projector = projector
        self._spawn = spawn
        self._trending_pending: set[str] = set()

    @staticmethod
    def cached(lookup: AnswerLookup | None, *, gated: bool) -> RecommendationAnswer | None:
        """The still-valid cached answer the lookup found, if it may be served as it is.

        With requireUserToken an unsigned shopper's cached answer is served only after the
        strategy check of `answer`: the cached bytes do not say which strategy was asked for.
        """
        if lookup is None or lookup.cached is None or gated:
            return None
        return RecommendationAnswer(lookup.cached, cache="hit")

    async def answer(
        self,
        *,
        tenant_id: str,
        tenant_config: Mapping[str, Any] | None,
        query: RecommendationsQuery,
        lookup: AnswerLookup | None,
        projected: ProjectedArgs | None,
        gated: bool,
        answer_key: str | None,
        cache_seconds: int,
    ) -> RecommendationAnswer:
        """The projected answer when the lookup filtered it for exactly this query, else one
        ranked and hydrated now (then cached under `answer_key` and projected)."""
        config = tenant_config or {}
        # The holdout slice is served its baseline, never a projected strategy.
        holdout = holdout_baseline(tenant_id=tenant_id, user_id=query.user_id, config=config)
        if (
            lookup is not None
            and lookup.projection == "hit"
            and not gated
            and _matches(projected, query)
            and holdout is None
            and (meta := _projected_meta(lookup, query, config)) is not None
        ):
            return RecommendationAnswer(
                _projected_head(meta, lookup.items, query), cache="miss", projection="hit"
            )
        if lookup is not None and lookup.trending in ("absent", "stale"):
            self._project_trending_later(tenant_id)
        now = datetime.now(UTC)
        context = await self._reader.read(
            tenant_id=tenant_id,
            user_id=query.user_id,
            product_id=query.product_id,
            placement_id=query.placement_id,
            live_hours=_live_hours(now),
        )
        serving_request = ServingRequest(
            user_id=query.user_id,
            strategy=query.strategy if holdout is None else BASELINE_STRATEGY,
            product_id=query.product_id,
            placement_id=query.placement_id,
            limit=query.limit,
            exclude=excluded(query.exclude),
            category=query.category,
            include_purchased=query.include_purchased,
            tenant_default_strategy=config.get("defaultStrategy"),
        )
        # Rank and hydrate only the head (as deep as a projection keeps when this ranking is to
        # become one); look deeper only when filters (unavailable, bought, other category)
        # thinned it out.
        projecting = holdout is None and _projection_of(lookup, query, gated=gated) is not None
        depth = max(3 * (serving_request.limit or DEFAULT_LIMIT), 30)
        if projecting:
            depth = max(depth, PROJECTION_DEPTH)
        hydration, hydrated = Hydration(), 0
        while True:
            decision, ranked = rank(serving_request, context, depth=depth)
            fresh = [candidate.product_id for candidate in ranked[hydrated:]]
            hydration = hydration.merged(
                await self._reader.hydrate(
                    tenant_id=tenant_id, user_id=query.user_id, product_ids=fresh
                )
            )
            hydrated = len(ranked)
            items = select(serving_request, decision, ranked, hydration)
            if len(items) >= decision.limit or len(ranked) < depth or depth >= HYDRATE_AT_MOST:
                break
            depth *= 3
        if gated and requires_signed_user(
            config=tenant_config, strategy=decision.requested, product_id=query.product_id
        ):
            raise Forbidden(
                "This shop requires a signed userId (X-User-Token) for personalised "
                "recommendations."
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
        if lookup is None:
            return RecommendationAnswer(head, cache="off")
        # A trending answer is kept behind the stamp that also covers the live counters.
        stamp = lookup.live if meta["strategy"] == "trending" else lookup.stamp
        if answer_key is not None:
            await self._cache(answer_key=answer_key, stamp=stamp, head=head, ttl=cache_seconds)
        if projecting:
            self._project_later(
                tenant_id=tenant_id,
                default_strategy=config.get("defaultStrategy"),
                lookup=lookup,
                query=query,
                decision=decision,
                ranked=ranked,
                hydration=hydration,
                depth=depth,
                model_version=context.model_version,
            )
        return RecommendationAnswer(head, cache="miss", projection=lookup.projection)

    async def _cache(self, *, answer_key: str, stamp: bytes, head: bytes, ttl: int) -> None:
        """Keep the answer for the next identical request; a failure only costs that reuse."""
        try:
            await cache_answer(
                self._redis, answer_key=answer_key, stamp=stamp, body=head, ttl_seconds=ttl
            )
        except (RedisError, OSError):
            log.warning("a recommendations answer could not be cached", exc_info=True)

    def _project_later(
        self,
        *,
        tenant_id: str,
        default_strategy: str | None,
        lookup: AnswerLookup,
        query: RecommendationsQuery,
        decision: ServingDecision,
        ranked: list[RankedCandidate],
        hydration: Hydration,
        depth: int,
        model_version: str | None,
    ) -> None:
        """Write the ranking just computed as the projection (the user's, or the product's in
        item context) of the field this request read, after the response: the next requests
        with other filters or limits are then answered by the lookup call alone."""
        if lookup.field == TRENDING_FIELD:
            return  # the tenant's trending list, rewritten on its own
        if decision.experiment_id is not None and not lookup.field.startswith(EXPERIMENT_FIELD):
            return
        # A product answered by trending for every shopper (the cold-start policy's, not the
        # ranking's fallback, which depends on the shopper's history) keeps the head only.
        for_everyone = (
            decision.choice.strategy == TRENDING
            and decision.choice.fallback_reason not in RANKING_FALLBACKS
        )
        if query.product_id and decision.choice.mode != "product" and not for_everyone:
            return  # fell back to the shopper's own history: not the product's answer
        if query.product_id:
            key = keys.product_answers(tenant_id, query.product_id)
        else:
            key = keys.user_answers(tenant_id, query.user_id)
        projector = self._projector

        async def project() -> None:
            try:
                await projector.store(
                    tenant_id=tenant_id,
                    key=key,
                    stamp=lookup.current,
                    ranked_by_field={lookup.field: (decision, ranked, depth)},
                    hydration=hydration,
                    model_version=model_version,
                    default_strategy=default_strategy,
                    reader=None if query.product_id else query.user_id,
                )
            except (RedisError, OSError):
                log.warning("projected answers could not be written", exc_info=True)

        self._spawn(project())

    def _project_trending_later(self, tenant_id: str) -> None:
        """Rewrite the tenant's trending list after the response (one rewrite at a time per
        tenant in this process): the lookup found it stale or absent."""
        if tenant_id in self._trending_pending:
            return
        self._trending_pending.add(tenant_id)
        projector = self._projector

        async def project() -> None:
            try:
                await projector.project_trending(tenant_id=tenant_id)
            except (RedisError, OSError):
                log.warning("the trending projection could not be written", exc_info=True)
            finally:
                self._trending_pending.discard(tenant_id)

        self._spawn(project())
