"""Recommendation strategies: collaborative, content-based, trending, frequently bought together."""

from domain.strategies.base import (
    COLLABORATIVE,
    CONTENT_BASED,
    FREQUENTLY_BOUGHT_TOGETHER,
    STRATEGY_NAMES,
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
from domain.strategies.trending import TrendingModel

__all__ = [
    "COLLABORATIVE",
    "CONTENT_BASED",
    "FREQUENTLY_BOUGHT_TOGETHER",
    "STRATEGY_NAMES",
    "TRENDING",
    "CollaborativeModel",
    "ContentModel",
    "FrequentlyBoughtTogetherModel",
    "ItemRecommender",
    "NotFittedError",
    "Recommendation",
    "TrendingModel",
    "UserRecommender",
    "blend_neighbour_lists",
]
