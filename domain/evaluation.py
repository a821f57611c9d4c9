"""Offline evaluation of a tenant's models on its own data, and the publish gate.

A time split: every strategy is fitted on all but the last ``TEST_DAYS`` days and asked for
ten products per returning user; the test window says what they went on to want. Pure numpy
and scipy, no I/O: the caller passes the events and catalog it loaded.

Protocol
--------
Every registered strategy whose StrategySpec has an `evaluation` is scored (its `per` says
which protocol); the gate asks the spec whether it must also beat popularity.

- **Users** (collaborative, content-based, trending, and the popularity baseline): a user's
  targets are the products with a positive summed event weight in the test window that the
  user had no interaction with before it; only users with a train history and at least one
  target are scored. Products the user already has are never recommended (as served).
  NDCG@10 (binary gains), recall@10 (hits / min(targets, 10)), HR@10 (at least one hit)
  and catalog coverage (distinct recommended products / products known at the cut).
- **Frequently bought together**: every held-out basket (one user's purchases in one session
  of the test window) with at least two known products; each product is an anchor and the
  rest of the basket its targets. The hit rate is HR@10 over anchors; its baseline is
  popularity without the anchor.
- **Sample**: the fit sees at most ``MAX_FIT_USERS`` users (chosen by a stable hash of the
  user id, so consecutive versions are scored on comparable samples) and at most
  ``MAX_EVAL_USERS`` of them are scored: the cost stays a fraction of the full retrain.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from domain.interactions import EVENT_WEIGHTS, SECONDS_PER_DAY, InteractionData, build_interactions
from domain.strategies.base import EVAL_K, FREQUENTLY_BOUGHT_TOGETHER, ranking_lists
from domain.strategies.registry import spec_of, strategies

K = EVAL_K
TEST_DAYS = 7.0
MIN_EVAL_USERS = 20
MIN_EVAL_BASKETS = 10
MAX_FIT_USERS = 20_000
MAX_EVAL_USERS = 2_000
MAX_EVAL_ANCHORS = 5_000
POPULARITY = "popularity"
DEFAULT_NDCG_TOLERANCE = 0.10
# "Worse than popularity" means by more than this share: two NDCG@10 figures a few thousandths
# apart on a 7-day split are the same figure.
POPULARITY_MARGIN = 0.01


def ranking_metrics(
    recs: np.ndarray, targets: Sequence[np.ndarray], n_items: int, *, k: int = K
) -> dict[str, float]:
    """NDCG@k, recall@k, HR@k and catalog coverage of top-k lists.

    Parameters
    ----------
    recs : ndarray of shape (n_lists, k), int
        Recommended item indices, best first; -1 pads a short list.
    targets : sequence of n_lists ndarrays
        The relevant item indices of each list (each non-empty).
    n_items : int
        Size of the catalog the coverage is measured against.

    Returns
    -------
    dict with ndcg10, recall10, hr10, coverage (means over the lists; 0 when there is none)
    """
    recs = np.asarray(recs, dtype=np.int64).reshape(len(targets), -1)[:, :k]
    n_lists = recs.shape[0]
    if n_lists == 0:
        return {"ndcg10": 0.0, "recall10": 0.0, "hr10": 0.0, "coverage": 0.0}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    # Targets as a sparse (lists x items) 0/1 matrix: one fancy lookup finds every hit.
    lengths = np.array([len(t) for t in targets], dtype=np.int64)
    cols = (
        np.concatenate([np.asarray(t, dtype=np.int64) for t in targets])
        if lengths.sum()
        else (np.zeros(0, dtype=np.int64))
    )
    width = int(max(n_items, cols.max(initial=-1) + 1, recs.max(initial=-1) + 1, 1))
    relevant = sp.csr_matrix(
        (np.ones(cols.size), (np.repeat(np.arange(n_lists), lengths), cols)),
        shape=(n_lists, width),
    )
    relevant.data[:] = 1.0
    safe = np.where(recs >= 0, recs, 0)
    rows = np.repeat(np.arange(n_lists), recs.shape[1])
    hits = (np.asarray(relevant[rows, safe.ravel()]).reshape(recs.shape) > 0) & (recs >= 0)
    n_rel = np.minimum(lengths, k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[n_rel]
    gains = (hits * discounts[: recs.shape[1]]).sum(axis=1)
    has = n_rel > 0
    ndcg = np.where(has, gains / np.where(has, ideal, 1.0), 0.0)
    recall = np.where(has, hits.sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    hits_any = hits.any(axis=1).astype(np.float64)
    shown = np.unique(recs[recs >= 0])
    return {
        "ndcg10": float(ndcg.mean()),
        "recall10": float(recall.mean()),
        "hr10": float(hits_any.mean()),
        "coverage": float(shown.size / n_items) if n_items else 0.0,
    }


@dataclass(frozen=True)
class Evaluation:
    """Metrics per strategy (and the popularity baseline), or why the evaluation was skipped."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape stored with the model version."""
        return {
            "metrics": self.metrics,
            "skipped": self.skipped,
            "details": self.details,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class TimeSplit:
    """Train interactions before the cut, and what the test window holds after it."""

    train: InteractionData
    eval_rows: np.ndarray  # (n_eval,) train row of each scored user
    targets: list[np.ndarray]  # per scored user: item indices
    anchors: np.ndarray  # (n_anchors,) item index of each held-out basket anchor
    anchor_targets: list[np.ndarray]  # per anchor: the rest of its basket
    cut: float


def _stable_sample(ids: np.ndarray, limit: int) -> np.ndarray:
    """A mask keeping about `limit` ids, the same ids from one run to the next."""
    if ids.size <= limit:
        return np.ones(ids.size, dtype=bool)
    hashes = np.fromiter((zlib.crc32(str(i).encode()) for i in ids.tolist()), np.uint64, ids.size)
    threshold = np.sort(hashes)[limit - 1]
    return hashes <= threshold


def time_split(
    *,
    user_ids: Sequence[Any],
    product_ids: Sequence[Any],
    event_types: Sequence[str],
    timestamps: Sequence[float],
    session_ids: Sequence[Any] | None,
    catalog_ids: Sequence[str],
    now: float,
    test_days: float = TEST_DAYS,
    max_fit_users: int = MAX_FIT_USERS,
    max_eval_users: int = MAX_EVAL_USERS,
) -> TimeSplit | str:
    """Split events at `now - test_days` (or the last event's time - test_days, whichever is
    earlier); a string says why there is too little data."""
    times = np.asarray(timestamps, dtype=np.float64)
    if times.size == 0:
        return "no events yet"
    end = min(float(now), float(times.max()))
    cut = end - test_days * SECONDS_PER_DAY
    before = times < cut
    if not before.any():
        return f"no events older than the last {test_days:g} days to train on"
    users = np.asarray(user_ids, dtype=object)
    # Set look-ups over the ids as given: no second copy of millions of ids as text.
    sampled_users = np.array(sorted(set(users[before].tolist()), key=str), dtype=object)
    keep_user = set(sampled_users[_stable_sample(sampled_users, max_fit_users)].tolist())
    in_sample = np.fromiter((u in keep_user for u in users.tolist()), bool, users.size)
    train_mask = before & in_sample
    test_mask = (times >= cut) & (times <= end) & in_sample
    products = np.asarray(product_ids, dtype=object)
    types = np.asarray(event_types, dtype=object)
    sessions = None if session_ids is None else np.asarray(session_ids, dtype=object)
    train = build_interactions(
        users[train_mask],
        products[train_mask],
        types[train_mask],
        times[train_mask],
        session_ids=None if sessions is None else sessions[train_mask],
        now=cut,
        known_products=list(catalog_ids),
    )
    test_users = np.array([str(u) for u in users[test_mask].tolist()], dtype=object)
    test_products = np.array([str(p) for p in products[test_mask].tolist()], dtype=object)
    test_types = types[test_mask]
    weights = np.array([EVENT_WEIGHTS.get(t, 0.0) for t in test_types.tolist()])
    rows = np.array([train.user_index.get(u, -1) for u in test_users.tolist()], dtype=np.int64)
    cols = np.array(
        [train.product_index.get(p, -1) for p in test_products.tolist()], dtype=np.int64
    )
    known = (rows >= 0) & (cols >= 0)
    targets_matrix = sp.csr_matrix(
        (weights[known], (rows[known], cols[known])), shape=train.matrix.shape
    )
    targets_matrix.sum_duplicates()
    targets_matrix.data[targets_matrix.data <= 0] = 0
    targets_matrix.eliminate_zeros()
    # New products only: what the user already had is never recommended back.
    seen = train.matrix.copy()
    seen.data[:] = 1.0
    fresh = (targets_matrix - targets_matrix.multiply(seen)).tocsr()
    fresh.eliminate_zeros()
    with_targets = np.flatnonzero(np.diff(fresh.indptr) > 0)
    if with_targets.size > max_eval_users:
        chosen = _stable_sample(train.user_ids[with_targets], max_eval_users)
        with_targets = with_targets[chosen]
    targets = [fresh.indices[fresh.indptr[u] : fresh.indptr[u + 1]] for u in with_targets]
    anchors, anchor_targets = _held_out_baskets(
        rows=rows,
        cols=cols,
        is_purchase=test_types == "purchase",
        sessions=None if sessions is None else sessions[test_mask],
        times=times[test_mask],
    )
    return TimeSplit(train, with_targets, targets, anchors, anchor_targets, cut)


def _held_out_baskets(
    *,
    rows: np.ndarray,
    cols: np.ndarray,
    is_purchase: np.ndarray,
    sessions: np.ndarray | None,
    times: np.ndarray,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Anchors and their targets from test purchases grouped by user and session."""
    keep = is_purchase & (cols >= 0)
    baskets: dict[tuple[Any, ...], set[int]] = {}
    for index in np.flatnonzero(keep).tolist():
        session = None if sessions is None else sessions[index]
        # Without a session, one user's purchases of one second are a basket.
        key = (
            (rows[index], "s", str(session))
            if session not in (None, "")
            else (rows[index], "t", round(float(times[index])))
        )
        baskets.setdefault(key, set()).add(int(cols[index]))
    anchors: list[int] = []
    anchor_targets: list[np.ndarray] = []
    for items in baskets.values():
        if len(items) < 2:
            continue
        basket = np.array(sorted(items), dtype=np.int64)
        for a in basket.tolist():
            anchors.append(a)
            anchor_targets.append(basket[basket != a])
            if len(anchors) >= MAX_EVAL_ANCHORS:
                return np.array(anchors, dtype=np.int64), anchor_targets
    return np.array(anchors, dtype=np.int64), anchor_targets


def popularity_lists(split: TimeSplit) -> np.ndarray:
    """The baseline: most users per product before the cut, minus what each user has."""
    pop = split.train.interactions_per_product()
    order = np.argsort(-pop, kind="stable")
    return ranking_lists(order[pop[order] > 0], split.train.matrix, split.eval_rows)


def fbt_popularity_lists(split: TimeSplit) -> np.ndarray:
    """The FBT baseline: the most popular products other than the anchor."""
    pop = split.train.interactions_per_product().astype(np.float32)
    order = np.argsort(-pop, kind="stable")[: K + 1]
    order = order[pop[order] > 0]
    out = np.full((split.anchors.size, K), -1, dtype=np.int64)
    for row, anchor in enumerate(split.anchors.tolist()):
        top = order[order != anchor][:K]
        out[row, : top.size] = top
    return out


def evaluate(
    *,
    user_ids: Sequence[Any],
    product_ids: Sequence[Any],
    event_types: Sequence[str],
    timestamps: Sequence[float],
    session_ids: Sequence[Any] | None,
    catalog: Sequence[Mapping[str, Any]],
    now: float,
    test_days: float = TEST_DAYS,
) -> Evaluation:
    """Fit every strategy on all but the last `test_days` days and score it on them.

    Returns metrics per strategy, each with ``popularityNdcg10`` (the baseline on the same
    protocol), and ``popularity``; or ``skipped`` with the reason when the data is too thin.
    """
    started = time.perf_counter()
    split = time_split(
        user_ids=user_ids,
        product_ids=product_ids,
        event_types=event_types,
        timestamps=timestamps,
        session_ids=session_ids,
        catalog_ids=[str(item["productId"]) for item in catalog],
        now=now,
        test_days=test_days,
    )
    if isinstance(split, str):
        return Evaluation(skipped=split, seconds=time.perf_counter() - started)
    details: dict[str, Any] = {
        "testDays": test_days,
        "cutAt": split.cut,
        "trainUsers": split.train.n_users,
        "evalUsers": int(split.eval_rows.size),
        "heldOutAnchors": int(split.anchors.size),
    }
    if split.eval_rows.size < MIN_EVAL_USERS:
        return Evaluation(
            skipped=f"only {split.eval_rows.size} users came back with new products in the last "
            f"{test_days:g} days (at least {MIN_EVAL_USERS} needed)",
            details=details,
            seconds=time.perf_counter() - started,
        )
    n_items = split.train.n_products
    metrics: dict[str, dict[str, float]] = {}
    popularity = ranking_metrics(popularity_lists(split), split.targets, n_items)
    metrics[POPULARITY] = popularity

    anchor_baseline: dict[str, float] | None = None
    for spec in strategies():
        scoring = spec.evaluation
        if scoring is None or (scoring.needs_catalog and not catalog):
            continue
        if scoring.per == "user":
            scored = ranking_metrics(scoring.lists(split, catalog), split.targets, n_items)
            metrics[spec.name] = {**scored, "popularityNdcg10": popularity["ndcg10"]}
        elif split.anchors.size >= MIN_EVAL_BASKETS:
            if anchor_baseline is None:
                anchor_baseline = ranking_metrics(
                    fbt_popularity_lists(split), split.anchor_targets, n_items
                )
            lists = scoring.lists(split, catalog)
            scored = ranking_metrics(lists, split.anchor_targets, n_items)
            metrics[spec.name] = {**scored, "popularityNdcg10": anchor_baseline["ndcg10"]}
        else:
            details[_skipped_key(spec.name)] = (
                f"only {split.anchors.size} held-out basket anchors (at least {MIN_EVAL_BASKETS})"
            )
    rounded = {
        name: {m: round(v, 6) for m, v in values.items()} for name, values in metrics.items()
    }
    return Evaluation(rounded, None, details, time.perf_counter() - started)


@dataclass(frozen=True)
class GateDecision:
    """Whether a new model version may replace the published one, and why not."""

    passed: bool
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape ``{passed, reasons}``."""
        return {"passed": self.passed, "reasons": list(self.reasons)}


def _skipped_key(name: str) -> str:
    """The details' key saying why an anchor strategy was not scored (`fbtSkipped` for
    frequently bought together, as reported before the registry)."""
    return "fbtSkipped" if name == FREQUENTLY_BOUGHT_TOGETHER else f"{name}Skipped"


def _beats_popularity(name: str) -> bool:
    """Whether the gate holds a strategy to the popularity baseline (an unknown name, from
    a version scored before its strategy went away, is not)."""
    try:
        scoring = spec_of(name).evaluation
    except ValueError:
        return False
    return scoring is not None and scoring.beats_popularity


def _comparable(before: Mapping[str, float], after: Mapping[str, float]) -> tuple[float, float]:
    """Two versions' NDCG@10, each as a multiple of its own split's popularity baseline when
    both have one (their test weeks differ; their lifts over the crowd compare), else raw."""
    old_base = float(before.get("popularityNdcg10") or 0.0)
    new_base = float(after.get("popularityNdcg10") or 0.0)
    old, new = float(before.get("ndcg10", 0.0)), float(after.get("ndcg10", 0.0))
    if old_base > 0 and new_base > 0:
        return old / old_base, new / new_base
    return old, new


def gate(
    *,
    candidate: Mapping[str, Mapping[str, float]],
    published: Mapping[str, Mapping[str, float]] | None,
    tolerance: float = DEFAULT_NDCG_TOLERANCE,
    skipped: str | None = None,
) -> GateDecision:
    """Publish only if no strategy lost more than `tolerance` against the published version
    (relative NDCG@10, each as a multiple of its own split's popularity baseline, since the
    published version was scored on an earlier week), and the learning strategies do not lose
    to popularity by more than POPULARITY_MARGIN."""
    if skipped is not None:
        return GateDecision(True, [f"evaluation skipped: {skipped}"])
    reasons: list[str] = []
    for name, values in candidate.items():
        if name == POPULARITY:
            continue
        ndcg = float(values.get("ndcg10", 0.0))
        before = (published or {}).get(name)
        if before is not None:
            old, new = _comparable(before, values)
            if old > 0 and new < old * (1.0 - tolerance):
                reasons.append(
                    f"{name}: NDCG@10 {ndcg:.4f} is {1 - new / old:.0%} below the published "
                    f"version's {float(before.get('ndcg10', 0.0)):.4f}, relative to popularity "
                    f"on each one's test week (tolerance {tolerance:.0%})"
                )
        baseline = values.get("popularityNdcg10")
        if (
            _beats_popularity(name)
            and baseline is not None
            and ndcg < float(baseline) * (1.0 - POPULARITY_MARGIN)
        ):
            reasons.append(
                f"{name}: NDCG@10 {ndcg:.4f} is below the popularity baseline's "
                f"{float(baseline):.4f}"
            )
    return GateDecision(not reasons, reasons)


def held_out_ndcg(lists: Sequence[Sequence[str]], held_out: Sequence[str]) -> dict[str, float]:
    """NDCG@10 and HR@10 of ranked product-id lists, each against one held-out product."""
    if not held_out:
        return {"ndcg10": 0.0, "hr10": 0.0}
    ndcg, hits = 0.0, 0
    for ranked, target in zip(lists, held_out, strict=True):
        top = list(ranked)[:K]
        if target in top:
            hits += 1
            ndcg += 1.0 / float(np.log2(top.index(target) + 2))
    return {"ndcg10": ndcg / len(held_out), "hr10": hits / len(held_out)}
