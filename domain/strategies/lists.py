"""Fitted models turned into the per-user and per-product lists that serving reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from domain.strategies.spec import Entry

if TYPE_CHECKING:
    from domain.interactions import InteractionData
    from domain.strategies.collaborative import CollaborativeModel

USER_LIST_LENGTH = 30
ITEM_LIST_LENGTH = 30
TRENDING_LENGTH = 200
# Users scored and explained per block (bounds the dense score rows and explanation products).
USER_BLOCK = 4_096


def neighbour_lists(matrix: sp.csr_matrix, ids: np.ndarray, length: int) -> dict[str, list[Entry]]:
    """Per-row top lists of a (n_products, n_products) neighbour matrix, keyed by product id."""
    m = matrix.tocsr()
    lengths = np.diff(m.indptr)
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    # One stable sort for every row (best first, ties in stored order) instead of one per row.
    order = np.lexsort((-m.data, rows))
    rank = np.arange(order.size) - np.repeat(m.indptr[:-1], lengths)
    kept = order[rank < length]
    rows_kept = rows[kept]
    # Object ids: every entry refers to the product's one string instead of a new copy.
    names = np.asarray(ids, dtype=object)[m.indices[kept]].tolist()
    scores = np.round(m.data[kept].astype(np.float64), 6).tolist()
    bounds = np.searchsorted(rows_kept, np.arange(m.shape[0] + 1)).tolist()
    lists: dict[str, list[Entry]] = {}
    for row in np.flatnonzero(lengths).tolist():
        lo, hi = bounds[row], bounds[row + 1]
        # One "because" list per anchor, shared by its entries (read-only: they are encoded
        # for publishing), saves a list object per entry on large catalogs.
        anchor = [str(ids[row])]
        lists[anchor[0]] = [
            [name, score, anchor] for name, score in zip(names[lo:hi], scores[lo:hi], strict=True)
        ]
    return lists


def user_lists(model: CollaborativeModel, data: InteractionData) -> dict[str, list[Entry]]:
    """Top unseen products of every user with interactions, explained by their own products."""
    users = np.flatnonzero(np.diff(data.matrix.indptr) > 0)
    lists: dict[str, list[Entry]] = {}
    product_ids = data.product_ids.tolist()
    # Blocks bound the memory of the explanation products; all the work inside is vectorised.
    for start in range(0, users.size, USER_BLOCK):
        block = users[start : start + USER_BLOCK]
        indices, scores = model.recommend_indices(block, n=USER_LIST_LENGTH)
        valid = np.isfinite(scores) & (scores > 0)
        indices = np.where(valid, indices, -1)
        because = model.explain_indices(block, indices)
        rounded = np.round(scores.astype(np.float64), 6).tolist()
        lengths = valid.sum(axis=1).tolist()
        index_rows = indices.tolist()
        for row, user in enumerate(block.tolist()):
            n = lengths[row]
            if n == 0:
                continue
            lists[str(data.user_ids[user])] = [
                [product_ids[j], s, [product_ids[h] for h in why]]
                for j, s, why in zip(
                    index_rows[row][:n], rounded[row][:n], because[row][:n], strict=True
                )
            ]
    return lists
