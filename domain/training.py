"""One training run of a tenant: fit every strategy and turn the fitted models into the
per-user and per-product lists that serving reads. Pure: the caller loads and publishes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from domain.cold_start import assess_readiness
from domain.evaluation import Evaluation, GateDecision, K, evaluate, gate, held_out_ndcg
from domain.interactions import build_interactions
from domain.strategies.lists import (
    ITEM_LIST_LENGTH,
    TRENDING_LENGTH,
    USER_BLOCK,
    USER_LIST_LENGTH,
)
from domain.strategies.registry import strategies
from domain.strategies.spec import TrainingInputs

__all__ = [
    "ITEM_LIST_LENGTH",
    "TRENDING_LENGTH",
    "USER_BLOCK",
    "USER_LIST_LENGTH",
    "EventColumns",
    "TrainingResult",
    "catalog_refreshed_lists",
    "check_incremental",
    "refresh_user_lists",
    "train",
]

Entry = list[Any]  # [productId, score, [because...]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class EventColumns:
    """A tenant's events as parallel columns, shape (n_events,) each."""

    user_ids: Sequence[str]
    product_ids: Sequence[str]
    event_types: Sequence[str]
    timestamps: Sequence[float]
    session_ids: Sequence[str | None]


@dataclass(frozen=True)
class TrainingResult:
    """The lists a training run publishes (by the registry's list suffix: a mapping id ->
    entries, or a tenant's entries), with readiness and counts."""

    lists: dict[str, Any]
    product_interactions: dict[str, int]
    readiness: dict[str, Any]
    counts: dict[str, int]
    evaluation: Evaluation | None = None

    # Views of the built-in strategies' lists, for their readers (incremental retrain,
    # benchmarks).
    @property
    def user_lists(self) -> dict[str, list[Entry]]:
        """Collaborative lists per user."""
        return dict(self.lists.get("cf") or {})

    @property
    def collaborative_item_lists(self) -> dict[str, list[Entry]]:
        """Collaborative neighbours per product."""
        return dict(self.lists.get("cfitem") or {})

    @property
    def content_item_lists(self) -> dict[str, list[Entry]]:
        """Content neighbours per product."""
        return dict(self.lists.get("content") or {})

    @property
    def fbt_item_lists(self) -> dict[str, list[Entry]]:
        """Frequently bought together per product."""
        return dict(self.lists.get("fbt") or {})

    @property
    def trending(self) -> list[Entry]:
        """The trained trending list."""
        return list(self.lists.get("trending") or [])


def catalog_refreshed_lists(catalog: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a catalog change rebuilds without a retrain, by list suffix: the `catalog_refresh`
    of every registered strategy that has one (content neighbours need no interaction, so
    new products are served at once)."""
    lists: dict[str, Any] = {}
    for spec in strategies():
        if spec.catalog_refresh is not None:
            lists.update(spec.catalog_refresh(catalog))
    return lists


def train(
    *,
    events: EventColumns,
    catalog: Sequence[Mapping[str, Any]],
    now: float,
    progress: Progress = lambda _step: None,
    with_evaluation: bool = True,
) -> TrainingResult:
    """Fit every registered strategy on one tenant's events and catalog and build the lists.

    Parameters
    ----------
    events : EventColumns
        Parallel columns of shape (n_events,).
    catalog : sequence of mappings
        Catalog items in API shape (productId, name, category, description, price,
        attributes, available); unavailable products are still modelled so that they can
        explain others, and are filtered at serving time.
    now : float
        Unix time of the run (trending window, decay).
    progress : callable
        Called with the name of each finished step (each strategy's name).
    with_evaluation : bool
        First score every strategy on a time split of the same events (see
        :mod:`domain.evaluation`), for the publish gate.
    """
    evaluation = None
    if with_evaluation:
        # Before the full fit: the split's models are let go before the big ones are built.
        evaluation = evaluate(
            user_ids=events.user_ids,
            product_ids=events.product_ids,
            event_types=events.event_types,
            timestamps=events.timestamps,
            session_ids=events.session_ids,
            catalog=catalog,
            now=now,
        )
        progress("evaluated")
    data = build_interactions(
        events.user_ids,
        events.product_ids,
        events.event_types,
        events.timestamps,
        session_ids=events.session_ids,
        now=now,
        known_products=[str(item["productId"]) for item in catalog],
    )
    progress("interactions")
    readiness = assess_readiness(data=data, catalog=catalog, now=now)
    inputs = TrainingInputs(data=data, catalog=catalog, now=now)
    lists: dict[str, Any] = {}
    for spec in strategies():
        # Each strategy's fitted model is let go when its lists are built.
        lists.update(spec.train(inputs))
        progress(spec.name)
    per_product = data.interactions_per_product()
    product_interactions = {
        str(data.product_ids[j]): int(per_product[j]) for j in np.flatnonzero(per_product)
    }
    return TrainingResult(
        lists=lists,
        product_interactions=product_interactions,
        readiness=readiness.to_dict(),
        counts={
            "events": data.n_events,
            "users": data.n_users,
            "products": data.n_products,
            "catalogProducts": len(catalog),
        },
        evaluation=evaluation,
    )


def refresh_user_lists(
    *,
    histories: Mapping[str, Mapping[str, float]],
    item_lists: Mapping[str, Sequence[Entry]],
    length: int = USER_LIST_LENGTH,
) -> dict[str, list[Entry]]:
    """Collaborative lists of touched users from the published item neighbours.

    The incremental retrain cannot afford new user neighbourhoods for everyone, so touched
    users are rescored with the collaborative model's published (cosine) item neighbours:
    ``s(u, j) = sum_h log1p(w_uh) * sim(h, j)`` over the user's products ``h`` and their
    published neighbours ``j``, leaving out products the user already has. The daily full
    retrain brings the user-user half, the ridge item model and the trend factor back.

    Parameters
    ----------
    histories : mapping user -> {productId: summed event weight}
    item_lists : mapping productId -> published neighbour entries [productId, sim, because]
    length : int
        Entries kept per user.

    Returns
    -------
    dict user -> list of [productId, score, because]
    """
    lists: dict[str, list[Entry]] = {}
    for user, weights in histories.items():
        scores: dict[str, float] = {}
        because: dict[str, tuple[float, str]] = {}
        for product, weight in weights.items():
            if weight <= 0:
                continue
            strength = float(np.log1p(weight))
            for neighbour, similarity, *_ in item_lists.get(product, ()):
                if neighbour in weights:
                    continue
                contribution = strength * float(similarity)
                scores[neighbour] = scores.get(neighbour, 0.0) + contribution
                if contribution > because.get(neighbour, (0.0, ""))[0]:
                    because[neighbour] = (contribution, product)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:length]
        if ranked:
            top = ranked[0][1]
            lists[user] = [[pid, round(score / top, 6), [because[pid][1]]] for pid, score in ranked]
    return lists


INCREMENTAL_SAMPLE = 300
MIN_INCREMENTAL_SAMPLE = 20


def check_incremental(
    *,
    histories: Mapping[str, Mapping[str, tuple[float, float]]],
    item_lists: Mapping[str, Sequence[Entry]],
    published_lists: Mapping[str, Sequence[str]],
    popular: Sequence[str],
    tolerance: float,
    sample: int = INCREMENTAL_SAMPLE,
) -> tuple[GateDecision, dict[str, Any]]:
    """The publish gate of an incremental retrain, on a cheap leave-latest-out sample.

    For up to `sample` touched users with two products or more, the most recent product is
    held out and the rest rescored as :func:`refresh_user_lists` would; the rescored lists must
    not lose more than `tolerance` of NDCG@10 against the lists the users have now, nor lose
    to the published popularity order on the same held-out products.

    Parameters
    ----------
    histories : mapping user -> {productId: (summed weight, last event unix time)}
    item_lists : published collaborative neighbours, productId -> entries
    published_lists : user -> product ids the published version ranks for them now
    popular : product ids, most popular first
    """
    users = sorted(u for u, h in histories.items() if sum(w > 0 for w, _ in h.values()) >= 2)
    users = users[:sample]
    if len(users) < MIN_INCREMENTAL_SAMPLE:
        reason = f"only {len(users)} touched users with 2+ products (at least " + (
            f"{MIN_INCREMENTAL_SAMPLE})"
        )
        return gate(candidate={}, published=None, skipped=reason), {"users": len(users)}
    held: list[str] = []
    rest: dict[str, dict[str, float]] = {}
    for user in users:
        positive = {p: wt for p, wt in histories[user].items() if wt[0] > 0}
        latest = max(positive, key=lambda p: (positive[p][1], p))
        held.append(latest)
        rest[user] = {p: wt[0] for p, wt in positive.items() if p != latest}
    rescored = refresh_user_lists(histories=rest, item_lists=item_lists, length=K)
    candidate_lists = [[e[0] for e in rescored.get(u, [])] for u in users]
    popular_lists = [[p for p in popular if p not in rest[u]][:K] for u in users]
    candidate = held_out_ndcg(candidate_lists, held)
    baseline = held_out_ndcg(popular_lists, held)
    compared = [i for i, u in enumerate(users) if published_lists.get(u)]
    metrics: dict[str, Any] = {
        "users": len(users),
        "collaborative": candidate,
        "popularity": baseline,
    }
    published = None
    if len(compared) >= MIN_INCREMENTAL_SAMPLE:
        now_lists = [
            [p for p in published_lists[users[i]] if p not in rest[users[i]]][:K] for i in compared
        ]
        published = {"collaborative": held_out_ndcg(now_lists, [held[i] for i in compared])}
        metrics["published"] = published["collaborative"]
        # Same users on every side of the comparison.
        held_same = [held[i] for i in compared]
        candidate_same = held_out_ndcg([candidate_lists[i] for i in compared], held_same)
        baseline_same = held_out_ndcg([popular_lists[i] for i in compared], held_same)
        decision = gate(
            candidate={
                "collaborative": {**candidate_same, "popularityNdcg10": baseline_same["ndcg10"]}
            },
            published=published,
            tolerance=tolerance,
        )
    else:
        decision = gate(
            candidate={"collaborative": {**candidate, "popularityNdcg10": baseline["ndcg10"]}},
            published=None,
            tolerance=tolerance,
        )
    return decision, metrics
