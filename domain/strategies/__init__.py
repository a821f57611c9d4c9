"""Recommendation strategies: collaborative, content-based, trending, frequently bought together."""

from domain.strategies.base import (
    COLLABORATIVE,
    CONTENT_BASED,
    FREQUENTLY_BOUGHT_TOGETHER,
    TRENDING,
    ItemRecommender,
    NotFittedError,
    Recommendation,
    UserRecommender,
    blend_neighbour_lists,
)
from domain.strategies.collaborative import CollaborativeModel
from domain.strategies.content import ContentModel
from domain.strategies.fbt import FrequentlyBoughtTogetherModel
from domain.strategies.registry import REGISTRY, STRATEGY_NAMES
from domain.strategies.spec import StrategySpec
from domain.strategies.trending import TrendingModel

__all__ = [
    "COLLABORATIVE",
    "CONTENT_BASED",
    "FREQUENTLY_BOUGHT_TOGETHER",
    "REGISTRY",
    "STRATEGY_NAMES",
    "TRENDING",
    "CollaborativeModel",
    "ContentModel",
    "FrequentlyBoughtTogetherModel",
    "ItemRecommender",
    "NotFittedError",
    "Recommendation",
    "StrategySpec",
    "TrendingModel",
    "UserRecommender",
    "blend_neighbour_lists",
]
