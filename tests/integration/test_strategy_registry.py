"""A new strategy is its module plus one registration: registered here through the registry's
public API only, it is trained, published, evaluated offline and held by the publish gate,
rebuilt by a catalog change, chosen by the cold-start policy, ranked by serving and projected
and served by the lookup script, against the real Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from domain.cold_start import COLD_START_USER, ReadinessReport, choose_strategy
from domain.evaluation import evaluate, gate
from domain.serving import ServingRequest, rank
from domain.strategies.base import ranking_lists
from domain.strategies.registry import register, strategy_names, unregister
from domain.strategies.spec import (
    Candidate,
    Evaluated,
    Readiness,
    ServedList,
    StrategySpec,
    TrainingInputs,
)
from domain.training import EventColumns, TrainingResult, catalog_refreshed_lists, train
from store import keys
from store.answers import (
    ANSWER_LOOKUP,
    AnswerProjector,
    ProjectedArgs,
    answer_lookup_keys,
    decode_lookup,
    lookup_args,
)
from store.models import PublishedModel, ServingReader, publish_model, replace_refreshed_lists
from store.ratelimit import RateLimiter, Window

CHEAPEST = "cheapest_first"

# ---- the whole strategy: what would be its module under domain/strategies ----


def _cheapest_list(catalog: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The catalog, cheapest first."""
    ranked = sorted(catalog, key=lambda item: (float(item["price"]), item["productId"]))
    return [[str(item["productId"]), 1.0 / (1 + i), []] for i, item in enumerate(ranked)]


def _train_cheapest(inputs: TrainingInputs) -> dict[str, Any]:
    """One list for the tenant."""
    return {"cheap": _cheapest_list(inputs.catalog)}


def _cheapest_evaluation_lists(split: Any, catalog: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The same order for every scored user, minus what each has (as served)."""
    index = split.train.product_index
    order = [index[p] for p, _, _ in _cheapest_list(catalog) if p in index]
    return ranking_lists(np.array(order, dtype=np.int64), split.train.matrix, split.eval_rows)


def _cheapest_readiness(inputs: TrainingInputs) -> Readiness:
    return Readiness({"catalogProducts": inputs.catalog_products}, {"catalogProducts": 3})


def _cheapest_candidates(context: Any) -> Sequence[Candidate]:
    return list(context.lists.get(CHEAPEST, []))


SPEC = StrategySpec(
    CHEAPEST,
    lists=(ServedList(CHEAPEST, "cheap", "tenant"),),
    train=_train_cheapest,
    readiness=_cheapest_readiness,
    user_candidates=_cheapest_candidates,
    min_user_events=2,
    evaluation=Evaluated(_cheapest_evaluation_lists, needs_catalog=True),
    catalog_refresh=lambda catalog: {"cheap": _cheapest_list(catalog)},
)

# ---- the test ----

CATALOG = [
    {"productId": f"p{i}", "name": f"Item {i}", "category": "Misc", "price": price}
    for i, price in enumerate([30.0, 5.0, 12.0, 7.5, 99.0])
]


@pytest.fixture
def registered() -> Iterator[StrategySpec]:
    """The extra strategy, registered for this test only."""
    register(SPEC)
    yield SPEC
    unregister(CHEAPEST)
    assert CHEAPEST not in strategy_names()


def _events() -> EventColumns:
    users = [f"u{i % 4}" for i in range(20)]
    return EventColumns(
        user_ids=users,
        product_ids=[f"p{i % 5}" for i in range(20)],
        event_types=["product_viewed"] * 20,
        timestamps=[1_700_000_000.0 + i for i in range(20)],
        session_ids=[None] * 20,
    )


def _train() -> TrainingResult:
    """The shop's lists, every registered strategy's, without the offline evaluation."""
    return train(events=_events(), catalog=CATALOG, now=1_700_000_100.0, with_evaluation=False)


async def _publish(redis: Redis, tenant_id: str, result: TrainingResult, version: str) -> None:
    """Publish a training's lists as the tenant's current version."""
    await publish_model(
        redis,
        tenant_id=tenant_id,
        model=PublishedModel(
            version=version,
            lists=result.lists,
            product_interactions=result.product_interactions,
            meta={"readiness": result.readiness, "version": version},
        ),
    )


async def test_a_registered_strategy_is_trained_published_and_served_from_its_projection(
    redis: Redis, tenant: TenantContext, registered: StrategySpec
) -> None:
    tenant_id = tenant.tenant_id
    result = _train()
    # Trained beside the built-in strategies, with its own readiness.
    assert [e[0] for e in result.lists["cheap"]] == ["p1", "p3", "p2", "p0", "p4"]
    assert result.readiness[CHEAPEST]["ready"] is True
    assert result.lists["cf"] is not None  # the built-in ones still train
    # Published with the version's other lists.
    await _publish(redis, tenant_id, result, "v-extra")
    assert await redis.exists(f"{keys.model_prefix(tenant_id)}v-extra:cheap")
    cards = {
        item["productId"]: json.dumps({"name": item["name"], "category": item["category"]})
        for item in CATALOG
    }
    await redis.hset(keys.catalog_cards(tenant_id), mapping=cards)  # type: ignore[arg-type]
    await redis.sadd(keys.catalog_available(tenant_id), *[str(i["productId"]) for i in CATALOG[:4]])
    history = keys.user_history(tenant_id, "shopper")
    await redis.zadd(history, {"product_viewed|p0": 1.0, "product_viewed|p4": 2.0})
    # Ranked by serving from the published list.
    reader = ServingReader(redis)
    context = await reader.read(
        tenant_id=tenant_id,
        user_id="shopper",
        product_id=None,
        placement_id=None,
        live_hours=["1970010100", "1970010101"],
    )
    decision, ranked = rank(ServingRequest(user_id="shopper", strategy=CHEAPEST), context)
    assert (decision.choice.strategy, decision.choice.is_fallback) == (CHEAPEST, False)
    assert [c.product_id for c in ranked[:3]] == ["p1", "p3", "p2"]
    # Projected for the shopper, and served by the lookup script with the request's filters.
    projector = AnswerProjector(redis, reader)
    fields = [CHEAPEST]
    assert await projector.project(
        tenant_id=tenant_id, user_id="shopper", fields=fields, default_strategy=None
    )
    limiter = RateLimiter(redis, follow_up=ANSWER_LOOKUP)
    asked = ProjectedArgs(
        field=CHEAPEST,
        product_id=None,
        limit=3,
        category=None,
        include_purchased=False,
        exclude=frozenset({"p3"}),
    )
    counted = await limiter.count(
        Window(key=f"reco:{tenant_id}:test:{uuid.uuid4().hex}", limit=100),
        requests=1,
        follow_up_keys=answer_lookup_keys(
            tenant_id=tenant_id,
            user_id="shopper",
            placement_id="",
            query_digest=uuid.uuid4().hex,
        ),
        follow_up_args=lookup_args(int(time.time()) // 3600, asked, 300, user_id="shopper"),
    )
    answer = decode_lookup(counted.extra)
    assert answer.projection == "hit"
    items = json.loads(b"[" + answer.items + b"]")
    # p3 excluded by the request, p4 not available.
    assert [item["productId"] for item in items] == ["p1", "p2", "p0"]
    assert {item["reason"]["strategy"] for item in items} == {CHEAPEST}
    assert json.loads(answer.head)["strategy"] == CHEAPEST


def test_the_cold_start_policy_reads_a_registered_strategys_minimum_events(
    registered: StrategySpec,
) -> None:
    ready = ReadinessReport({})
    cold = choose_strategy(requested=CHEAPEST, readiness=ready, user_event_count=1)
    assert (cold.strategy, cold.fallback_reason) == ("trending", COLD_START_USER)
    warm = choose_strategy(requested=CHEAPEST, readiness=ready, user_event_count=2)
    assert warm.fallback_reason != COLD_START_USER


DAY = 86_400.0
NOW = 1_700_000_000.0


def _returning_shoppers(users: int = 60) -> dict[str, list[Any]]:
    """Shoppers who bought two products weeks ago and came back this week for a third: the
    cheap ones for even shoppers (cheapest_first guesses them), dear ones for odd shoppers."""
    columns: dict[str, list[Any]] = {"users": [], "products": [], "types": [], "times": []}
    for u in range(users):
        cheap = u % 2 == 0
        picks = ["p1", "p3", "p2"] if cheap else ["p4", "p0", "p2"]
        for k, product in enumerate(picks):
            columns["users"].append(f"u{u}")
            columns["products"].append(product)
            columns["types"].append("purchase")
            columns["times"].append(NOW - (20, 19, 2)[k] * DAY + u)
    return columns


def _evaluate(shop: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    evaluation = evaluate(
        user_ids=shop["users"],
        product_ids=shop["products"],
        event_types=shop["types"],
        timestamps=shop["times"],
        session_ids=None,
        catalog=CATALOG,
        now=NOW,
    )
    assert evaluation.skipped is None, evaluation.skipped
    return evaluation.metrics


def test_a_registered_strategy_is_evaluated_offline_and_held_by_the_publish_gate(
    registered: StrategySpec,
) -> None:
    shop = _returning_shoppers()
    metrics = _evaluate(shop)
    # Scored beside the built-in strategies, on the same protocol and baseline.
    assert {CHEAPEST, "collaborative", "trending"} <= metrics.keys()
    assert metrics[CHEAPEST]["hr10"] == 1.0  # p2, the only product left, is in every list
    assert metrics[CHEAPEST]["popularityNdcg10"] == metrics["popularity"]["ndcg10"]
    # A version whose cheapest_first lost most of its NDCG against the published one is held.
    better = {**metrics[CHEAPEST], "ndcg10": 2 * metrics[CHEAPEST]["ndcg10"]}
    published = {**metrics, CHEAPEST: better}
    held = gate(candidate=metrics, published=published)
    assert not held.passed
    assert [r for r in held.reasons if r.startswith(f"{CHEAPEST}:")]
    # Not declared to beat popularity: a score below the baseline alone does not hold it.
    below = {CHEAPEST: {**metrics[CHEAPEST], "ndcg10": 0.0, "popularityNdcg10": 0.5}}
    assert gate(candidate=below, published=None).passed


def test_a_strategy_registered_without_an_evaluation_is_neither_scored_nor_gated(
    registered: StrategySpec,
) -> None:
    register(replace(SPEC, name="unscored_cheapest", evaluation=None))
    try:
        metrics = _evaluate(_returning_shoppers())
    finally:
        unregister("unscored_cheapest")
    assert CHEAPEST in metrics and "unscored_cheapest" not in metrics
    assert gate(candidate=metrics, published=None).passed


async def test_a_catalog_change_rebuilds_a_registered_strategys_lists_without_a_retrain(
    redis: Redis, tenant: TenantContext, registered: StrategySpec
) -> None:
    tenant_id = tenant.tenant_id
    await _publish(redis, tenant_id, _train(), "v-refresh")
    # p4 is now the cheapest: the catalog refresh (the catalog actor's) rebuilds the list.
    changed = [{**item, "price": 1.0} if item["productId"] == "p4" else item for item in CATALOG]
    lists = catalog_refreshed_lists(changed)
    assert {"cheap", "content"} <= lists.keys()
    stamp = await redis.get(keys.serving_stamp(tenant_id))
    assert await replace_refreshed_lists(redis, tenant_id=tenant_id, lists=lists) == "v-refresh"
    assert await redis.get(keys.serving_stamp(tenant_id)) != stamp  # projections go stale
    history = {"product_viewed|p0": 1.0, "product_viewed|p1": 2.0}
    await redis.zadd(keys.user_history(tenant_id, "shopper"), history)
    context = await ServingReader(redis).read(
        tenant_id=tenant_id,
        user_id="shopper",
        product_id=None,
        placement_id=None,
        live_hours=["1970010100", "1970010101"],
    )
    _, ranked = rank(ServingRequest(user_id="shopper", strategy=CHEAPEST), context)
    assert [c.product_id for c in ranked[:3]] == ["p4", "p1", "p3"]
    # The built-in content lists were rebuilt in the same version.
    assert await redis.hlen(f"{keys.model_prefix(tenant_id)}v-refresh:content") == len(CATALOG)
