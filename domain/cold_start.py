"""Readiness of each strategy from the spec's minimum data, and the cold-start fallback policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domain.interactions import InteractionData
from domain.strategies.base import (
    COLLABORATIVE,
    CONTENT_BASED,
    FREQUENTLY_BOUGHT_TOGETHER,
    TRENDING,
)
from domain.strategies.registry import STRATEGY_NAMES

COLD_START_USER = "cold_start_user"
COLD_START_PRODUCT = "cold_start_product"
STRATEGY_NOT_READY = "strategy_not_ready"
MISSING_PRODUCT_CONTEXT = "missing_product_context"

# Spec minimums.
MIN_USERS_FOR_COLLABORATIVE = 1_000
MIN_EVENTS_PER_USER = 5
MIN_PURCHASE_SESSIONS_FOR_FBT = 100
MIN_ITEMS_PER_PURCHASE_SESSION = 2
MIN_CATALOG_PRODUCTS = 50
MIN_TRENDING_EVENTS = 1
TRENDING_WINDOW_SECONDS = 24 * 3600.0
# A user below this many events is "new" for the collaborative strategy (spec: 0-4 events).
MIN_USER_EVENTS_FOR_COLLABORATIVE = 5
# Content-based works for new users with 1+ event (spec), so only 0 events is a cold start.
MIN_USER_EVENTS_FOR_CONTENT = 1


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
    """Return the readiness report from counts (e.g. computed by SQL in the store)."""

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


def count_purchase_sessions_with_min_items(data: InteractionData, *, min_items: int) -> int:
    """Return how many sessions hold purchases of at least ``min_items`` distinct products."""
    keep = data.event_is_purchase & (data.event_sessions >= 0)
    if not keep.any():
        return 0
    pairs = np.unique(np.stack([data.event_sessions[keep], data.event_items[keep]], axis=1), axis=0)
    per_session = np.bincount(pairs[:, 0])
    return int((per_session >= min_items).sum())


def assess_readiness(
    *, data: InteractionData, catalog_products: int, now: float | None = None
) -> ReadinessReport:
    """Return the readiness report of one tenant's interactions and catalog size."""
    ref = data.now if now is None else float(now)
    window = (data.event_times > ref - TRENDING_WINDOW_SECONDS) & (data.event_times <= ref)
    return readiness_from_counts(
        users_with_min_events=int((data.events_per_user() >= MIN_EVENTS_PER_USER).sum()),
        purchase_sessions_with_min_items=count_purchase_sessions_with_min_items(
            data, min_items=MIN_ITEMS_PER_PURCHASE_SESSION
        ),
        catalog_products=catalog_products,
        events_last_24h=int(window.sum()),
    )


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

    Policy, first match wins:

    1. ``frequently_bought_together`` without ``product_id`` -> trending,
       ``missing_product_context``.
    2. A ``product_id`` whose product has no interaction, asked of an interaction-based
       strategy (collaborative, FBT) -> content-based neighbours, ``cold_start_product``
       (trending if content-based is not ready either).
    3. Item context (``product_id`` given) with collaborative, content-based or FBT ->
       that strategy in "product" mode if ready, else content-based neighbours (or trending),
       ``strategy_not_ready``.
    4. User context: collaborative needs 5+ events and content-based 1+ event, else trending,
       ``cold_start_user``; a strategy that is not ready falls back to content-based (for a
       user with events) or trending, ``strategy_not_ready``.
    5. Trending is the last resort and is never reported as a fallback when asked for.
    """
    if requested not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {requested!r}")
    content_ready = readiness.is_ready(CONTENT_BASED)

    def fallback(strategy: str, reason: str, mode: str) -> StrategyChoice:
        return StrategyChoice(strategy, True, reason, mode)

    if requested == TRENDING:
        return StrategyChoice(TRENDING, False, None, "user")
    if requested == FREQUENTLY_BOUGHT_TOGETHER and not product_id:
        return fallback(TRENDING, MISSING_PRODUCT_CONTEXT, "user")

    if product_id:
        needs_interactions = requested in (COLLABORATIVE, FREQUENTLY_BOUGHT_TOGETHER)
        if needs_interactions and not product_interaction_count:
            if content_ready:
                return fallback(CONTENT_BASED, COLD_START_PRODUCT, "product")
            return fallback(TRENDING, COLD_START_PRODUCT, "user")
        if readiness.is_ready(requested):
            return StrategyChoice(requested, False, None, "product")
        if content_ready:
            return fallback(CONTENT_BASED, STRATEGY_NOT_READY, "product")
        return fallback(TRENDING, STRATEGY_NOT_READY, "user")

    minimum = (
        MIN_USER_EVENTS_FOR_COLLABORATIVE
        if requested == COLLABORATIVE
        else MIN_USER_EVENTS_FOR_CONTENT
    )
    if user_event_count < minimum:
        return fallback(TRENDING, COLD_START_USER, "user")
    if readiness.is_ready(requested):
        return StrategyChoice(requested, False, None, "user")
    if requested != CONTENT_BASED and content_ready:
        return fallback(CONTENT_BASED, STRATEGY_NOT_READY, "user")
    return fallback(TRENDING, STRATEGY_NOT_READY, "user")
