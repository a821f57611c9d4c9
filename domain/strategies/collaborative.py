"""Collaborative filtering: user-user cosine neighbours blended with a local ridge item model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

from domain.interactions import SECONDS_PER_DAY, InteractionData
from domain.strategies.base import (
    COLLABORATIVE,
    EVAL_K,
    NotFittedError,
    Recommendation,
    budget_mask,
    indices_of,
    rows_to_sparse,
    sparse_top_k,
    top_k_per_row,
)
from domain.strategies.lists import ITEM_LIST_LENGTH, neighbour_lists, user_lists
from domain.strategies.spec import (
    Candidate,
    Evaluated,
    Readiness,
    ServedList,
    StrategySpec,
    TrainingInputs,
)

WeightTransform = Literal["log1p", "binary", "raw"]
# Targets whose neighbourhood Gram matrices are computed in one sparse product: a few only,
# since the product also computes the (discarded) pairs across targets.
GRAM_CHUNK = 4
# Targets whose ridge systems are solved in one batched call.
SOLVE_BATCH = 512


class CollaborativeModel:
    """User-user collaborative filtering on interaction vectors, blended with an item model.

    What it does, in order:

    1. **Interaction vectors.** Each user is a row of the tenant's user x product matrix of
       weighted events (view 1, click 2, add-to-cart 3, purchase 5, removals subtract). The
       weights are optionally aged with a half-life on the last event time (``half_life_days``),
       then compressed (``weight_transform``: ``log1p`` by default, so a product bought twenty
       times does not outweigh everything else).
    2. **Popularity damping.** Columns are scaled by ``idf ** idf_power`` with
       ``idf = log(1 + n_users / n_users_of_product)``: sharing a niche product says more about
       two users than sharing milk.
    3. **Shrunk cosine.** ``sim(u, v) = <x_u, x_v> / (|x_u| |x_v| + shrinkage)``: pairs with
       little evidence are pulled towards 0. Only the ``n_neighbours`` most similar users are
       kept (computed in blocks of ``block_size`` users with a sparse product and
       ``argpartition``; a users x users matrix is never built), raised to
       ``similarity_power`` to favour the closest neighbours.
    4. **User-user score.** ``s_uu(u, j) = sum_v sim(u, v) * r_vj / n_v ** neighbour_damping``
       over the neighbours, where ``r`` is the (compressed, undamped) interaction value and
       ``n_v`` the number of products of ``v`` (a neighbour who buys everything votes less).
    5. **Item model: local ridge regression.** Each product ``j`` is predicted from its
       ``ridge_neighbours`` products of highest plain cosine (on who interacted with what,
       0/1): ``w_j = (G_NN + ridge_lambda I)^-1 G_Nj``, with ``G`` the co-occurrence counts
       among the neighbourhood ``N``. It is the closed-form item regression of EASE restricted
       to each product's neighbourhood: a product explained by a neighbour already owned does
       not also collect the votes of that neighbour's companions, and no products x products
       matrix is ever inverted, only one small system per product.
       ``s_ii(u, j) = sum_h x_uh * w_hj`` over the user's products. ``ridge_neighbours=0``
       scores with the cosine item neighbours of step 7 instead.
    6. **Blend and product factors.** The final score is
       ``(1 - item_weight) * s_uu / max(s_uu) + item_weight * s_ii / max(s_ii)`` per user,
       divided by ``popularity ** popularity_penalty`` and multiplied by
       ``trend ** trend_power``, where ``trend = (recent + 1) / (expected + 1)`` compares the
       users of a product in the last ``trend_days`` with the share of its users that window
       would hold at a steady pace: what similar users buy *now* (season, new arrivals) comes
       first. ``item_weight=0`` is pure user-user (the spec's design). A history that
       reaches nothing through either (one best-seller left out of the user similarities and
       in no product's neighbourhood) is scored by the cosine item neighbours of step 7.
    7. **Item neighbours.** Items are also compared by the same shrunk cosine on their user
       columns, divided by the neighbour product's popularity ``** item_popularity_damping``;
       each product keeps its ``n_item_neighbours`` nearest products. They explain results
       (``because``), answer :meth:`similar_items` and are published for serving.

    **Scale.** Every product is a sparse x sparse product kept sparse, with each row's top
    entries taken from its stored values, so no block is ever densified to the width of the
    catalog or of the user base. A user-user product costs ``sum_j n_users_of_j ** 2`` pairs
    and an item-item one ``sum_u n_products_of_u ** 2``; when that exceeds ``max_pair_work``,
    the most widely held products are left out of the user similarities (an IDF weight of 0
    for best-sellers, which say little about taste) and the broadest users out of the item
    similarities and the ridge model, until the work fits. Smaller tenants (Complete Journey
    included) are computed exactly; ``user_columns_kept_`` and ``item_rows_kept_`` tell what
    was used. The ridge model costs one ``(ridge_neighbours + 1)``-square Gram matrix and one
    solve per product; the Gram matrices are gathered from the whole products x products one
    when it fits ``dense_gram_mb``, else computed by sparse products a few targets at a time.

    Products the user already interacted with are excluded. Learned attributes end in ``_``.
    The defaults were tuned on Complete Journey (``python -m bench.offline_eval.tune``, on
    validation splits before the test window): the ridge item model, the blend, the trend
    factor and the popularity penalty helped there; shrinkage and IDF damping did not.

    Parameters
    ----------
    n_neighbours : int
        Users kept per user.
    shrinkage : float
        Added to the cosine denominator, for users and items.
    similarity_power : float
        Exponent applied to kept similarities.
    idf_power : float
        Exponent of the IDF column weight (0 disables damping).
    weight_transform : {"log1p", "binary", "raw"}
        Compression of summed event weights.
    half_life_days : float or None
        Recency half-life applied to each user-product's weight by its last event time.
    item_weight : float
        Share of the item model's score in the blend, in [0, 1].
    ridge_neighbours : int
        Products each product is regressed on (0 scores with the cosine item neighbours).
    ridge_lambda : float
        L2 penalty of the ridge item model.
    trend_days : float
        Recent window of the trend factor.
    trend_power : float
        Exponent of the trend factor (0 disables it).
    n_item_neighbours : int
        Products kept per product.
    item_similarity_power : float
        Exponent applied to kept item similarities.
    popularity_penalty : float
        Exponent of the final division by product popularity (0 disables it).
    neighbour_damping : float
        Exponent of the division of a neighbour's votes by its number of products.
    item_popularity_damping : float
        Exponent of the division of item-item similarities by the neighbour's popularity.
    max_pair_work : float
        Budget of multiply-adds of each similarity product (``inf`` is always exact).
    dense_gram_mb : float
        Largest products x products Gram matrix (float32) the ridge model holds whole;
        larger catalogs compute each product's neighbourhood Gram on its own.
    block_size : int
        Rows per block in neighbour and scoring computations.
    """

    name = COLLABORATIVE

    def __init__(
        self,
        *,
        n_neighbours: int = 50,
        shrinkage: float = 0.0,
        similarity_power: float = 2.0,
        idf_power: float = 0.0,
        weight_transform: WeightTransform = "log1p",
        half_life_days: float | None = None,
        item_weight: float = 0.6,
        ridge_neighbours: int = 64,
        ridge_lambda: float = 150.0,
        trend_days: float = 28.0,
        trend_power: float = 0.25,
        n_item_neighbours: int = 100,
        item_similarity_power: float = 1.0,
        popularity_penalty: float = 0.125,
        neighbour_damping: float = 0.0,
        item_popularity_damping: float = 0.3,
        max_pair_work: float = 1.0e8,
        dense_gram_mb: float = 512.0,
        block_size: int = 512,
    ) -> None:
        self.n_neighbours = n_neighbours
        self.shrinkage = shrinkage
        self.similarity_power = similarity_power
        self.idf_power = idf_power
        self.weight_transform = weight_transform
        self.half_life_days = half_life_days
        self.item_weight = item_weight
        self.ridge_neighbours = ridge_neighbours
        self.ridge_lambda = ridge_lambda
        self.trend_days = trend_days
        self.trend_power = trend_power
        self.n_item_neighbours = n_item_neighbours
        self.item_similarity_power = item_similarity_power
        self.popularity_penalty = popularity_penalty
        self.neighbour_damping = neighbour_damping
        self.item_popularity_damping = item_popularity_damping
        self.max_pair_work = max_pair_work
        self.dense_gram_mb = dense_gram_mb
        self.block_size = block_size

    # ------------------------------------------------------------------ fit
    def fit(self, data: InteractionData, /) -> Self:
        """Learn user and item neighbourhoods from one tenant's interactions and return self."""
        values = self._values(data)  # (n_users, n_products), compressed and aged
        n_users = values.shape[0]
        popularity = np.diff(values.tocsc().indptr).astype(np.float64)
        idf = np.log1p(n_users / np.maximum(popularity, 1.0)) ** self.idf_power
        # Best-sellers beyond the work budget weigh 0 in the user similarities.
        self.user_columns_kept_ = budget_mask(popularity, self.max_pair_work, n_rows=n_users)
        idf = np.where(self.user_columns_kept_, idf, 0.0)
        vectors = (values @ sp.diags(idf.astype(np.float32))).tocsr()
        vectors.eliminate_zeros()

        self.data_ = data
        self.values_ = values
        self.popularity_ = popularity
        self.user_vectors_ = vectors
        self.user_vectors_t_ = vectors.T.tocsr()
        self.user_norms_ = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1))).ravel()
        # A neighbour's vote is spread over its products: heavy buyers do not vote for all.
        breadth = np.maximum(np.diff(values.indptr), 1).astype(np.float32)
        self.votes_ = (sp.diags(breadth**-self.neighbour_damping) @ values).tocsr()
        # Buy-everything users beyond the work budget are left out of the item similarities.
        self.item_rows_kept_ = budget_mask(
            np.diff(values.indptr), self.max_pair_work, n_rows=values.shape[1]
        )
        item_values = (sp.diags(self.item_rows_kept_.astype(np.float32)) @ values).tocsr()
        item_values.eliminate_zeros()
        self.item_values_ = item_values
        self.item_norms_ = np.sqrt(
            np.asarray(item_values.multiply(item_values).sum(axis=0))
        ).ravel()

        idx, sims = self.user_neighbours(np.arange(n_users))
        self.neighbours_ = idx.astype(np.int32)
        self.neighbour_similarities_ = sims.astype(np.float32)
        self.neighbour_matrix_ = rows_to_sparse(idx, sims, n_users)
        self.item_neighbours_ = self._item_neighbour_matrix()
        self.item_weights_ = (
            self._ridge_item_weights() if self.ridge_neighbours > 0 else self.item_neighbours_
        )
        self.trend_ = self._trend(data)
        # One multiplier per product applied after the blend: popularity penalty and trend.
        self.product_factors_ = (
            np.maximum(popularity, 1.0) ** -self.popularity_penalty * self.trend_**self.trend_power
        ).astype(np.float32)
        return self

    def _values(self, data: InteractionData) -> sp.csr_matrix:
        """Return the compressed, aged interaction values, shape (n_users, n_products)."""
        m = data.matrix.astype(np.float32).tocsr(copy=True)
        if self.half_life_days:
            age = np.maximum(data.now - data.last_seen.data, 0.0) / SECONDS_PER_DAY
            m.data *= np.power(0.5, age / self.half_life_days).astype(np.float32)
        if self.weight_transform == "log1p":
            m.data = np.log1p(m.data)
        elif self.weight_transform == "binary":
            m.data = np.ones_like(m.data)
        m.eliminate_zeros()
        return m

    def user_neighbours(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the nearest users of ``users`` by shrunk cosine, computed block by block.

        Parameters
        ----------
        users : ndarray of shape (b,), int
            Row indices; this is also the incremental path (only touched users).

        Returns
        -------
        indices : ndarray of shape (b, n_neighbours), int64
        similarities : ndarray of shape (b, n_neighbours), float32
            Already raised to ``similarity_power``; padding is ``-inf``.
        """
        self._check_fitted("user_vectors_")
        x, xt, norms = self.user_vectors_, self.user_vectors_t_, self.user_norms_
        k = min(self.n_neighbours, max(x.shape[0] - 1, 0))
        out_idx = np.zeros((users.shape[0], k), dtype=np.int64)
        out_sim = np.full((users.shape[0], k), -np.inf, dtype=np.float32)
        for start in range(0, users.shape[0], self.block_size):
            block = users[start : start + self.block_size]
            # Sparse: only the users sharing a product with the block are stored.
            found = (x[block] @ xt).tocsr()  # (b, n_users)
            rows = np.repeat(block, np.diff(found.indptr))
            dots = found.data
            sims = dots / (norms[rows] * norms[found.indices] + self.shrinkage + 1e-12)
            sims[(dots <= 0) | (found.indices == rows)] = -np.inf  # never your own neighbour
            found.data = sims.astype(np.float32)
            idx, val = sparse_top_k(found, k)
            out_idx[start : start + block.shape[0]] = idx
            out_sim[start : start + block.shape[0]] = np.where(
                np.isfinite(val), np.power(np.maximum(val, 0), self.similarity_power), -np.inf
            )
        return out_idx, out_sim

    def _item_neighbour_matrix(self) -> sp.csr_matrix:
        """Return the top item-item similarities, shape (n_products, n_products)."""
        v = self.item_values_
        vt, norms = v.T.tocsr(), self.item_norms_
        n_items = vt.shape[0]
        k = min(self.n_item_neighbours, max(n_items - 1, 0))
        # Damping the target's popularity keeps the neighbour lists from being best-sellers.
        damping = np.maximum(self.popularity_, 1.0) ** self.item_popularity_damping
        parts = []
        for start in range(0, n_items, self.block_size):
            block = np.arange(start, min(start + self.block_size, n_items))
            found = (vt[block] @ v).tocsr()  # (b, n_products), sparse
            rows = np.repeat(block, np.diff(found.indptr))
            dots = found.data
            sims = dots / (norms[rows] * norms[found.indices] + self.shrinkage + 1e-12)
            sims /= damping[found.indices]
            sims[(dots <= 0) | (found.indices == rows)] = -np.inf
            found.data = sims.astype(np.float32)
            idx, val = sparse_top_k(found, k)
            val = np.where(
                np.isfinite(val), np.power(np.maximum(val, 0), self.item_similarity_power), -np.inf
            )
            parts.append(rows_to_sparse(idx, val, n_items))
        if not parts:
            return sp.csr_matrix((n_items, n_items), dtype=np.float32)
        return sp.vstack(parts).tocsr()

    def _ridge_item_weights(self) -> sp.csr_matrix:
        """Return the local ridge item weights, shape (n_products, n_products).

        Column ``j`` holds ``w_j = (G_NN + ridge_lambda I)^-1 G_Nj`` on the rows of its
        neighbourhood ``N`` (the ``ridge_neighbours`` products of highest plain cosine with
        ``j``), where ``G = B.T @ B`` counts the users (of ``item_rows_kept_``) holding both
        products. ``W[h, j]`` is thus how much owning ``h`` predicts ``j``; entries may be
        negative.
        """
        b = self.item_values_.copy()
        b.data[:] = 1.0  # who interacted with what: counts of shared users
        bt = b.T.tocsr()  # (n_products, n_users)
        n_items = bt.shape[0]
        k = min(self.ridge_neighbours, max(n_items - 1, 0))
        if k == 0:
            return sp.csr_matrix((n_items, n_items), dtype=np.float32)
        norms = np.sqrt(np.diff(bt.indptr)).astype(np.float64)
        # A catalog whose Gram matrix fits the memory budget keeps it whole: each system is
        # then a gather; larger ones compute every neighbourhood's Gram sparsely.
        dense = float(n_items) ** 2 * 4 <= self.dense_gram_mb * 2**20
        gram = np.zeros((n_items, n_items), dtype=np.float32) if dense else None
        neighbours = np.zeros((n_items, k), dtype=np.int64)
        valid = np.zeros((n_items, k), dtype=bool)
        for start in range(0, n_items, self.block_size):
            block = np.arange(start, min(start + self.block_size, n_items))
            found = (bt[block] @ b).tocsr()  # (b, n_products) shared-user counts
            if gram is not None:
                gram[block] = found.toarray()
            rows = np.repeat(block, np.diff(found.indptr))
            sims = found.data / (norms[rows] * norms[found.indices] + 1e-12)
            sims[(found.data <= 0) | (found.indices == rows)] = -np.inf
            found.data = sims.astype(np.float32)
            idx, val = sparse_top_k(found, k)
            neighbours[block], valid[block] = idx, np.isfinite(val)
        diagonal = np.arange(k)
        parts_rows, parts_cols, parts_vals = [], [], []
        for start in range(0, n_items, SOLVE_BATCH):
            targets = np.arange(start, min(start + SOLVE_BATCH, n_items))
            nbrs, ok = neighbours[targets], valid[targets]
            columns = np.concatenate([nbrs, targets[:, None]], axis=1)  # (b, k + 1)
            if gram is not None:
                grams = gram[columns[:, :, None], columns[:, None, :]]
            else:
                grams = _neighbourhood_grams(bt, columns)
            # Padding (products with fewer than k co-occurring ones) gets an identity row.
            a = (grams[:, :k, :k] * (ok[:, :, None] & ok[:, None, :])).astype(np.float64)
            a[:, diagonal, diagonal] += self.ridge_lambda
            y = (grams[:, :k, k] * ok).astype(np.float64)
            w = _solve_positive_definite(a, y)
            keep = ok & (w != 0)
            parts_rows.append(nbrs[keep])
            parts_cols.append(np.broadcast_to(targets[:, None], nbrs.shape)[keep])
            parts_vals.append(w[keep])
        return sp.csr_matrix(
            (
                np.concatenate(parts_vals).astype(np.float32),
                (np.concatenate(parts_rows), np.concatenate(parts_cols)),
            ),
            shape=(n_items, n_items),
        )

    def _trend(self, data: InteractionData) -> np.ndarray:
        """Return each product's recent users over its expected recent users, shape (n,).

        ``(recent + 1) / (expected + 1)`` where ``recent`` counts the users whose last event
        on the product is within ``trend_days`` of ``now`` and ``expected`` is the product's
        users times the window's share of the whole history (at least the window).
        """
        n_items = data.n_products
        if data.last_seen.nnz == 0 or self.trend_days <= 0:
            return np.ones(n_items, dtype=np.float64)
        window = self.trend_days * SECONDS_PER_DAY
        seen = data.last_seen.tocsr()
        recent = np.bincount(seen.indices[seen.data >= data.now - window], minlength=n_items)
        users = np.bincount(seen.indices, minlength=n_items)
        span = max(data.now - float(data.event_times.min()), window)
        return (recent + 1.0) / (users * (window / span) + 1.0)

    # ------------------------------------------------------------- scoring
    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Return blended scores with already-seen products at ``-inf``.

        Parameters
        ----------
        users : ndarray of shape (b,), int

        Returns
        -------
        ndarray of shape (b, n_products), float32
        """
        found = self.sparse_scores(users)
        scores = np.full(found.shape, -np.inf, dtype=np.float32)
        coo = found.tocoo()
        scores[coo.row, coo.col] = coo.data
        return scores

    def sparse_scores(self, users: np.ndarray) -> sp.csr_matrix:
        """Return the positive blended scores of unseen products, kept sparse.

        Parameters
        ----------
        users : ndarray of shape (b,), int

        Returns
        -------
        csr_matrix of shape (b, n_products), float32
            Only products some neighbour or the item model reaches are stored.
        """
        self._check_fitted("neighbour_matrix_")
        own = self.values_[users]  # (b, n_products)
        # Seen products enter the sum at -inf, so one sparse addition both blends and masks.
        scores = own.copy()
        scores.data[:] = -np.inf
        if self.item_weight < 1.0:
            uu = (self.neighbour_matrix_[users] @ self.votes_).tocsr()
            scores = scores + (1.0 - self.item_weight) * _row_max_normalise(uu)
        if self.item_weight > 0.0:
            ii = (own @ self.item_weights_).tocsr()
            scores = scores + self.item_weight * _row_max_normalise(ii)
        scores = self._positive(scores)
        empty = np.flatnonzero(np.diff(scores.indptr) == 0)
        ridge = self.item_weights_ is not self.item_neighbours_
        if empty.size and self.item_weight > 0.0 and ridge:
            # A history that reaches nothing through the neighbours or the ridge weights (say
            # one best-seller, left out of the user similarities and in no neighbourhood) is
            # scored by the cosine item neighbours, which every product has.
            mine = own[empty]
            seen = mine.copy()
            seen.data[:] = -np.inf
            fallback = self._positive(seen + mine @ self.item_neighbours_)
            spread = sp.csr_matrix(
                (np.ones(empty.size, dtype=np.float32), (empty, np.arange(empty.size))),
                shape=(scores.shape[0], empty.size),
            )
            scores = (scores + spread @ fallback).tocsr()
        return scores

    def _positive(self, blend: sp.csr_matrix) -> sp.csr_matrix:
        """Apply the product factors and keep the positive entries (seen ones are ``-inf``)."""
        scores = sp.csr_matrix(blend, dtype=np.float32)
        scores.data *= self.product_factors_[scores.indices]
        scores.data[~(scores.data > 0)] = 0.0
        scores.eliminate_zeros()
        return scores

    def recommend_indices(self, users: np.ndarray, *, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return the top ``n`` unseen products for many users, block by block.

        Parameters
        ----------
        users : ndarray of shape (b,), int
        n : int

        Returns
        -------
        indices : ndarray of shape (b, n), int64
        scores : ndarray of shape (b, n), float32
            ``-inf`` marks padding when fewer than ``n`` products score above 0.
        """
        n_eff = min(n, self.values_.shape[1])
        out_idx = np.zeros((users.shape[0], n_eff), dtype=np.int64)
        out_val = np.full((users.shape[0], n_eff), -np.inf, dtype=np.float32)
        for start in range(0, users.shape[0], self.block_size):
            block = users[start : start + self.block_size]
            idx, val = sparse_top_k(self.sparse_scores(block), n_eff)
            out_idx[start : start + block.shape[0]] = idx
            out_val[start : start + block.shape[0]] = val
        return out_idx, out_val

    def recommend(
        self, *, user: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return up to ``n`` unseen products for ``user`` (empty for an unknown user)."""
        self._check_fitted("neighbour_matrix_")
        u = self.data_.user_index.get(user)
        if u is None:
            return []
        scores = self.score_users(np.array([u]))
        banned = indices_of(exclude, self.data_.product_index)
        scores[0, banned] = -np.inf
        idx, val = top_k_per_row(scores, n)
        history = self.values_[u]
        out = []
        for j, s in zip(idx[0], val[0], strict=True):
            if not np.isfinite(s):
                break
            out.append(
                Recommendation(str(self.data_.product_ids[j]), float(s), self._because(history, j))
            )
        return out

    def explain_indices(
        self, users: np.ndarray, items: np.ndarray, *, limit: int = 3
    ) -> list[list[list[int]]]:
        """Return, per user and recommended item, the user's products that explain it.

        Vectorised :meth:`_because` for many users at once: the contribution of a history
        product ``h`` to item ``j`` is ``x_uh * sim(h, j)``; the ``limit`` largest positive
        ones explain ``j``, and without any the user's strongest product does.

        Parameters
        ----------
        users : ndarray of shape (b,), int
        items : ndarray of shape (b, k), int
            Recommended product indices per user (entries < 0 are padding, explained by []).
        limit : int

        Returns
        -------
        list of b lists of k lists of product indices
        """
        self._check_fitted("item_neighbours_")
        b, k = items.shape
        if b == 0 or k == 0:
            return [[[] for _ in range(k)] for _ in range(b)]
        pair_users = np.repeat(users, k)
        pair_items = np.maximum(items.ravel(), 0)
        # Row p of the product is history(u_p) * column j_p of the item neighbours.
        columns = self._item_neighbours_t()[pair_items]
        contrib = self.values_[pair_users].multiply(columns).tocsr()
        contrib.eliminate_zeros()
        rows = np.repeat(np.arange(b * k), np.diff(contrib.indptr))
        order = np.lexsort((contrib.indices, -contrib.data, rows))
        rows_sorted, cols_sorted = rows[order], contrib.indices[order]
        first = np.searchsorted(rows_sorted, rows_sorted, side="left")
        keep = (np.arange(rows_sorted.size) - first) < limit
        rows_sorted, cols_sorted = rows_sorted[keep], cols_sorted[keep]
        starts = np.searchsorted(rows_sorted, np.arange(b * k + 1))
        strongest = self._strongest_products(users)
        picked = cols_sorted.tolist()
        out: list[list[list[int]]] = []
        valid = (items >= 0).ravel().tolist()
        starts_list = starts.tolist()
        for r in range(b):
            per_user: list[list[int]] = []
            for c in range(k):
                p = r * k + c
                if not valid[p]:
                    per_user.append([])
                    continue
                lo, hi = starts_list[p], starts_list[p + 1]
                per_user.append(picked[lo:hi] if hi > lo else strongest[r])
            out.append(per_user)
        return out

    def _item_neighbours_t(self) -> sp.csr_matrix:
        """Return (and cache) the transposed item neighbours: row j holds ``sim(h, j)``."""
        cached = getattr(self, "_item_neighbours_t_cache", None)
        if cached is None:
            cached = self.item_neighbours_.T.tocsr()
            self._item_neighbours_t_cache = cached
        return cached

    def _strongest_products(self, users: np.ndarray) -> list[list[int]]:
        """Return ``[argmax history]`` per user (``[]`` for an empty history)."""
        rows = self.values_[users]
        out: list[list[int]] = []
        indptr, indices, data = rows.indptr, rows.indices, rows.data
        for r in range(rows.shape[0]):
            lo, hi = indptr[r], indptr[r + 1]
            out.append([int(indices[lo + np.argmax(data[lo:hi])])] if hi > lo else [])
        return out

    def _because(self, history: sp.csr_matrix, item: int, limit: int = 3) -> tuple[str, ...]:
        """Return the user's products most similar to ``item`` (the explanation)."""
        sims = self.item_neighbours_[:, [item]][history.indices].toarray().ravel()
        contribution = sims * history.data
        order = np.argsort(-contribution, kind="stable")[:limit]
        picked = [history.indices[o] for o in order if contribution[o] > 0]
        if not picked:  # no item link: the user's strongest products explain the neighbours
            picked = [history.indices[o] for o in np.argsort(-history.data, kind="stable")[:1]]
        return tuple(str(self.data_.product_ids[p]) for p in picked)

    def similar_items(
        self, *, product: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return the nearest products of ``product`` by co-interaction (empty if unknown)."""
        self._check_fitted("item_neighbours_")
        p = self.data_.product_index.get(product)
        if p is None:
            return []
        row = self.item_neighbours_[p]
        banned = set(exclude)
        order = np.argsort(-row.data, kind="stable")
        out = []
        for o in order:
            pid = str(self.data_.product_ids[row.indices[o]])
            if pid in banned:
                continue
            out.append(Recommendation(pid, float(row.data[o]), (product,)))
            if len(out) == n:
                break
        return out

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(f"{type(self).__name__} is not fitted")


def _solve_positive_definite(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Solve a batch of symmetric positive definite systems ``a[t] @ w[t] = y[t]``.

    Cholesky factors, then forward and back substitution vectorised over the batch: numpy's
    batched ``solve`` runs a threaded LU per small matrix, which stalls on a busy machine.

    Parameters
    ----------
    a : ndarray of shape (b, k, k)
    y : ndarray of shape (b, k)

    Returns
    -------
    ndarray of shape (b, k)
    """
    low = np.linalg.cholesky(a)
    k = y.shape[1]
    z = np.empty_like(y)
    for i in range(k):
        z[:, i] = (y[:, i] - np.einsum("bj,bj->b", low[:, i, :i], z[:, :i])) / low[:, i, i]
    w = np.empty_like(y)
    for i in range(k - 1, -1, -1):
        rest = np.einsum("bj,bj->b", low[:, i + 1 :, i], w[:, i + 1 :])
        w[:, i] = (z[:, i] - rest) / low[:, i, i]
    return w


def _neighbourhood_grams(bt: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """Return the shared-user counts among each row's products.

    Parameters
    ----------
    bt : csr_matrix of shape (n_products, n_users)
        0/1 product x user matrix.
    columns : ndarray of shape (b, m), int
        Products of each neighbourhood.

    Returns
    -------
    ndarray of shape (b, m, m), float32
        ``out[t, p, q]`` = users holding both ``columns[t, p]`` and ``columns[t, q]``.
    """
    b, m = columns.shape
    # float32 holds counts exactly up to 2 ** 24 and halves the cost of the solves.
    out = np.empty((b, m, m), dtype=np.float32)
    for start in range(0, b, GRAM_CHUNK):
        chunk = columns[start : start + GRAM_CHUNK]
        c = chunk.shape[0]
        sub = bt[chunk.ravel()]  # (c * m, n_users)
        # The product also pairs products of different targets; only the diagonal blocks
        # are kept, which is why chunks stay small.
        gram = (sub @ sub.T).toarray().reshape(c, m, c, m)
        out[start : start + c] = gram[np.arange(c), :, np.arange(c), :]
    return out


def _row_max_normalise(scores: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by its maximum stored value (rows without a positive one stay as they are).

    Parameters
    ----------
    scores : csr_matrix of shape (b, n)

    Returns
    -------
    csr_matrix of shape (b, n), float32
    """
    out = sp.csr_matrix(scores, dtype=np.float32, copy=True)
    lengths = np.diff(out.indptr)
    peak = np.zeros(out.shape[0], dtype=np.float32)
    filled = lengths > 0
    if filled.any():
        peak[filled] = np.maximum.reduceat(out.data, out.indptr[:-1][filled])
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    out.data /= np.repeat(scale, lengths)
    return out


# Readiness (spec minimums): enough users with enough events to find neighbours.
MIN_USERS_FOR_COLLABORATIVE = 1_000
MIN_EVENTS_PER_USER = 5
# A user below this many events is "new" for the collaborative strategy (spec: 0-4 events).
MIN_USER_EVENTS_FOR_COLLABORATIVE = 5


def _train(inputs: TrainingInputs) -> dict[str, Any]:
    """Every user's list and every product's neighbours (the model is let go on return)."""
    model = CollaborativeModel().fit(inputs.data)
    return {
        "cf": user_lists(model, inputs.data),
        "cfitem": neighbour_lists(
            model.item_neighbours_, inputs.data.product_ids, ITEM_LIST_LENGTH
        ),
    }


def _readiness(inputs: TrainingInputs) -> Readiness:
    users = int((inputs.data.events_per_user() >= MIN_EVENTS_PER_USER).sum())
    return Readiness(
        {"usersWithMinEvents": users}, {"usersWithMinEvents": MIN_USERS_FOR_COLLABORATIVE}
    )


def evaluation_lists(split: Any, catalog: Sequence[Any]) -> np.ndarray:
    """Offline evaluation (domain.evaluation): a model fitted on the split's training data,
    its top-K for each scored user (it leaves out seen products itself)."""
    model = CollaborativeModel().fit(split.train)
    idx, val = model.recommend_indices(split.eval_rows, n=EVAL_K)
    idx = np.where(np.isfinite(val) & (val > 0), idx, -1)
    out = np.full((split.eval_rows.size, EVAL_K), -1, dtype=np.int64)
    out[:, : idx.shape[1]] = idx
    return out


def _user_candidates(context: Any) -> Sequence[Candidate]:
    return list(context.lists.get("collaborative", []))


SPEC = StrategySpec(
    COLLABORATIVE,
    lists=(
        ServedList("collaborative", "cf", "user"),
        ServedList("collaborativeItem", "cfitem", "product"),
    ),
    train=_train,
    readiness=_readiness,
    user_candidates=_user_candidates,
    product_list="collaborativeItem",
    min_user_events=MIN_USER_EVENTS_FOR_COLLABORATIVE,
    needs_product_interactions=True,
    projected_for_products=True,
    evaluation=Evaluated(evaluation_lists, beats_popularity=True),
)
