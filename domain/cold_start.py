"""Readiness of each strategy from the spec's minimum data, and the cold-start fallback policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.interactions import InteractionData
from domain.strategies.base import (
    COLLABORATIVE,
    CONTENT_BASED,
    FREQUENTLY_BOUGHT_TOGETHER,
    TRENDING,
)
from domain.strategies.collaborative import (
    MIN_EVENTS_PER_USER,
    MIN_USER_EVENTS_FOR_COLLABORATIVE,
    MIN_USERS_FOR_COLLABORATIVE,
)
from domain.strategies.content import MIN_CATALOG_PRODUCTS, MIN_USER_EVENTS_FOR_CONTENT
from domain.strategies.fbt import (
    MIN_ITEMS_PER_PURCHASE_SESSION,
    MIN_PURCHASE_SESSIONS_FOR_FBT,
    count_purchase_sessions_with_min_items,
)
from domain.strategies.registry import spec_of, strategies, with_role
from domain.strategies.spec import TrainingInputs
from domain.strategies.trending import MIN_TRENDING_EVENTS, TRENDING_WINDOW_SECONDS

__all__ = [
    "MIN_CATALOG_PRODUCTS",
    "MIN_EVENTS_PER_USER",
    "MIN_ITEMS_PER_PURCHASE_SESSION",
    "MIN_PURCHASE_SESSIONS_FOR_FBT",
    "MIN_TRENDING_EVENTS",
    "MIN_USERS_FOR_COLLABORATIVE",
    "MIN_USER_EVENTS_FOR_COLLABORATIVE",
    "MIN_USER_EVENTS_FOR_CONTENT",
    "TRENDING_WINDOW_SECONDS",
    "ReadinessReport",
    "StrategyChoice",
    "StrategyReadiness",
    "assess_readiness",
    "choose_strategy",
    "count_purchase_sessions_with_min_items",
    "readiness_from_counts",
]

COLD_START_USER = "cold_start_user"
COLD_START_PRODUCT = "cold_start_product"
STRATEGY_NOT_READY = "strategy_not_ready"
MISSING_PRODUCT_CONTEXT = "missing_product_context"


@dataclass(frozen=True, slots=True)
class StrategyReadiness:
    """Whether one strategy has enough data, with the counts and the thresholds compared."""

    strategy: str
    ready: bool
    counts: dict[str, int]
    thresholds: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape ``{strategy, ready, counts, thresholds}``."""
        return {
            "strategy": self.strategy,
            "ready": self.ready,
            "counts": dict(self.counts),
            "thresholds": dict(self.thresholds),
        }


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Readiness of every strategy of one tenant."""

    strategies: dict[str, StrategyReadiness] = field(default_factory=dict)

    def is_ready(self, strategy: str) -> bool:
        """Return whether ``strategy`` has enough data (unknown strategies are not ready)."""
        entry = self.strategies.get(strategy)
        return bool(entry and entry.ready)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{strategy: {ready, counts, thresholds}}`` for the admin endpoint."""
        return {name: r.to_dict() for name, r in self.strategies.items()}


def readiness_from_counts(
    *,
    users_with_min_events: int,
    purchase_sessions_with_min_items: int,
    catalog_products: int,
    events_last_24h: int,
) -> ReadinessReport:
    """Return the built-in strategies' readiness report from their counts (e.g. computed by
    SQL in the store)."""

    def entry(name: str, counts: dict[str, int], thresholds: dict[str, int]) -> StrategyReadiness:
        ready = all(counts[k] >= v for k, v in thresholds.items())
        return StrategyReadiness(name, ready, counts, thresholds)

    return ReadinessReport(
        {
            COLLABORATIVE: entry(
                COLLABORATIVE,
                {"usersWithMinEvents": users_with_min_events},
                {"usersWithMinEvents": MIN_USERS_FOR_COLLABORATIVE},
            ),
            CONTENT_BASED: entry(
                CONTENT_BASED,
                {"catalogProducts": catalog_products},
                {"catalogProducts": MIN_CATALOG_PRODUCTS},
            ),
            TRENDING: entry(
                TRENDING, {"eventsLast24h": events_last_24h}, {"eventsLast24h": MIN_TRENDING_EVENTS}
            ),
            FREQUENTLY_BOUGHT_TOGETHER: entry(
                FREQUENTLY_BOUGHT_TOGETHER,
                {"purchaseSessionsWithMinItems": purchase_sessions_with_min_items},
                {"purchaseSessionsWithMinItems": MIN_PURCHASE_SESSIONS_FOR_FBT},
            ),
        }
    )


def assess_readiness(
    *,
    data: InteractionData,
    catalog_products: int | None = None,
    now: float | None = None,
    catalog: Sequence[Mapping[str, Any]] = (),
) -> ReadinessReport:
    """Return the readiness report of one tenant's interactions and catalog: every registered
    strategy's own counts against its own minimums."""
    ref = data.now if now is None else float(now)
    if catalog_products is not None and len(catalog) != catalog_products:
        catalog = [{}] * catalog_products  # only the size is known
    inputs = TrainingInputs(data=data, catalog=catalog, now=ref)
    report = {}
    for spec in strategies():
        ready, found = spec.assess(inputs)
        report[spec.name] = StrategyReadiness(spec.name, ready, found.counts, found.thresholds)
    return ReadinessReport(report)


@dataclass(frozen=True, slots=True)
class StrategyChoice:
    """The strategy to serve, what to serve it for, and why it differs from the request."""

    strategy: str
    is_fallback: bool
    fallback_reason: str | None
    # "user": recommend for the user; "product": related products of the anchor product.
    mode: str

    def to_meta(self) -> dict[str, Any]:
        """Return the ``meta`` fields ``{strategy, isFallback, fallbackReason}``."""
        return {
            "strategy": self.strategy,
            "isFallback": self.is_fallback,
            "fallbackReason": self.fallback_reason,
        }


def choose_strategy(
    *,
    requested: str,
    readiness: ReadinessReport,
    user_event_count: int,
    product_id: str | None = None,
    product_interaction_count: int | None = None,
) -> StrategyChoice:
    """Return the strategy to serve for a request, falling back per the cold-start policy.

    What each strategy needs is its registry entry's (domain.strategies.spec); `similar` is
    the strategy that plays that role (content-based), `last resort` the one that plays that
    one (trending). Policy, first match wins:

    1. The last resort is served as asked for, never reported as a fallback.
    2. A strategy that answers only in item context, asked without ``product_id`` -> the last
       resort, ``missing_product_context``.
    3. A ``product_id`` whose product has no interaction, asked of a strategy that needs
       them (collaborative, FBT) -> similar products in "product" mode, ``cold_start_product``
       (the last resort if `similar` is not ready either).
    4. Item context with a strategy that has a product list -> that strategy in "product"
       mode if ready, else similar products (or the last resort), ``strategy_not_ready``.
    5. User context: a user with fewer events than the strategy's ``min_user_events`` (5 for
       collaborative, 1 for content-based) gets the last resort, ``cold_start_user``; a
       strategy that is not ready falls back to `similar` (for a user with events) or the
       last resort, ``strategy_not_ready``.
    """
    spec = spec_of(requested)
    similar, last = with_role("similar").name, with_role("last_resort").name
    similar_ready = readiness.is_ready(similar)

    def fallback(strategy: str, reason: str, mode: str) -> StrategyChoice:
        return StrategyChoice(strategy, True, reason, mode)

    if requested == last:
        return StrategyChoice(last, False, None, "user")
    if spec.needs_product and not product_id:
        return fallback(last, MISSING_PRODUCT_CONTEXT, "user")

    if product_id and spec.product_list is not None:
        if spec.needs_product_interactions and not product_interaction_count:
            if similar_ready:
                return fallback(similar, COLD_START_PRODUCT, "product")
            return fallback(last, COLD_START_PRODUCT, "user")
        if readiness.is_ready(requested):
            return StrategyChoice(requested, False, None, "product")
        if similar_ready:
            return fallback(similar, STRATEGY_NOT_READY, "product")
        return fallback(last, STRATEGY_NOT_READY, "user")

    if user_event_count < spec.min_user_events:
        return fallback(last, COLD_START_USER, "user")
    if readiness.is_ready(requested):
        return StrategyChoice(requested, False, None, "user")
    if requested != similar and similar_ready:
        return fallback(similar, STRATEGY_NOT_READY, "user")
    return fallback(last, STRATEGY_NOT_READY, "user")
