"""Frequently bought together: normalised co-purchase counts around an anchor product."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

import numpy as np
import scipy.sparse as sp

from domain.interactions import SECONDS_PER_DAY, InteractionData
from domain.strategies.base import (
    FREQUENTLY_BOUGHT_TOGETHER,
    NotFittedError,
    Recommendation,
    indices_of,
    rows_to_sparse,
    top_k_per_row,
)


def purchase_baskets(data: InteractionData, *, window_days: float) -> np.ndarray:
    """Assign every purchase event to a basket id (-1 for events that are not purchases).

    A basket is a user's purchases in one session, merged with the user's other sessions (and
    session-less purchases) that start within ``window_days`` of the basket's first purchase
    (greedy windows per user, so every pair inside a basket is at most ``window_days`` apart).
    ``window_days=0`` keeps sessions only (session-less purchases at the same second group).

    Parameters
    ----------
    data : InteractionData
    window_days : float

    Returns
    -------
    ndarray of shape (n_events,), int64
    """
    baskets = np.full(data.n_events, -1, dtype=np.int64)
    ev = np.flatnonzero(data.event_is_purchase)
    if ev.size == 0:
        return baskets
    users, times, sessions = data.event_users[ev], data.event_times[ev], data.event_sessions[ev]
    # A "unit" is a session, or a single session-less purchase second of a user.
    unit_key = np.where(sessions >= 0, sessions, -1 - np.round(times).astype(np.int64))
    pair = np.stack([users, unit_key], axis=1)
    units, unit_of_event = np.unique(pair, axis=0, return_inverse=True)
    unit_of_event = unit_of_event.ravel()
    unit_start = np.full(units.shape[0], np.inf)
    np.minimum.at(unit_start, unit_of_event, times)
    unit_user = units[:, 0]
    order = np.lexsort((unit_start, unit_user))
    window = window_days * SECONDS_PER_DAY
    unit_basket = np.empty(units.shape[0], dtype=np.int64)
    basket = -1
    current_user = -1
    opened = -np.inf
    # Greedy windows are sequential by nature; this loop runs once per session, not per event.
    for u in order.tolist():
        if unit_user[u] != current_user or window <= 0 or unit_start[u] >= opened + window:
            basket += 1
            current_user = int(unit_user[u])
            opened = float(unit_start[u])
        unit_basket[u] = basket
    baskets[ev] = unit_basket[unit_of_event]
    return baskets


class FrequentlyBoughtTogetherModel:
    """Products bought with an anchor product, normalised so best-sellers do not drown all.

    Baskets come from :func:`purchase_baskets` (same session, or the same user within
    ``window_days``). Each basket of ``m`` products weighs ``m ** -basket_size_damping`` (a
    product pair in a huge basket is weak evidence). With ``c(a, b)`` the weighted number of
    baskets holding both and ``n(b)`` the weighted number holding ``b``::

        score(a -> b) = c(a, b) / n(b) ** popularity_exponent * c(a, b) / (c(a, b) + shrinkage)

    ``popularity_exponent`` 0 is raw co-occurrence (best-sellers everywhere), 1 is lift-like
    (noisy for rare products), in between is a damped cosine; the shrinkage factor discounts
    pairs seen only a few times. Pairs seen in fewer than ``min_count`` baskets are dropped.
    Each product keeps its ``n_neighbours`` best partners in ``neighbours_``.

    Parameters
    ----------
    window_days : float
    popularity_exponent : float
    shrinkage : float
    basket_size_damping : float
    min_count : float
    n_neighbours : int
    block_size : int
    """

    name = FREQUENTLY_BOUGHT_TOGETHER

    def __init__(
        self,
        *,
        window_days: float = 7.0,
        popularity_exponent: float = 0.3,
        shrinkage: float = 2.0,
        basket_size_damping: float = 0.0,
        min_count: float = 1.0,
        n_neighbours: int = 50,
        block_size: int = 1024,
    ) -> None:
        self.window_days = window_days
        self.popularity_exponent = popularity_exponent
        self.shrinkage = shrinkage
        self.basket_size_damping = basket_size_damping
        self.min_count = min_count
        self.n_neighbours = n_neighbours
        self.block_size = block_size

    def fit(self, data: InteractionData, /) -> Self:
        """Count co-purchases, normalise them, keep the best partners per product; return self."""
        baskets = purchase_baskets(data, window_days=self.window_days)
        ev = baskets >= 0
        n_baskets = int(baskets.max()) + 1 if ev.any() else 0
        b = sp.csr_matrix(
            (np.ones(int(ev.sum()), dtype=np.float32), (baskets[ev], data.event_items[ev])),
            shape=(n_baskets, data.n_products),
        )
        b.sum_duplicates()
        b.data[:] = 1.0  # a product bought twice in a basket is still one basket
        sizes = np.diff(b.indptr).astype(np.float64)
        basket_weight = np.power(np.maximum(sizes, 1.0), -self.basket_size_damping)
        weighted = (sp.diags(basket_weight.astype(np.float32)) @ b).tocsr()
        bt = weighted.T.tocsr()
        support = np.asarray(weighted.sum(axis=0)).ravel()
        denominator = np.power(np.maximum(support, 1e-12), self.popularity_exponent)

        n_items = data.n_products
        k = min(self.n_neighbours, max(n_items - 1, 0))
        parts = []
        for start in range(0, n_items, self.block_size):
            block = np.arange(start, min(start + self.block_size, n_items))
            counts = (bt[block] @ b).toarray()  # (b, n_products)
            counts[np.arange(block.shape[0]), block] = 0.0
            with np.errstate(divide="ignore", invalid="ignore"):
                scores = counts / denominator * counts / (counts + self.shrinkage)
            scores[counts < max(self.min_count, 1e-9)] = -np.inf
            idx, val = top_k_per_row(scores.astype(np.float32), k)
            parts.append(rows_to_sparse(idx, val, n_items))
        self.neighbours_ = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((n_items, n_items))
        self.support_ = support
        self.n_baskets_ = n_baskets
        self.product_ids_ = data.product_ids
        self.product_index_ = data.product_index
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "neighbours_"):
            raise NotFittedError("FrequentlyBoughtTogetherModel is not fitted")

    def similar_items(
        self, *, product: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return up to ``n`` products bought together with ``product`` (empty if unknown)."""
        return self.recommend_for_products(products=[product], n=n, exclude=exclude)

    def recommend_for_products(
        self, *, products: Iterable[str], n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return products bought together with any of ``products`` (e.g. a cart), summed."""
        self._check_fitted()
        anchors = indices_of(products, self.product_index_)
        if anchors.size == 0:
            return []
        rows = self.neighbours_[anchors]
        scores = np.asarray(rows.sum(axis=0)).ravel()
        scores[anchors] = 0.0
        scores[indices_of(exclude, self.product_index_)] = 0.0
        candidates = np.flatnonzero(scores > 0)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:n]
        dense = rows.toarray()
        out = []
        for j in order:
            contribution = dense[:, j]
            ranked = np.argsort(-contribution, kind="stable")[:3]
            because = tuple(
                str(self.product_ids_[anchors[r]]) for r in ranked if contribution[r] > 0
            )
            out.append(Recommendation(str(self.product_ids_[j]), float(scores[j]), because))
        return out

    def top_indices(self, anchors: np.ndarray, *, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return the top ``n`` partners of each anchor.

        Parameters
        ----------
        anchors : ndarray of shape (b,), int

        Returns
        -------
        indices : ndarray of shape (b, n), int64
        scores : ndarray of shape (b, n), float32 (``-inf`` padding)
        """
        self._check_fitted()
        dense = self.neighbours_[anchors].toarray()
        dense[dense <= 0] = -np.inf
        return top_k_per_row(dense, n)
