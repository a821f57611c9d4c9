"""Event weights, the interaction matrix, strategy readiness and the cold-start fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from domain.cold_start import (
    COLD_START_PRODUCT,
    COLD_START_USER,
    MISSING_PRODUCT_CONTEXT,
    STRATEGY_NOT_READY,
    ReadinessReport,
    assess_readiness,
    choose_strategy,
    readiness_from_counts,
)
from domain.interactions import build_interactions, event_weight

NOW = 1_700_000_000.0
DAY = 86_400.0


def everything_ready() -> ReadinessReport:
    return readiness_from_counts(
        users_with_min_events=1_000,
        purchase_sessions_with_min_items=100,
        catalog_products=50,
        events_last_24h=1,
    )


def nothing_ready() -> ReadinessReport:
    return readiness_from_counts(
        users_with_min_events=999,
        purchase_sessions_with_min_items=99,
        catalog_products=49,
        events_last_24h=0,
    )


# ------------------------------------------------------------------ interactions
def test_event_weights_follow_the_spec() -> None:
    assert [event_weight(t) for t in ("product_viewed", "product_clicked")] == [1, 2]
    assert [event_weight(t) for t in ("add_to_cart", "purchase")] == [3, 5]
    assert event_weight("remove_from_cart") < 0
    assert event_weight("something_else") == 0


def test_the_matrix_sums_weights_per_user_and_product() -> None:
    data = build_interactions(
        ["u1", "u1", "u2"],
        ["p1", "p1", "p2"],
        ["product_viewed", "purchase", "add_to_cart"],
        [NOW, NOW, NOW],
    )
    assert data.matrix.shape == (2, 2)
    assert data.matrix[data.user_index["u1"], data.product_index["p1"]] == 6
    assert data.matrix[data.user_index["u2"], data.product_index["p2"]] == 3


def test_a_removal_from_cart_lowers_affinity_but_never_below_zero() -> None:
    data = build_interactions(
        ["u1", "u1", "u1", "u1"],
        ["p1", "p1", "p2", "p2"],
        ["add_to_cart", "remove_from_cart", "purchase", "remove_from_cart"],
        [NOW, NOW + 1, NOW, NOW + 1],
    )
    assert data.matrix[0, data.product_index["p2"]] == 2
    assert data.matrix.nnz == 1, "the cancelled cart item is dropped, not negative"


def test_recency_decay_halves_an_event_at_the_half_life() -> None:
    data = build_interactions(
        ["u1", "u1"],
        ["p1", "p2"],
        ["purchase", "purchase"],
        [NOW - 10 * DAY, NOW],
        half_life_days=10,
        now=NOW,
    )
    row = data.matrix[0].toarray().ravel()
    assert row[data.product_index["p1"]] == pytest.approx(2.5)
    assert row[data.product_index["p2"]] == pytest.approx(5.0)


def test_catalog_products_without_events_are_indexed_first() -> None:
    data = build_interactions(
        ["u1"], ["p9"], ["product_viewed"], [NOW], known_products=["p1", "p2"]
    )
    assert list(data.product_ids) == ["p1", "p2", "p9"]
    assert list(data.interactions_per_product()) == [0, 0, 1]


def test_the_same_session_id_of_two_users_is_two_sessions() -> None:
    data = build_interactions(
        ["u1", "u2", "u3"],
        ["p1", "p1", "p1"],
        ["purchase"] * 3,
        [NOW] * 3,
        session_ids=["s1", "s1", None],
    )
    assert data.event_sessions[0] != data.event_sessions[1]
    assert data.event_sessions[2] == -1


def test_parallel_arrays_of_different_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="parallel"):
        build_interactions(["u1"], ["p1", "p2"], ["purchase"], [NOW])


# ------------------------------------------------------------------ readiness
def test_readiness_uses_the_spec_minimums_exactly() -> None:
    ready, not_ready = everything_ready(), nothing_ready()
    for strategy in ("collaborative", "content_based", "trending", "frequently_bought_together"):
        assert ready.is_ready(strategy)
        assert not not_ready.is_ready(strategy)


def test_the_readiness_report_shows_counts_and_thresholds() -> None:
    report = nothing_ready().to_dict()
    assert report["collaborative"] == {
        "strategy": "collaborative",
        "ready": False,
        "counts": {"usersWithMinEvents": 999},
        "thresholds": {"usersWithMinEvents": 1_000},
    }
    assert report["frequently_bought_together"]["thresholds"] == {
        "purchaseSessionsWithMinItems": 100
    }


def test_readiness_counts_users_sessions_and_recent_events_from_interactions() -> None:
    users: list[str] = []
    products: list[str] = []
    kinds: list[str] = []
    times: list[float] = []
    sessions: list[str | None] = []
    for u in range(1_000):  # 1,000 users with exactly 5 events each, 10 days ago
        for k in range(5):
            users.append(f"u{u}")
            products.append(f"p{k}")
            kinds.append("product_viewed")
            times.append(NOW - 10 * DAY)
            sessions.append(None)
    for s in range(100):  # 100 purchase sessions with 2 items, 99 of them old
        for p in ("p1", "p2"):
            users.append(f"buyer{s}")
            products.append(p)
            kinds.append("purchase")
            times.append(NOW - (60 if s == 0 else 5 * DAY))
            sessions.append(f"s{s}")
    users.append("x")  # a one-item purchase session does not count
    products.append("p3")
    kinds.append("purchase")
    times.append(NOW - 5 * DAY)
    sessions.append("single")
    data = build_interactions(users, products, kinds, np.array(times), session_ids=sessions)
    report = assess_readiness(data=data, catalog_products=50, now=NOW)
    assert report.strategies["collaborative"].counts == {"usersWithMinEvents": 1_000}
    assert report.strategies["frequently_bought_together"].counts == {
        "purchaseSessionsWithMinItems": 100
    }
    assert report.strategies["trending"].counts == {"eventsLast24h": 2}
    assert all(r.ready for r in report.strategies.values())
    later = assess_readiness(data=data, catalog_products=50, now=NOW + 2 * DAY)
    assert not later.is_ready("trending")


# ------------------------------------------------------------------ fallbacks
@pytest.mark.parametrize("events", [0, 1, 4])
def test_a_user_with_fewer_than_five_events_gets_trending_instead_of_collaborative(
    events: int,
) -> None:
    choice = choose_strategy(
        requested="collaborative", readiness=everything_ready(), user_event_count=events
    )
    assert (choice.strategy, choice.is_fallback, choice.fallback_reason) == (
        "trending",
        True,
        COLD_START_USER,
    )
    assert choice.to_meta() == {
        "strategy": "trending",
        "isFallback": True,
        "fallbackReason": "cold_start_user",
    }


def test_a_user_with_five_events_gets_collaborative_when_it_is_ready() -> None:
    choice = choose_strategy(
        requested="collaborative", readiness=everything_ready(), user_event_count=5
    )
    assert (choice.strategy, choice.is_fallback, choice.fallback_reason) == (
        "collaborative",
        False,
        None,
    )


def test_content_based_serves_a_user_from_the_first_event_but_not_before() -> None:
    ready = everything_ready()
    first = choose_strategy(requested="content_based", readiness=ready, user_event_count=1)
    assert (first.strategy, first.is_fallback) == ("content_based", False)
    none = choose_strategy(requested="content_based", readiness=ready, user_event_count=0)
    assert (none.strategy, none.fallback_reason) == ("trending", COLD_START_USER)


def test_collaborative_not_ready_falls_back_to_content_based_for_a_known_user() -> None:
    readiness = readiness_from_counts(
        users_with_min_events=10,
        purchase_sessions_with_min_items=0,
        catalog_products=500,
        events_last_24h=3,
    )
    choice = choose_strategy(requested="collaborative", readiness=readiness, user_event_count=20)
    assert (choice.strategy, choice.is_fallback, choice.fallback_reason) == (
        "content_based",
        True,
        STRATEGY_NOT_READY,
    )


def test_nothing_ready_falls_back_to_trending_as_the_last_resort() -> None:
    choice = choose_strategy(
        requested="content_based", readiness=nothing_ready(), user_event_count=20
    )
    assert (choice.strategy, choice.fallback_reason) == ("trending", STRATEGY_NOT_READY)


def test_trending_is_never_reported_as_a_fallback() -> None:
    choice = choose_strategy(requested="trending", readiness=nothing_ready(), user_event_count=0)
    assert (choice.strategy, choice.is_fallback, choice.fallback_reason) == (
        "trending",
        False,
        None,
    )


def test_a_product_without_interactions_gets_content_based_neighbours() -> None:
    for requested in ("frequently_bought_together", "collaborative"):
        choice = choose_strategy(
            requested=requested,
            readiness=everything_ready(),
            user_event_count=50,
            product_id="new-sku",
            product_interaction_count=0,
        )
        assert (choice.strategy, choice.mode, choice.fallback_reason) == (
            "content_based",
            "product",
            COLD_START_PRODUCT,
        )


def test_fbt_serves_an_anchor_product_with_interactions_when_ready() -> None:
    choice = choose_strategy(
        requested="frequently_bought_together",
        readiness=everything_ready(),
        user_event_count=0,
        product_id="p1",
        product_interaction_count=12,
    )
    assert (choice.strategy, choice.mode, choice.is_fallback) == (
        "frequently_bought_together",
        "product",
        False,
    )


def test_fbt_not_ready_falls_back_to_content_based_neighbours_of_the_anchor() -> None:
    readiness = readiness_from_counts(
        users_with_min_events=0,
        purchase_sessions_with_min_items=99,
        catalog_products=60,
        events_last_24h=0,
    )
    choice = choose_strategy(
        requested="frequently_bought_together",
        readiness=readiness,
        user_event_count=0,
        product_id="p1",
        product_interaction_count=12,
    )
    assert (choice.strategy, choice.mode, choice.fallback_reason) == (
        "content_based",
        "product",
        STRATEGY_NOT_READY,
    )


def test_fbt_without_an_anchor_product_falls_back_to_trending() -> None:
    choice = choose_strategy(
        requested="frequently_bought_together", readiness=everything_ready(), user_event_count=9
    )
    assert (choice.strategy, choice.fallback_reason) == ("trending", MISSING_PRODUCT_CONTEXT)


def test_an_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        choose_strategy(requested="magic", readiness=everything_ready(), user_event_count=9)
