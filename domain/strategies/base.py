"""Common contract of the recommendation strategies and the array helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp

COLLABORATIVE = "collaborative"
CONTENT_BASED = "content_based"
TRENDING = "trending"
FREQUENTLY_BOUGHT_TOGETHER = "frequently_bought_together"

# The offline evaluation's list length (top-K), and the rows scored at once.
EVAL_K = 10
EVAL_BLOCK = 256


class NotFittedError(RuntimeError):
    """A model was asked for recommendations before ``fit``."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended product, its score and the products that explain it."""

    product_id: str
    score: float
    because: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape ``{productId, score, because}``."""
        return {"productId": self.product_id, "score": self.score, "because": list(self.because)}


@runtime_checkable
class UserRecommender(Protocol):
    """A strategy that recommends products for a user."""

    name: str

    def fit(self, data: Any, /) -> Self:
        """Learn from one tenant's interactions and return self."""
        ...

    def recommend(
        self, *, user: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return up to ``n`` recommendations for ``user``, best first."""
        ...


@runtime_checkable
class ItemRecommender(Protocol):
    """A strategy that recommends products for an anchor product."""

    name: str

    def fit(self, data: Any, /) -> Self:
        """Learn from one tenant's data and return self."""
        ...

    def similar_items(
        self, *, product: str, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]:
        """Return up to ``n`` products related to ``product``, best first."""
        ...


def top_k_per_row(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the column indices and values of the ``k`` best entries of each row, best first.

    Parameters
    ----------
    scores : ndarray of shape (n_rows, n_cols)
        Entries equal to ``-inf`` never count as found.
    k : int

    Returns
    -------
    indices : ndarray of shape (n_rows, min(k, n_cols)), int64
    values : ndarray of shape (n_rows, min(k, n_cols))
        Padding (fewer than ``k`` finite entries) is ``-inf`` with whatever index.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0 or n_rows == 0:
        return np.zeros((n_rows, 0), dtype=np.int64), np.zeros((n_rows, 0), dtype=scores.dtype)
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n_cols), (n_rows, 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return (
        np.take_along_axis(part, order, axis=1).astype(np.int64),
        np.take_along_axis(vals, order, axis=1),
    )


def rows_to_sparse(
    indices: np.ndarray,
    values: np.ndarray,
    n_cols: int,
    row_ids: np.ndarray | None = None,
    n_rows: int | None = None,
) -> sp.csr_matrix:
    """Pack per-row top-k lists into a CSR matrix, dropping non-finite or non-positive values.

    Parameters
    ----------
    indices, values : ndarray of shape (b, k)
    n_cols : int
    row_ids : ndarray of shape (b,), optional
        Row of each list in the output (default ``arange(b)``).
    n_rows : int, optional
        Number of output rows (default ``b``).

    Returns
    -------
    csr_matrix of shape (n_rows, n_cols), float32
    """
    b, k = indices.shape
    rows = np.repeat(np.arange(b) if row_ids is None else row_ids, k)
    vals = values.ravel()
    keep = np.isfinite(vals) & (vals > 0)
    shape = (b if n_rows is None else n_rows, n_cols)
    return sp.csr_matrix(
        (vals[keep].astype(np.float32), (rows[keep], indices.ravel()[keep])), shape=shape
    )


def mask_rows(scores: np.ndarray, mask: sp.csr_matrix) -> None:
    """Set ``scores[i, j] = -inf`` in place wherever ``mask[i, j]`` is stored.

    Parameters
    ----------
    scores : ndarray of shape (b, n_cols)
    mask : csr_matrix of shape (b, n_cols)
    """
    coo = mask.tocoo()
    scores[coo.row, coo.col] = -np.inf


def indices_of(ids: Iterable[str], index: Mapping[str, int]) -> np.ndarray:
    """Return the indices of the known ids (unknown ids are skipped)."""
    return np.fromiter((index[i] for i in ids if i in index), dtype=np.int64)


def blend_neighbour_lists(
    *,
    history: Sequence[tuple[str, float]],
    neighbours: Mapping[str, Sequence[tuple[str, float]]],
    n: int = 10,
    exclude: Iterable[str] = (),
) -> list[Recommendation]:
    """Score products by weighted published neighbour lists of a user's history (serve time).

    Each history product ``h`` with weight ``w_h`` adds ``w_h * sim(h, j)`` to every neighbour
    ``j`` of ``h``; products in the history or in ``exclude`` are never returned. This is the
    read-path counterpart of the item-neighbour projections, so a fresh event changes the answer
    without a retrain.
    """
    banned = set(exclude) | {p for p, _ in history}
    scores: dict[str, float] = {}
    best_reason: dict[str, tuple[float, str]] = {}
    for product, weight in history:
        for other, sim in neighbours.get(product, ()):
            if other in banned:
                continue
            contribution = weight * sim
            scores[other] = scores.get(other, 0.0) + contribution
            if contribution > best_reason.get(other, (-np.inf, ""))[0]:
                best_reason[other] = (contribution, product)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [Recommendation(p, float(s), (best_reason[p][1],)) for p, s in ranked]


def sparse_top_k(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` best stored entries of each row of a CSR matrix, best first.

    The sparse counterpart of :func:`top_k_per_row`: only stored entries compete, so a block of
    rows never has to be densified to its full width. Ties go to the lower column.

    Parameters
    ----------
    matrix : csr_matrix of shape (n_rows, n_cols)
        Without duplicate entries; stored ``-inf`` entries never count as found.
    k : int

    Returns
    -------
    indices : ndarray of shape (n_rows, k), int64
    values : ndarray of shape (n_rows, k), float32
        Padding (fewer than ``k`` finite entries) is ``-inf``.
    """
    n_rows = matrix.shape[0]
    k = max(min(k, matrix.shape[1]), 0)
    out_idx = np.zeros((n_rows, k), dtype=np.int64)
    out_val = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if k == 0 or matrix.nnz == 0:
        return out_idx, out_val
    # Products and constructors already give one entry per (row, column): no canonical sort.
    m = matrix if sp.isspmatrix_csr(matrix) else matrix.tocsr()
    indptr, indices = m.indptr, m.indices
    data = m.data.astype(np.float32, copy=False)
    lengths = np.diff(indptr)
    # Rows with more than k entries keep their k best (argpartition per row, cheap in C);
    # the short rows are taken whole. One lexsort then orders every kept entry.
    keep = np.ones(data.size, dtype=bool)
    for row in np.flatnonzero(lengths > k).tolist():
        lo, hi = int(indptr[row]), int(indptr[row + 1])
        part = np.argpartition(-data[lo:hi], k - 1)[k:]
        keep[lo + part] = False
    rows = np.repeat(np.arange(n_rows), lengths)[keep]
    cols, vals = indices[keep], data[keep]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(rows.size) - starts[rows]
    out_idx[rows, rank] = cols
    out_val[rows, rank] = vals
    return out_idx, out_val


def budget_mask(counts: np.ndarray, budget: float, *, n_rows: int) -> np.ndarray:
    """Return which entries to keep so that ``sum(counts ** 2)`` fits ``budget``.

    The largest counts go first: in a sparse product ``A.T @ A`` a column held by ``c`` rows
    costs ``c ** 2`` pairs, and the most widely held columns (best-sellers, catch-all
    features, buy-everything users) are both the costliest and the least informative. When
    the result cannot hold more than ``n_rows ** 2 <= budget`` pairs anyway, everything is kept.

    Parameters
    ----------
    counts : ndarray of shape (n,)
        Rows holding each column.
    budget : float
        Maximum summed ``counts ** 2`` (``inf`` keeps everything).
    n_rows : int
        Side of the square result.

    Returns
    -------
    ndarray of shape (n,), bool
    """
    counts = np.asarray(counts, dtype=np.float64)
    keep = np.ones(counts.shape[0], dtype=bool)
    work = counts**2
    if not np.isfinite(budget) or float(n_rows) ** 2 <= budget or work.sum() <= budget:
        return keep
    order = np.argsort(-counts, kind="stable")
    # Remaining work after dropping the i + 1 largest: total minus the cumulative head.
    remaining = work.sum() - np.cumsum(work[order])
    n_drop = int(np.searchsorted(-remaining, -budget)) + 1
    keep[order[:n_drop]] = False
    return keep


def masked_top(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """Top-K columns per row after masking `seen`, -1 where nothing positive is left."""
    scores = np.asarray(scores, dtype=np.float32).copy()
    coo = seen.tocoo()
    scores[coo.row, coo.col] = -np.inf
    scores[scores <= 0] = -np.inf
    idx, val = top_k_per_row(scores, EVAL_K)
    idx[~np.isfinite(val)] = -1
    if idx.shape[1] < EVAL_K:  # fewer products than K: the rest of each list is empty
        idx = np.hstack([idx, np.full((idx.shape[0], EVAL_K - idx.shape[1]), -1, idx.dtype)])
    return idx


def in_blocks(rows: np.ndarray, seen: sp.csr_matrix, score: Callable[[np.ndarray], Any]) -> Any:
    """Masked top-K of `score(rows_block) -> (b, n_items)` over blocks of rows."""
    out = [np.zeros((0, EVAL_K), dtype=np.int64)]
    for start in range(0, rows.size, EVAL_BLOCK):
        block = rows[start : start + EVAL_BLOCK]
        out.append(masked_top(score(block), seen[block]))
    return np.vstack(out)


def ranking_lists(order: np.ndarray, seen: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """The first K products of one global `order` that each row has not seen, shape (b, K)."""
    out = np.full((rows.size, EVAL_K), -1, dtype=np.int64)
    if order.size == 0 or rows.size == 0:
        return out
    seen_rows = seen[rows]
    # Enough candidates for nearly everyone; a user who has most of them gets a shorter list.
    depth = min(order.size, EVAL_K + int(np.percentile(np.diff(seen_rows.indptr), 99)) + 1)
    head = order[:depth]
    taken = np.asarray((seen_rows[:, head] != 0).todense())
    rank = np.cumsum(~taken, axis=1)
    keep = ~taken & (rank <= EVAL_K)
    r, c = np.nonzero(keep)
    out[r, rank[r, c] - 1] = head[c]
    return out
