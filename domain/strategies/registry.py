"""The strategy registry: what the api, serving and projections need to know of each
strategy, asked here rather than spelled out in each of them. A strategy is its module (or
folder) under domain/strategies plus one entry below."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from domain.strategies.base import (
    COLLABORATIVE,
    CONTENT_BASED,
    FREQUENTLY_BOUGHT_TOGETHER,
    TRENDING,
)


@dataclass(frozen=True, slots=True)
class ServedList:
    """A list a published model holds for serving: `name` in ServingContext.lists, read from
    the version's hash `suffix` by the user's id, the product's id, or whole (`tenant`)."""

    name: str
    suffix: str
    key: Literal["user", "product", "tenant"]


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """One strategy as serving sees it."""

    name: str
    # Its ranked answers are projected per user (a user's requests) and per product (item
    # context), for the answer lookup to filter without ranking.
    projected_for_users: bool
    projected_for_products: bool
    lists: tuple[ServedList, ...]
    # Its answer is one list per tenant (and per category), the same for every shopper.
    projected_for_tenant: bool = False


REGISTRY: tuple[StrategySpec, ...] = (
    StrategySpec(
        COLLABORATIVE,
        projected_for_users=True,
        projected_for_products=True,
        lists=(
            ServedList("collaborative", "cf", "user"),
            ServedList("collaborativeItem", "cfitem", "product"),
        ),
    ),
    StrategySpec(
        CONTENT_BASED,
        projected_for_users=True,
        projected_for_products=True,
        lists=(ServedList("contentItem", "content", "product"),),
    ),
    # Follows the live counters: projected once per tenant, rewritten as events come.
    StrategySpec(
        TRENDING,
        projected_for_users=False,
        projected_for_products=False,
        lists=(ServedList("trending", "trending", "tenant"),),
        projected_for_tenant=True,
    ),
    StrategySpec(
        FREQUENTLY_BOUGHT_TOGETHER,
        projected_for_users=False,
        projected_for_products=True,
        lists=(ServedList("fbtItem", "fbt", "product"),),
    ),
)

STRATEGY_NAMES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)
PROJECTED_STRATEGIES: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.projected_for_users)
PROJECTED_PRODUCT_STRATEGIES: tuple[str, ...] = tuple(
    s.name for s in REGISTRY if s.projected_for_products
)
TENANT_PROJECTED_STRATEGIES: tuple[str, ...] = tuple(
    s.name for s in REGISTRY if s.projected_for_tenant
)
SERVED_LISTS: tuple[ServedList, ...] = tuple(lst for spec in REGISTRY for lst in spec.lists)


def strategy_names() -> tuple[str, ...]:
    """The names of every registered strategy."""
    return STRATEGY_NAMES
