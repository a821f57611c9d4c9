"""Serving rules on hand-made contexts: strategy choice, filters, fallbacks, experiments."""

from __future__ import annotations

from dataclasses import replace

from domain.cold_start import readiness_from_counts
from domain.serving import Hydration, ServingContext, ServingRequest, serve

READY = readiness_from_counts(
    users_with_min_events=5000,
    purchase_sessions_with_min_items=500,
    catalog_products=500,
    events_last_24h=100,
)


def card(category: str = "Shoes") -> dict[str, object]:
    return {"name": "x", "price": 1.0, "currency": "USD", "category": category}


HYDRATION_FIELDS = {"purchased", "cards", "available"}


def context(**overrides: object) -> tuple[ServingContext, Hydration]:
    products = [f"p{i}" for i in range(10)]
    base = ServingContext(
        model_version="v1",
        readiness=READY,
        widget=None,
        experiment=None,
        history=[("product_viewed", "p9", 100.0)] * 6,
        history_count=6,
        lists={
            "collaborative": [(p, 1.0 - i / 10, ("p9",)) for i, p in enumerate(products[:5])],
            "trending": [(p, 5.0 - i, ()) for i, p in enumerate(reversed(products))],
        },
        recent_content={"p9": [("p7", 0.9, ("p9",)), ("p8", 0.8, ("p9",))]},
        live_trending=[],
        product_interactions=0,
    )
    hydration = Hydration(
        cards={p: card() for p in products}, available=frozenset(products), purchased=frozenset()
    )
    picked = {k: v for k, v in overrides.items() if k in HYDRATION_FIELDS}
    hydration = replace(hydration, **picked)  # type: ignore[arg-type]
    rest = {k: v for k, v in overrides.items() if k not in HYDRATION_FIELDS}
    return replace(base, **rest), hydration  # type: ignore[arg-type]


def ids(items: list) -> list[str]:
    return [item.product_id for item in items]


def test_collaborative_answers_from_the_users_published_list() -> None:
    decision, items = serve(
        ServingRequest(user_id="u", strategy="collaborative", limit=3), *context()
    )
    assert decision.choice.strategy == "collaborative" and not decision.choice.is_fallback
    assert ids(items) == ["p0", "p1", "p2"]
    assert items[0].to_dict()["reason"] == {"strategy": "collaborative", "because": ["p9"]}


def test_unavailable_purchased_and_excluded_products_never_come_back() -> None:
    ctx = context(
        purchased=frozenset({"p1"}), available=frozenset({"p0", "p1", "p2", "p3", "p4"}) - {"p2"}
    )
    _, items = serve(
        ServingRequest(user_id="u", strategy="collaborative", limit=10, exclude=frozenset({"p3"})),
        *ctx,
    )
    assert set(ids(items)) == {"p0", "p4"}


def test_purchased_products_return_only_when_asked_for() -> None:
    ctx = context(purchased=frozenset({"p1"}))
    _, items = serve(
        ServingRequest(user_id="u", strategy="collaborative", limit=3, include_purchased=True), *ctx
    )
    assert "p1" in ids(items)


def test_category_filter_keeps_only_that_category() -> None:
    cards = {f"p{i}": card("Bags" if i % 2 else "Shoes") for i in range(10)}
    _, items = serve(
        ServingRequest(user_id="u", strategy="collaborative", limit=10, category="bags"),
        *context(cards=cards),
    )
    assert ids(items) and all(int(p[1:]) % 2 == 1 for p in ids(items))


def test_a_new_user_gets_trending_marked_as_a_fallback() -> None:
    decision, items = serve(
        ServingRequest(user_id="u", strategy="collaborative", limit=2),
        *context(history=[], history_count=0, recent_content={}),
    )
    assert decision.choice.strategy == "trending"
    assert decision.choice.is_fallback and decision.choice.fallback_reason == "cold_start_user"
    assert ids(items) == ["p9", "p8"]


def test_content_based_follows_the_latest_views_without_a_retrain() -> None:
    decision, items = serve(
        ServingRequest(user_id="u", strategy="content_based", limit=2), *context()
    )
    assert decision.choice.strategy == "content_based"
    assert ids(items) == ["p7", "p8"]


def test_a_short_list_is_backfilled_with_trending_items() -> None:
    _, items = serve(ServingRequest(user_id="u", strategy="content_based", limit=4), *context())
    assert ids(items)[:2] == ["p7", "p8"]
    assert [item.strategy for item in items[2:]] == ["trending", "trending"]


def test_the_widget_strategy_and_max_items_apply_when_the_query_says_nothing() -> None:
    decision, items = serve(
        ServingRequest(user_id="u", placement_id="home"),
        *context(widget={"strategy": "trending", "maxItems": 4}),
    )
    assert decision.requested == "trending" and len(items) == 4


def test_a_running_experiment_picks_the_strategy_per_user_and_reports_it() -> None:
    experiment = {
        "experimentId": "e1",
        "controlStrategy": "collaborative",
        "variantStrategy": "trending",
        "trafficSplit": 100,
    }
    decision, _ = serve(
        ServingRequest(user_id="u", placement_id="home"), *context(experiment=experiment)
    )
    assert decision.experiment_id == "e1" and decision.variant == "variant"
    assert decision.requested == "trending"


def test_an_explicit_strategy_overrides_the_experiment() -> None:
    experiment = {
        "experimentId": "e1",
        "controlStrategy": "collaborative",
        "variantStrategy": "trending",
        "trafficSplit": 100,
    }
    decision, _ = serve(
        ServingRequest(user_id="u", placement_id="home", strategy="content_based"),
        *context(experiment=experiment),
    )
    assert decision.experiment_id is None and decision.requested == "content_based"


def test_frequently_bought_together_needs_a_product() -> None:
    decision, _ = serve(
        ServingRequest(user_id="u", strategy="frequently_bought_together"), *context()
    )
    assert decision.choice.strategy == "trending"
    assert decision.choice.fallback_reason == "missing_product_context"


def test_a_product_without_interactions_gets_content_neighbours() -> None:
    ctx = context(
        lists={"contentItem": [("p3", 0.7, ("p5",))], "trending": []}, product_interactions=0
    )
    decision, items = serve(
        ServingRequest(user_id="u", strategy="frequently_bought_together", product_id="p5"), *ctx
    )
    assert decision.choice.strategy == "content_based"
    assert decision.choice.fallback_reason == "cold_start_product"
    assert ids(items)[0] == "p3"


def test_the_anchor_product_is_never_recommended_for_itself() -> None:
    ctx = context(
        lists={"fbtItem": [("p5", 0.9, ()), ("p4", 0.8, ("p5",))]}, product_interactions=3
    )
    _, items = serve(
        ServingRequest(user_id="u", strategy="frequently_bought_together", product_id="p5"), *ctx
    )
    assert "p5" not in ids(items) and ids(items)[0] == "p4"


def test_a_ready_strategy_without_this_users_list_falls_back_honestly() -> None:
    ctx = context(lists={"trending": [("p1", 1.0, ())]}, recent_content={})
    decision, items = serve(ServingRequest(user_id="u", strategy="collaborative"), *ctx)
    assert (
        decision.choice.is_fallback and decision.choice.fallback_reason == "user_not_in_model_yet"
    )
    assert ids(items) == ["p1"]
