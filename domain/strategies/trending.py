"""Trending: weighted interaction velocity over the last hours, global to one tenant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Self

import numpy as np

from domain.interactions import InteractionData
from domain.strategies.base import TRENDING, NotFittedError, Recommendation, ranking_lists
from domain.strategies.lists import TRENDING_LENGTH
from domain.strategies.spec import (
    Candidate,
    Evaluated,
    Readiness,
    ServedList,
    StrategySpec,
    TrainingInputs,
)


class TrendingModel:
    """Rank products by weighted events per hour in the last ``window_hours`` before ``now``.

    ``velocity(j) = sum of event weights on j in (now - window, now] / window_hours``, with the
    spec's weights (view 1, click 2, add-to-cart 3, purchase 5; removals subtract). One user's
    contribution to one product is capped at ``per_user_cap`` so that a single refreshing
    visitor (or bot) cannot make a product trend. Ties go to the product with the most recent
    event. When the window holds no event at all the model falls back to all-time weighted
    popularity (``is_windowed_`` is then False) so that it always has an answer; readiness
    (see ``domain.cold_start``) reports that case. The model is per tenant because the data is.

    Parameters
    ----------
    window_hours : float
    per_user_cap : float or None
        Maximum summed weight one user can add to one product in the window.
    """

    name = TRENDING

    def __init__(self, *, window_hours: float = 24.0, per_user_cap: float | None = 15.0) -> None:
        self.window_hours = window_hours
        self.per_user_cap = per_user_cap

    def fit(self, data: InteractionData, /, *, now: float | None = None) -> Self:
        """Compute velocities at ``now`` (default: the data's ``now``) and return self."""
        ref = data.now if now is None else float(now)
        in_window = (data.event_times > ref - self.window_hours * 3600.0) & (
            data.event_times <= ref
        )
        self.is_windowed_ = bool(in_window.any())
        mask = in_window if self.is_windowed_ else data.event_times <= ref
        scores = self._weighted_sum(data, mask)
        if self.is_windowed_:
            scores = scores / self.window_hours
        latest = np.full(data.n_products, -np.inf)
        np.maximum.at(latest, data.event_items[mask], data.event_times[mask])
        # Lexicographic rank: score first, then recency of the last event.
        order = np.lexsort((-latest, -scores))
        order = order[scores[order] > 0]
        self.now_ = ref
        self.scores_ = scores
        self.ranking_ = order
        self.product_ids_ = data.product_ids
        self.n_window_events_ = int(in_window.sum())
        return self

    def _weighted_sum(self, data: InteractionData, mask: np.ndarray) -> np.ndarray:
        """Return summed, per-user-capped weights per product, shape (n_products,)."""
        users, items = data.event_users[mask], data.event_items[mask]
        weights = data.event_weights[mask]
        if users.size == 0:
            return np.zeros(data.n_products)
        key = users * np.int64(data.n_products) + items
        uniq, inverse = np.unique(key, return_inverse=True)
        per_pair = np.bincount(inverse, weights=weights, minlength=uniq.size)
        per_pair = np.maximum(per_pair, 0.0)
        if self.per_user_cap is not None:
            per_pair = np.minimum(per_pair, self.per_user_cap)
        return np.bincount(uniq % data.n_products, weights=per_pair, minlength=data.n_products)

    def top(self, *, n: int = 10, exclude: Iterable[str] = ()) -> list[Recommendation]:
        """Return the ``n`` most trending products, minus ``exclude``."""
        if not hasattr(self, "ranking_"):
            raise NotFittedError("TrendingModel is not fitted")
        banned = set(exclude)
        out: list[Recommendation] = []
        for j in self.ranking_:
            pid = str(self.product_ids_[j])
            if pid in banned:
                continue
            out.append(Recommendation(pid, float(self.scores_[j])))
            if len(out) == n:
                break
        return out

    def recommend(
        self, *, user: str | None = None, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return trending products (the same for every user), minus ``exclude``."""
        return self.top(n=n, exclude=exclude)


MIN_TRENDING_EVENTS = 1  # readiness: events in the last 24 h
TRENDING_WINDOW_SECONDS = 24 * 3600.0


def _train(inputs: TrainingInputs) -> dict[str, Any]:
    model = TrendingModel().fit(inputs.data, now=inputs.now)
    return {
        "trending": [[r.product_id, round(r.score, 6), []] for r in model.top(n=TRENDING_LENGTH)]
    }


def _readiness(inputs: TrainingInputs) -> Readiness:
    data, ref = inputs.data, float(inputs.now)
    window = (data.event_times > ref - TRENDING_WINDOW_SECONDS) & (data.event_times <= ref)
    return Readiness({"eventsLast24h": int(window.sum())}, {"eventsLast24h": MIN_TRENDING_EVENTS})


def trending_candidates(context: Any) -> list[Candidate]:
    """The trained 24 h velocity plus this and last hour's live counters (fresh within
    seconds), from a ServingContext."""
    scores: dict[str, float] = {pid: score for pid, score, _ in context.lists.get(TRENDING, [])}
    for product_id, live in context.live_trending:
        scores[product_id] = scores.get(product_id, 0.0) + live / 24.0
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(pid, score, ()) for pid, score in ranked]


def evaluation_lists(split: Any, catalog: Sequence[Any]) -> np.ndarray:
    """Offline evaluation (domain.evaluation): the trending ranking at the split's cut (the
    last 24 h before it), minus what each scored user has."""
    model = TrendingModel().fit(split.train, now=split.cut)
    return ranking_lists(model.ranking_, split.train.matrix, split.eval_rows)


SPEC = StrategySpec(
    TRENDING,
    lists=(ServedList("trending", "trending", "tenant"),),
    train=_train,
    readiness=_readiness,
    user_candidates=trending_candidates,
    min_user_events=0,
    role="last_resort",
    projected_for_tenant=True,
    # A short-window popularity itself: held to its published version only.
    evaluation=Evaluated(evaluation_lists),
)
