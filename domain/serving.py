"""Serving rules: which strategy answers a request, which candidates survive the filters, and
the shape of each recommended item. Pure: the context is read from projections by the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.cold_start import (
    ReadinessReport,
    StrategyChoice,
    StrategyReadiness,
    choose_strategy,
)
from domain.experiments.assignment import assign_variant
from domain.strategies.base import COLLABORATIVE
from domain.strategies.registry import spec_of, strategy_names, with_role

DEFAULT_STRATEGY = COLLABORATIVE
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
NO_MODEL = "no_model_yet"
USER_NOT_IN_MODEL = "user_not_in_model_yet"
PRODUCT_NOT_IN_MODEL = "product_not_in_model_yet"
# Fallbacks the ranking takes when the chosen list is empty (they depend on the shopper).
RANKING_FALLBACKS = frozenset({NO_MODEL, USER_NOT_IN_MODEL, PRODUCT_NOT_IN_MODEL})

# (productId, score, because)
Candidate = tuple[str, float, tuple[str, ...]]


@dataclass(frozen=True)
class ServingContext:
    """What the projections say about one request, before hydration (one round trip)."""

    model_version: str | None
    readiness: ReadinessReport
    widget: Mapping[str, Any] | None
    experiment: Mapping[str, Any] | None
    history: Sequence[tuple[str, str, float]]  # (eventType, productId, unix time), newest first
    history_count: int
    lists: Mapping[str, Sequence[Candidate]]
    recent_content: Mapping[str, Sequence[Candidate]]  # recent product -> content neighbours
    live_trending: Sequence[tuple[str, float]]  # this and the last hour, summed
    product_interactions: int | None


@dataclass(frozen=True)
class Hydration:
    """What the projections say about some candidates: cards, availability, purchases."""

    cards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    available: frozenset[str] = frozenset()
    purchased: frozenset[str] = frozenset()

    def merged(self, other: Hydration) -> Hydration:
        """Both hydrations together (for a second, deeper look at the ranking)."""
        return Hydration(
            {**self.cards, **other.cards},
            self.available | other.available,
            self.purchased | other.purchased,
        )


@dataclass(frozen=True)
class RankedCandidate:
    """A candidate in serving order, with the strategy that placed it."""

    product_id: str
    score: float
    strategy: str
    because: tuple[str, ...]


@dataclass(frozen=True)
class ServingRequest:
    """A validated recommendations request."""

    user_id: str
    strategy: str | None = None
    product_id: str | None = None
    placement_id: str | None = None
    limit: int | None = None
    exclude: frozenset[str] = frozenset()
    category: str | None = None
    include_purchased: bool = False
    tenant_default_strategy: str | None = None


@dataclass(frozen=True)
class ServingDecision:
    """The strategy chosen for a request and why."""

    requested: str
    choice: StrategyChoice
    experiment_id: str | None = None
    variant: str | None = None
    limit: int = DEFAULT_LIMIT


@dataclass
class ServedItem:
    """One recommended product with its card and the reason it is there."""

    product_id: str
    score: float
    strategy: str
    because: tuple[str, ...]
    card: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The API shape of a recommended item."""
        return {
            "productId": self.product_id,
            "score": round(self.score, 6),
            "name": self.card.get("name"),
            "price": self.card.get("price"),
            "currency": self.card.get("currency"),
            "imageUrl": self.card.get("imageUrl"),
            "url": self.card.get("url"),
            "category": self.card.get("category"),
            "reason": {"strategy": self.strategy, "because": list(self.because)},
        }


def answer_cache_seconds(config: Mapping[str, Any] | None, *, default: int) -> int:
    """How long the tenant's answers may be served unchanged: its `answerCacheSeconds`, else
    the server's default."""
    value = (config or {}).get("answerCacheSeconds")
    if type(value) is not int or value < 0:
        return default
    return value


def readiness_from_meta(meta: Mapping[str, Any] | None) -> ReadinessReport:
    """The readiness report a training run published (nothing is ready before training)."""
    strategies = {}
    for name, entry in (meta or {}).items():
        if name in strategy_names() and isinstance(entry, Mapping):
            strategies[name] = StrategyReadiness(
                name,
                bool(entry.get("ready")),
                dict(entry.get("counts") or {}),
                dict(entry.get("thresholds") or {}),
            )
    return ReadinessReport(strategies)


def decide(request: ServingRequest, context: ServingContext) -> ServingDecision:
    """Pick the strategy: query, else running experiment, else widget, else tenant default."""
    experiment_id = variant = None
    requested = request.strategy
    experiment = context.experiment
    if requested is None and experiment:
        experiment_id = str(experiment["experimentId"])
        variant = assign_variant(
            experiment_id=experiment_id,
            user_id=request.user_id,
            traffic_split=int(experiment["trafficSplit"]),
        )
        key = "variantStrategy" if variant == "variant" else "controlStrategy"
        requested = str(experiment[key])
    widget = context.widget or {}
    if requested is None and widget.get("strategy") in strategy_names():
        requested = str(widget["strategy"])
    if requested is None and request.tenant_default_strategy in strategy_names():
        requested = request.tenant_default_strategy
    requested = requested or DEFAULT_STRATEGY
    limit = request.limit or int(widget.get("maxItems") or DEFAULT_LIMIT)
    # Presence is enough here: decoding the published list is left to the ranking.
    last = with_role("last_resort").name
    last_available = last in context.lists or bool(context.live_trending)
    readiness = context.readiness
    if last_available and not readiness.is_ready(last):
        # Live counters exist even before the first training run.
        readiness = ReadinessReport(
            {**readiness.strategies, last: StrategyReadiness(last, True, {}, {})}
        )
    choice = choose_strategy(
        requested=requested,
        readiness=readiness,
        user_event_count=context.history_count,
        product_id=request.product_id,
        product_interaction_count=context.product_interactions,
    )
    return ServingDecision(requested, choice, experiment_id, variant, min(limit, MAX_LIMIT))


def decide_by_trending(
    request: ServingRequest, *, experiment: Mapping[str, Any] | None
) -> ServingDecision:
    """The decision for an answer that is the tenant's trending list whatever the readiness:
    a trending request, or a shopper without events (the cold-start policy's trending, or
    FBT's missing product context), in their arm of a running experiment when one runs."""
    context = ServingContext(
        model_version=None,
        readiness=ReadinessReport({}),
        widget=None,
        experiment=experiment,
        history=(),
        history_count=0,
        lists={},
        recent_content={},
        live_trending=(("", 1.0),),  # trending is served: it counts as ready
        product_interactions=None,
    )
    return decide(request, context)


def candidates_for(choice: StrategyChoice, context: ServingContext) -> list[Candidate]:
    """The ranked candidates of the chosen strategy, before filtering: its product list in
    item context, else its user candidates (domain.strategies.registry)."""
    spec = spec_of(choice.strategy)
    if choice.mode == "product" and spec.product_list is not None:
        return list(context.lists.get(spec.product_list, []))
    return list(spec.user_candidates(context))


def rank(
    request: ServingRequest, context: ServingContext, *, depth: int = 200
) -> tuple[ServingDecision, list[RankedCandidate]]:
    """Decide, then rank up to `depth` candidates: the chosen strategy's, then the backfill
    (similar products in item context, then trending), each source computed only when the
    ones before it ran short. Excluded ids and the anchor are left out; what needs hydration
    (availability, purchases, category) is checked by :func:`select`."""
    decision = decide(request, context)
    choice = decision.choice
    similar, last = with_role("similar"), with_role("last_resort")
    primary = candidates_for(choice, context)
    if not primary and choice.strategy != last.name:
        # Ready strategy, but this user or product is not in the published model yet.
        if context.model_version is None:
            reason = NO_MODEL
        elif choice.mode == "product":
            reason = PRODUCT_NOT_IN_MODEL
        else:
            reason = USER_NOT_IN_MODEL
        if choice.mode == "product" and context.lists.get(similar.product_list or ""):
            choice = StrategyChoice(similar.name, True, reason, "product")
        else:
            fallback_strategy = similar.name if context.recent_content else last.name
            choice = StrategyChoice(fallback_strategy, True, reason, "user")
        decision = ServingDecision(
            decision.requested, choice, decision.experiment_id, decision.variant, decision.limit
        )
        primary = candidates_for(choice, context)
    sources: list[tuple[Callable[[], Sequence[Candidate]], str]] = [
        (lambda: primary, choice.strategy)
    ]
    if choice.mode == "product" and choice.strategy != similar.name:
        sources.append((lambda: context.lists.get(similar.product_list or "", []), similar.name))
    if choice.strategy != last.name:
        sources.append((lambda: list(last.user_candidates(context)), last.name))
    banned = set(request.exclude)
    if request.product_id:
        banned.add(request.product_id)
    ranked: list[RankedCandidate] = []
    for source, strategy in sources:
        for product_id, score, because in source():
            if len(ranked) >= depth:
                return decision, ranked
            if product_id not in banned:
                banned.add(product_id)
                ranked.append(RankedCandidate(product_id, float(score), strategy, because))
    return decision, ranked


def select(
    request: ServingRequest,
    decision: ServingDecision,
    ranked: Sequence[RankedCandidate],
    hydration: Hydration,
) -> list[ServedItem]:
    """The first `limit` ranked candidates that are available, have a card, are not bought
    (unless asked for) and are in the requested category."""
    category = request.category.casefold() if request.category else None
    chosen: list[ServedItem] = []
    for candidate in ranked:
        if len(chosen) >= decision.limit:
            break
        product_id = candidate.product_id
        card = hydration.cards.get(product_id)
        if card is None or product_id not in hydration.available:
            continue
        if not request.include_purchased and product_id in hydration.purchased:
            continue
        if category is not None and str(card.get("category") or "").casefold() != category:
            continue
        chosen.append(
            ServedItem(product_id, candidate.score, candidate.strategy, candidate.because, card)
        )
    return chosen


def serve(
    request: ServingRequest, context: ServingContext, hydration: Hydration
) -> tuple[ServingDecision, list[ServedItem]]:
    """Rank and select in one go, when every candidate's hydration is at hand."""
    decision, ranked = rank(request, context)
    return decision, select(request, decision, ranked, hydration)
