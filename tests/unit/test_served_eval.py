"""The served-path benchmark's model stage: the product's cold-start policy applied to the
training output in memory, so that model and served figures compare the same answers."""

from __future__ import annotations

from typing import Any

from bench.offline_eval.served import Case, model_stage_lists, route_of
from domain.cold_start import readiness_from_counts
from domain.training import EventColumns, TrainingResult

TRENDING = [[f"p{n}", 10.0 - n, []] for n in range(1, 13)]


def _case() -> Case:
    bought = {"many": ["p3", "p4", "p5", "p6", "p10"], "few": ["p1", "p3"]}
    rows = [(user, product) for user, products in bought.items() for product in products]
    events = EventColumns(
        user_ids=[u for u, _ in rows],
        product_ids=[p for _, p in rows],
        event_types=["purchase"] * len(rows),
        timestamps=[1_000.0 + n for n in range(len(rows))],
        session_ids=[None] * len(rows),
    )
    catalog = [
        {"productId": f"p{n}", "name": f"P{n}", "category": "c", "price": 1.0} for n in range(1, 13)
    ]
    return Case("tiny", events, catalog, 2_000.0, {"many": {"p9"}, "few": {"p2"}})


def _result(*, collaborative_ready: bool) -> TrainingResult:
    readiness: dict[str, Any] = readiness_from_counts(
        users_with_min_events=1_000 if collaborative_ready else 10,
        purchase_sessions_with_min_items=0,
        catalog_products=60,
        events_last_24h=7,
    ).to_dict()
    return TrainingResult(
        lists={
            "cf": {"many": [["p9", 1.0, []], ["p8", 0.5, []]]},
            "content": {"p10": [["p7", 0.9, []], ["p3", 0.8, []]]},
            "trending": TRENDING,
        },
        product_interactions={},
        readiness=readiness,
        counts={},
    )


def test_a_user_with_enough_history_gets_the_model_list_backfilled_by_trending() -> None:
    lists, routes = model_stage_lists(_case(), _result(collaborative_ready=True), ["many", "few"])
    assert routes["many"] == "collaborative"
    # The model's two, then trending without what the user bought (p3-p6).
    assert lists["many"] == ["p9", "p8", "p1", "p2", "p7", "p11", "p12"]


def test_a_user_below_the_cold_start_line_gets_trending_without_what_they_bought() -> None:
    lists, routes = model_stage_lists(_case(), _result(collaborative_ready=True), ["many", "few"])
    assert routes["few"] == route_of("trending", "cold_start_user")
    assert lists["few"][:3] == ["p2", "p4", "p5"]
    assert "p1" not in lists["few"] and "p3" not in lists["few"]


def test_when_collaborative_is_not_ready_users_with_history_get_content_based() -> None:
    lists, routes = model_stage_lists(_case(), _result(collaborative_ready=False), ["many", "few"])
    assert routes["many"] == "content_based (strategy_not_ready)"
    assert lists["many"][0] == "p7"  # the content neighbour of the newest purchase, not p9
    assert routes["few"] == "trending (cold_start_user)"
