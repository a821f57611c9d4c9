"""Content-based: product similarity from catalog attributes, and user profiles over it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from domain.interactions import EVENT_WEIGHTS, SECONDS_PER_DAY, InteractionData
from domain.strategies.base import (
    CONTENT_BASED,
    NotFittedError,
    Recommendation,
    budget_mask,
    in_blocks,
    indices_of,
    rows_to_sparse,
    sparse_top_k,
    top_k_per_row,
)
from domain.strategies.lists import ITEM_LIST_LENGTH, neighbour_lists
from domain.strategies.spec import (
    Candidate,
    Entry,
    Evaluated,
    Readiness,
    ServedList,
    StrategySpec,
    TrainingInputs,
)

_TOKEN = re.compile(r"[a-z0-9]+")
_CATEGORY_SEPARATORS = re.compile(r"\s*(?:>|/|\|)\s*")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to was were "
    "will with your you our we new".split()
)


def tokenize(text: str) -> list[str]:
    """Return lower-case alphanumeric tokens of ``text`` without stop words or 1-letter tokens."""
    return [t for t in _TOKEN.findall(text.lower()) if len(t) > 1 and t not in _STOPWORDS]


def _flatten_attributes(attributes: Any, prefix: str = "") -> list[str]:
    """Return ``key=value`` tokens of a flat-ish attribute mapping (lists give one per value)."""
    out: list[str] = []
    if isinstance(attributes, Mapping):
        for key, value in attributes.items():
            out.extend(_flatten_attributes(value, f"{prefix}{str(key).lower()}."))
    elif isinstance(attributes, list | tuple | set):
        for value in attributes:
            out.extend(_flatten_attributes(value, prefix))
    elif isinstance(attributes, bool | int | str) and str(attributes).strip():
        out.append(f"{prefix.rstrip('.')}={str(attributes).strip().lower()}")
    return out


class _Vocabulary:
    """Token -> column, grown while features are collected."""

    def __init__(self) -> None:
        self.columns: dict[str, int] = {}

    def __call__(self, token: str) -> int:
        return self.columns.setdefault(token, len(self.columns))


class ContentModel:
    """Product similarity from catalog attributes; recommends products like a user's recent ones.

    Each product becomes one sparse vector, the concatenation of four L2-normalised blocks, each
    scaled by the square root of its weight, so that the cosine of two products is the
    weighted mean of the per-block cosines:

    - **category**: one-hot of every prefix of the category path (``"Food > Dairy"`` gives
      ``food`` and ``food>dairy``), deeper levels weighing more, so siblings stay close;
    - **text**: TF-IDF (sublinear tf, smoothed idf) of name and description tokens, dropping
      tokens in more than ``max_df`` of the catalog;
    - **price band**: quantile bands of log price, one-hot with half weight on both
      neighbouring bands;
    - **attributes**: one-hot of flattened ``key=value`` pairs.

    :meth:`similar_items` needs no interaction at all, so it serves new products.
    :meth:`recommend` builds a profile from the user's products (event weights, aged with
    ``half_life_days`` so recent views count most), scores the catalog by cosine to it and
    leaves out what the user already interacted with.

    Parameters
    ----------
    category_weight, text_weight, price_weight, attribute_weight : float
    n_price_bands : int
    max_df : float
        Fraction of products above which a token is too common to mean anything.
    half_life_days : float or None
    n_neighbours : int
        Neighbours kept per product in ``neighbours_`` (the item-neighbour projection).
    max_pairs_per_product : int
        Budget of the neighbour product, in multiply-adds per product: beyond it the most
        common features stop generating candidates (see :meth:`_neighbour_matrix`); catalogs
        of up to that many products are always exact.
    block_size : int
    """

    name = CONTENT_BASED

    def __init__(
        self,
        *,
        category_weight: float = 1.0,
        text_weight: float = 1.0,
        price_weight: float = 0.3,
        attribute_weight: float = 0.5,
        n_price_bands: int = 10,
        max_df: float = 0.5,
        half_life_days: float | None = 30.0,
        n_neighbours: int = 50,
        max_pairs_per_product: int = 1_000,
        block_size: int = 1024,
    ) -> None:
        self.category_weight = category_weight
        self.text_weight = text_weight
        self.price_weight = price_weight
        self.attribute_weight = attribute_weight
        self.n_price_bands = n_price_bands
        self.max_df = max_df
        self.half_life_days = half_life_days
        self.n_neighbours = n_neighbours
        self.max_pairs_per_product = max_pairs_per_product
        self.block_size = block_size

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        catalog: Sequence[Mapping[str, Any]],
        /,
        *,
        data: InteractionData | None = None,
        compute_neighbours: bool = True,
    ) -> Self:
        """Vectorise ``catalog`` items (API shape) and, with ``data``, learn user histories."""
        ids = np.array([str(item["productId"]) for item in catalog], dtype=object)
        blocks = [
            (self.category_weight, self._category_block(catalog)),
            (self.text_weight, self._text_block(catalog)),
            (self.price_weight, self._price_block(catalog)),
            (self.attribute_weight, self._attribute_block(catalog)),
        ]
        scaled = [
            sp.diags(np.full(ids.size, math.sqrt(w), dtype=np.float32)) @ _l2_rows(m)
            for w, m in blocks
            if w > 0 and m.shape[1] > 0
        ]
        features = (
            sp.hstack(scaled).tocsr() if scaled else sp.csr_matrix((ids.size, 0), dtype=np.float32)
        )
        self.features_ = _l2_rows(features)
        self.product_ids_ = ids
        self.product_index_ = {p: i for i, p in enumerate(ids.tolist())}
        self.data_ = data
        if compute_neighbours:
            self.neighbours_ = self._neighbour_matrix()
        return self

    def _category_block(self, catalog: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Return hierarchical category one-hots, shape (n_products, n_category_prefixes)."""
        vocab = _Vocabulary()
        rows, cols, vals = [], [], []
        for i, item in enumerate(catalog):
            levels = [
                lvl.lower() for lvl in _CATEGORY_SEPARATORS.split(str(item.get("category") or ""))
            ]
            levels = [lvl for lvl in levels if lvl]
            for depth in range(len(levels)):
                rows.append(i)
                cols.append(vocab(">".join(levels[: depth + 1])))
                vals.append(float(depth + 1))
        return _coo(rows, cols, vals, len(catalog), len(vocab.columns))

    def _text_block(self, catalog: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Return TF-IDF of name + description, shape (n_products, n_tokens)."""
        vocab = _Vocabulary()
        rows, cols, vals = [], [], []
        for i, item in enumerate(catalog):
            text = f"{item.get('name') or ''} {item.get('description') or ''}"
            counts: dict[int, int] = {}
            for token in tokenize(text):
                c = vocab(token)
                counts[c] = counts.get(c, 0) + 1
            for c, count in counts.items():
                rows.append(i)
                cols.append(c)
                vals.append(1.0 + math.log(count))
        tf = _coo(rows, cols, vals, len(catalog), len(vocab.columns))
        n = max(len(catalog), 1)
        df = np.diff(tf.tocsc().indptr).astype(np.float64)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        if n >= 20:  # on tiny catalogs every token looks common
            idf[df > self.max_df * n] = 0.0
        m = (tf @ sp.diags(idf.astype(np.float32))).tocsr()
        m.eliminate_zeros()
        return m

    def _price_block(self, catalog: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Return soft one-hot price bands, shape (n_products, n_price_bands)."""
        prices = np.array([_as_float(item.get("price")) for item in catalog], dtype=np.float64)
        known = np.isfinite(prices) & (prices > 0)
        n_bands = self.n_price_bands
        if known.sum() < 2 or n_bands < 1:
            return sp.csr_matrix((len(catalog), 0), dtype=np.float32)
        logp = np.log(prices[known])
        edges = np.quantile(logp, np.linspace(0, 1, n_bands + 1)[1:-1])
        band = np.searchsorted(edges, logp, side="right")
        rows_known = np.flatnonzero(known)
        rows, cols, vals = [rows_known], [band], [np.ones(band.size)]
        for step in (-1, 1):
            nb = band + step
            ok = (nb >= 0) & (nb < n_bands)
            rows.append(rows_known[ok])
            cols.append(nb[ok])
            vals.append(np.full(int(ok.sum()), 0.5))
        return _coo(
            np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), len(catalog), n_bands
        )

    def _attribute_block(self, catalog: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Return one-hot ``key=value`` attribute pairs, shape (n_products, n_pairs)."""
        vocab = _Vocabulary()
        rows, cols = [], []
        for i, item in enumerate(catalog):
            for token in set(_flatten_attributes(item.get("attributes") or {})):
                rows.append(i)
                cols.append(vocab(token))
        return _coo(rows, cols, [1.0] * len(rows), len(catalog), len(vocab.columns))

    def _neighbour_matrix(self) -> sp.csr_matrix:
        """Return the top cosine neighbours of every product, shape (n_products, n_products).

        Candidates are the products sharing an informative feature; the features held by so
        many products that their pairs would exceed ``max_pairs_per_product`` (a colour, a
        price band, a top-level category) only add their exact share to those candidates'
        cosines.
        """
        f = self.features_
        n = f.shape[0]
        k = min(self.n_neighbours, max(n - 1, 0))
        holders = np.diff(f.tocsc().indptr)
        informative = budget_mask(holders, float(n) * self.max_pairs_per_product, n_rows=n)
        self.candidate_features_ = informative
        fi = f[:, np.flatnonzero(informative)].tocsr()
        fit = fi.T.tocsr()
        # Few columns by construction: each dropped one costs more than the budget's share.
        common = np.asarray(f[:, np.flatnonzero(~informative)].toarray(), dtype=np.float32)
        parts = []
        for start in range(0, n, self.block_size):
            block = np.arange(start, min(start + self.block_size, n))
            found = (fi[block] @ fit).tocsr()  # (b, n_products), sparse
            rows = np.repeat(block, np.diff(found.indptr))
            sims = found.data.astype(np.float32)
            if common.shape[1]:
                sims += np.einsum("ij,ij->i", common[rows], common[found.indices])
            sims[(sims <= 0) | (found.indices == rows)] = -np.inf
            found.data = sims
            parts.append(rows_to_sparse(*sparse_top_k(found, k), n))
        return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((n, n), dtype=np.float32)

    # ------------------------------------------------------------- serving
    def _check_fitted(self) -> None:
        if not hasattr(self, "features_"):
            raise NotFittedError("ContentModel is not fitted")

    def similar_items(
        self, *, product: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return the ``n`` catalog products most similar to ``product`` (empty if unknown)."""
        self._check_fitted()
        p = self.product_index_.get(product)
        if p is None:
            return []
        scores = (self.features_ @ self.features_[p].T).toarray().ravel()
        scores[p] = -np.inf
        return self._top(scores, n, exclude, lambda _j: (product,))

    def profile_scores(
        self, weights: sp.csr_matrix, *, candidates: np.ndarray | None = None
    ) -> np.ndarray:
        """Return the cosine of every (candidate) product to each weighted profile.

        Parameters
        ----------
        weights : csr_matrix of shape (b, n_products)
            Profile weights over this model's products (e.g. aged event weights).
        candidates : ndarray of shape (c,), int, optional
            Product indices to score (default: all, c = n_products).

        Returns
        -------
        ndarray of shape (b, c), float32
        """
        self._check_fitted()
        profiles = _l2_rows(sp.csr_matrix(weights, dtype=np.float32) @ self.features_)
        targets = self.features_ if candidates is None else self.features_[candidates]
        return np.asarray((profiles @ targets.T).toarray(), dtype=np.float32)

    def recommend_for_history(
        self,
        *,
        history: Sequence[tuple[str, float, float]],
        now: float,
        n: int = 10,
        exclude: Iterable[str] = (),
    ) -> list[Recommendation]:
        """Return products like the ``(product_id, weight, last_seen)`` history, recent first."""
        self._check_fitted()
        cols, vals = [], []
        for product, weight, seen in history:
            p = self.product_index_.get(product)
            if p is None or weight <= 0:
                continue
            age = max(now - seen, 0.0) / SECONDS_PER_DAY
            decay = 0.5 ** (age / self.half_life_days) if self.half_life_days else 1.0
            cols.append(p)
            vals.append(weight * decay)
        if not cols:
            return []
        w = sp.csr_matrix(
            (vals, ([0] * len(cols), cols)), shape=(1, self.features_.shape[0]), dtype=np.float32
        )
        scores = self.profile_scores(w)[0]
        hist = np.array(cols)
        scores[hist] = -np.inf
        hist_features = self.features_[hist]

        def because(j: int) -> tuple[str, ...]:
            sims = (hist_features @ self.features_[j].T).toarray().ravel() * np.array(vals)
            best = np.argsort(-sims, kind="stable")[:3]
            return tuple(str(self.product_ids_[hist[b]]) for b in best if sims[b] > 0)

        return self._top(scores, n, exclude, because)

    def recommend(
        self, *, user: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return products like those ``user`` viewed or bought (needs ``fit(..., data=)``)."""
        self._check_fitted()
        if self.data_ is None:
            raise NotFittedError("ContentModel.recommend needs fit(catalog, data=...)")
        return self.recommend_for_history(
            history=self.data_.user_history(user), now=self.data_.now, n=n, exclude=exclude
        )

    def _top(
        self, scores: np.ndarray, n: int, exclude: Iterable[str], because: Any
    ) -> list[Recommendation]:
        """Turn a score vector into the ``n`` best recommendations (positive scores only)."""
        scores = scores.copy()
        scores[indices_of(exclude, self.product_index_)] = -np.inf
        idx, val = top_k_per_row(scores[None, :], n)
        return [
            Recommendation(str(self.product_ids_[j]), float(s), because(int(j)))
            for j, s in zip(idx[0], val[0], strict=True)
            if np.isfinite(s) and s > 0
        ]


def _as_float(value: Any) -> float:
    """Return ``value`` as a float, NaN when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _coo(rows: Any, cols: Any, vals: Any, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """Return a float32 CSR matrix from triplets (duplicates are summed)."""
    return sp.csr_matrix(
        (
            np.asarray(vals, dtype=np.float32),
            (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        ),
        shape=(n_rows, n_cols),
    )


def _l2_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Return ``m`` with every non-empty row scaled to unit L2 norm."""
    m = sp.csr_matrix(m, dtype=np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    scale = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    return (sp.diags(scale) @ m).tocsr()


MIN_CATALOG_PRODUCTS = 50  # readiness (spec minimum)
# Content-based works for new users with 1+ event (spec), so only 0 events is a cold start.
MIN_USER_EVENTS_FOR_CONTENT = 1


def content_neighbour_lists(catalog: Sequence[Mapping[str, Any]]) -> dict[str, list[Entry]]:
    """Content neighbours of every catalog product (needs no interaction: serves new ones)."""
    if not catalog:
        return {}
    content = ContentModel().fit(catalog)
    return neighbour_lists(content.neighbours_, content.product_ids_, ITEM_LIST_LENGTH)


def evaluation_lists(split: Any, catalog: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Offline evaluation (domain.evaluation): content profiles of each scored user's aged
    history, scored over the catalog."""
    model = ContentModel().fit(catalog, compute_neighbours=False)
    data = split.train
    weights = data.matrix.astype(np.float32).tocsr(copy=True)
    if model.half_life_days:
        age = np.maximum(data.now - data.last_seen.data, 0) / SECONDS_PER_DAY
        weights.data = np.log1p(weights.data) * np.power(0.5, age / model.half_life_days).astype(
            np.float32
        )
    # Columns of the content model: catalog products, in the data's index.
    column = np.array(
        [data.product_index.get(p, -1) for p in model.product_ids_.tolist()], dtype=np.int64
    )
    present = column >= 0
    to_content = sp.csr_matrix(
        (np.ones(int(present.sum()), dtype=np.float32), (column[present], np.flatnonzero(present))),
        shape=(data.n_products, model.product_ids_.size),
    )

    def score(block: np.ndarray) -> np.ndarray:
        in_content = model.profile_scores(weights[block] @ to_content)
        full = np.zeros((block.size, data.n_products), dtype=np.float32)
        full[:, column[present]] = in_content[:, present]
        return full

    return in_blocks(split.eval_rows, data.matrix, score)


def _readiness(inputs: TrainingInputs) -> Readiness:
    return Readiness(
        {"catalogProducts": inputs.catalog_products}, {"catalogProducts": MIN_CATALOG_PRODUCTS}
    )


def merge_recent_content(context: Any) -> list[Candidate]:
    """Content neighbours of the user's recent products (ServingContext.recent_content),
    weighted by event type and recency."""
    weight_of: dict[str, float] = {}
    for rank, (event_type, product_id, _) in enumerate(context.history):
        weight = max(EVENT_WEIGHTS.get(event_type, 0.0), 0.0) * 0.8**rank
        weight_of[product_id] = max(weight_of.get(product_id, 0.0), weight)
    scores: dict[str, float] = {}
    because: dict[str, list[str]] = {}
    for source, neighbours in context.recent_content.items():
        for product_id, score, _ in neighbours:
            scores[product_id] = scores.get(product_id, 0.0) + score * weight_of.get(source, 0.5)
            because.setdefault(product_id, []).append(source)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(pid, score, tuple(because[pid][:3])) for pid, score in ranked]


SPEC = StrategySpec(
    CONTENT_BASED,
    lists=(ServedList("contentItem", "content", "product"),),
    train=lambda inputs: {"content": content_neighbour_lists(inputs.catalog)},
    readiness=_readiness,
    user_candidates=merge_recent_content,
    product_list="contentItem",
    min_user_events=MIN_USER_EVENTS_FOR_CONTENT,
    role="similar",
    projected_for_products=True,
    # It exists for users and products without interactions: held to its published version
    # only, not to the popularity baseline.
    evaluation=Evaluated(evaluation_lists, needs_catalog=True),
    catalog_refresh=lambda catalog: {"content": content_neighbour_lists(catalog)},
)
