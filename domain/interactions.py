"""Interaction data: event weights and the user x product matrix every strategy fits on.

Pure numpy/scipy, no I/O. One :class:`InteractionData` holds one tenant's events; the tenant is
never mixed because the caller builds one object per tenant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp

EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "product_viewed": 1.0,
        "product_clicked": 2.0,
        "recommendation_clicked": 2.0,
        "add_to_cart": 3.0,
        "purchase": 5.0,
        # A removal lowers the user's affinity; the sum per user-product is floored at 0.
        "remove_from_cart": -3.0,
        # Impressions are something we did, not something the user did.
        "recommendation_impressed": 0.0,
    }
)
PURCHASE_EVENT = "purchase"
SECONDS_PER_DAY = 86_400.0


def event_weight(event_type: str) -> float:
    """Return the interaction weight of one event type (0 for types that carry no signal)."""
    return float(EVENT_WEIGHTS.get(event_type, 0.0))


def decay_factors(
    timestamps: np.ndarray, *, now: float, half_life_days: float | None
) -> np.ndarray:
    """Return the recency multiplier ``0.5 ** (age / half_life)`` per event (1.0 without decay).

    Parameters
    ----------
    timestamps : ndarray of shape (n_events,)
        Unix seconds.
    now : float
        Unix seconds of "now"; events in the future count as age 0.
    half_life_days : float or None
        Age at which an event weighs half; None or <= 0 disables decay.

    Returns
    -------
    ndarray of shape (n_events,), float64
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if half_life_days is None or half_life_days <= 0:
        return np.ones_like(ts)
    age_days = np.maximum(now - ts, 0.0) / SECONDS_PER_DAY
    return np.power(0.5, age_days / half_life_days)


@dataclass(frozen=True, eq=False)
class InteractionData:
    """One tenant's interactions, as parallel event arrays plus a user x product CSR matrix.

    Attributes
    ----------
    user_ids, product_ids : ndarray of shape (n_users,), (n_products,), dtype object
        Index -> external id.
    user_index, product_index : dict
        External id -> index.
    event_users, event_items : ndarray of shape (n_events,), int64
        Row and column index of every event (events of types with weight 0 are kept, so that
        counts of "events per user" follow the raw stream).
    event_weights : ndarray of shape (n_events,), float64
        Event weight before recency decay (see :data:`EVENT_WEIGHTS`).
    event_times : ndarray of shape (n_events,), float64
        Unix seconds.
    event_is_purchase : ndarray of shape (n_events,), bool
    event_sessions : ndarray of shape (n_events,), int64
        Session index per event, -1 when the event had no session.
    matrix : csr_matrix of shape (n_users, n_products), float32
        Sum of (decayed) weights per user-product, floored at 0; explicit zeros removed.
    last_seen : csr_matrix of shape (n_users, n_products), float64
        Unix time of the latest event per user-product, on the same sparsity pattern as
        ``matrix``.
    now : float
        Reference time used for decay and for windows (unix seconds).
    """

    user_ids: np.ndarray
    product_ids: np.ndarray
    event_users: np.ndarray
    event_items: np.ndarray
    event_weights: np.ndarray
    event_times: np.ndarray
    event_is_purchase: np.ndarray
    event_sessions: np.ndarray
    matrix: sp.csr_matrix
    last_seen: sp.csr_matrix
    now: float
    user_index: dict[str, int] = field(default_factory=dict)
    product_index: dict[str, int] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        """Number of users (rows)."""
        return int(self.user_ids.shape[0])

    @property
    def n_products(self) -> int:
        """Number of products (columns)."""
        return int(self.product_ids.shape[0])

    @property
    def n_events(self) -> int:
        """Number of events kept."""
        return int(self.event_users.shape[0])

    def events_per_user(self) -> np.ndarray:
        """Return the raw event count per user, shape (n_users,)."""
        return np.bincount(self.event_users, minlength=self.n_users)

    def interactions_per_product(self) -> np.ndarray:
        """Return the number of users with a positive affinity per product, shape (n_products,)."""
        return np.diff(self.matrix.tocsc().indptr)

    def user_history(self, user: str) -> list[tuple[str, float, float]]:
        """Return ``(product_id, weight, last_seen)`` of one user's products, most recent first."""
        u = self.user_index.get(user)
        if u is None:
            return []
        lo, hi = self.matrix.indptr[u], self.matrix.indptr[u + 1]
        cols = self.matrix.indices[lo:hi]
        weights = self.matrix.data[lo:hi]
        seen = self.last_seen.data[lo:hi]
        order = np.argsort(-seen, kind="stable")
        return [(str(self.product_ids[cols[k]]), float(weights[k]), float(seen[k])) for k in order]


def _as_text(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Return ``values`` as a fixed-width unicode array (``str`` of whatever is not text)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return arr
    if arr.size == 0:
        return np.zeros(0, dtype="U1")
    return np.array([v if type(v) is str else str(v) for v in arr.tolist()])


def _distinct(text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (distinct values, index of each one's first occurrence, code of every value).

    Sorting millions of strings is slow; their 64-bit hashes sort fast. Every value is then
    compared with its group's representative, so a hash collision is detected, and the exact
    (slower) ``np.unique`` of the strings answers instead.
    """
    n = text.shape[0]
    width = text.dtype.itemsize // 4
    chars = text.view(np.uint32).reshape(n, width) if width else np.zeros((n, 0), np.uint32)
    h = np.full(n, 14_695_981_039_346_656_037, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in range(width):
            h = (h ^ chars[:, c].astype(np.uint64)) * np.uint64(1_099_511_628_211)
    _, first, codes = np.unique(h, return_index=True, return_inverse=True)
    codes = codes.ravel()
    if not np.array_equal(text[first][codes], text):
        _, first, codes = np.unique(text, return_index=True, return_inverse=True)
        codes = codes.ravel()
    return text[first], first, codes


def _index(
    values: Sequence[Any] | np.ndarray, known: Sequence[Any] | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Map values to dense indices; ``known`` ids come first, in their order, else ids sorted."""
    text = _as_text(values)
    if text.size == 0:
        distinct: list[str] = [] if known is None else list(dict.fromkeys(_as_text(known).tolist()))
        return np.array(distinct, dtype=object), np.zeros(0, dtype=np.int64)
    uniques, first, codes = _distinct(text)
    if known is not None:
        # Known ids in their order, then the others in order of first appearance.
        seen_order = np.argsort(first, kind="stable")
        ids = dict.fromkeys(_as_text(known).tolist())
        ids.update(dict.fromkeys(uniques[seen_order].tolist()))
        distinct = list(ids)
    else:
        distinct = sorted(uniques.tolist())
    position = {v: i for i, v in enumerate(distinct)}
    final = np.fromiter(map(position.__getitem__, uniques.tolist()), np.int64, uniques.size)
    return np.array(distinct, dtype=object), final[codes]


def build_interactions(
    user_ids: Sequence[Any] | np.ndarray,
    product_ids: Sequence[Any] | np.ndarray,
    event_types: Sequence[str] | np.ndarray,
    timestamps: Sequence[float] | np.ndarray,
    *,
    session_ids: Sequence[Any] | np.ndarray | None = None,
    half_life_days: float | None = None,
    now: float | None = None,
    known_products: Sequence[Any] | np.ndarray | None = None,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
) -> InteractionData:
    """Build one tenant's :class:`InteractionData` from parallel event arrays.

    Parameters
    ----------
    user_ids, product_ids, event_types : array-like of shape (n_events,)
        External ids and event type names (see :data:`EVENT_WEIGHTS`).
    timestamps : array-like of shape (n_events,)
        Unix seconds of each event.
    session_ids : array-like of shape (n_events,), optional
        Session id per event; None, "" or NaN mean "no session".
    half_life_days : float, optional
        Recency decay applied to ``matrix``; None keeps raw sums.
    now : float, optional
        Reference time; defaults to the latest event time.
    known_products : sequence, optional
        Catalog product ids to index even without events (they come first, in order).
    weights : mapping, optional
        Event type -> weight.

    Returns
    -------
    InteractionData
    """
    uniq_types, type_codes = _index(event_types, None)
    n = type_codes.shape[0]
    if not (len(user_ids) == len(product_ids) == len(timestamps) == n):
        raise ValueError("user_ids, product_ids, event_types and timestamps must be parallel")
    times = np.asarray(timestamps, dtype=np.float64)
    ref_now = float(now) if now is not None else (float(times.max()) if n else 0.0)

    type_weight = np.array([weights.get(t, 0.0) for t in uniq_types.tolist()], dtype=np.float64)
    w = type_weight[type_codes] if n else np.zeros(0)
    is_purchase = (uniq_types == PURCHASE_EVENT)[type_codes] if n else np.zeros(0, dtype=bool)

    uids, rows = _index(user_ids, None)
    pids, cols = _index(product_ids, known_products)
    n_users, n_products = uids.shape[0], pids.shape[0]

    if session_ids is None:
        sessions = np.full(n, -1, dtype=np.int64)
    else:
        raw = np.asarray(session_ids)
        if raw.dtype.kind == "U":  # text already: only "" can mean "no session"
            missing = raw == ""
        else:
            raw = raw.astype(object)
            missing = np.array([s is None or s == "" or s != s for s in raw.tolist()], dtype=bool)
        sessions = np.full(n, -1, dtype=np.int64)
        if (~missing).any():
            # Sessions are scoped by user: the same session id of two users is two sessions.
            _, raw_codes = _index(raw[~missing], None)
            keys = rows[~missing] * np.int64(raw_codes.max() + 1) + raw_codes
            _, codes = np.unique(keys, return_inverse=True)
            sessions[~missing] = codes.ravel()

    decayed = w * decay_factors(times, now=ref_now, half_life_days=half_life_days)
    matrix, last_seen = _aggregate(rows, cols, decayed, times, n_users, n_products)
    return InteractionData(
        user_ids=uids,
        product_ids=pids,
        event_users=rows,
        event_items=cols,
        event_weights=w,
        event_times=times,
        event_is_purchase=is_purchase,
        event_sessions=sessions,
        matrix=matrix,
        last_seen=last_seen,
        now=ref_now,
        user_index={u: i for i, u in enumerate(uids.tolist())},
        product_index={p: i for i, p in enumerate(pids.tolist())},
    )


def _aggregate(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    times: np.ndarray,
    n_users: int,
    n_products: int,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Sum values and take the latest time per (row, col); drop pairs whose sum is <= 0.

    Parameters
    ----------
    rows, cols : ndarray of shape (n_events,), int64
    values, times : ndarray of shape (n_events,), float64
    n_users, n_products : int

    Returns
    -------
    matrix : csr_matrix of shape (n_users, n_products), float32
    last_seen : csr_matrix of shape (n_users, n_products), float64
    """
    if rows.size == 0:
        empty = sp.csr_matrix((n_users, n_products), dtype=np.float32)
        return empty, sp.csr_matrix((n_users, n_products), dtype=np.float64)
    key = rows * np.int64(n_products) + cols
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    sums = np.add.reduceat(values[order], starts)
    latest = np.maximum.reduceat(times[order], starts)
    keep = sums > 1e-12
    pair = key_sorted[starts][keep]
    r, c = pair // n_products, pair % n_products
    # Pairs come sorted by (row, col), so the CSR structure can be written directly.
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_users), out=indptr[1:])
    shape = (n_users, n_products)
    matrix = sp.csr_matrix((sums[keep].astype(np.float32), c, indptr), shape=shape)
    last_seen = sp.csr_matrix((latest[keep], c.copy(), indptr.copy()), shape=shape)
    return matrix, last_seen
