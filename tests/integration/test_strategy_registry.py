"""A new strategy is its module plus one registration: registered here through the registry's
public API only, it is trained, published, chosen by the cold-start policy, ranked by serving
and projected and served by the lookup script, against the real Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from domain.cold_start import COLD_START_USER, ReadinessReport, choose_strategy
from domain.serving import ServingRequest, rank
from domain.strategies.registry import register, strategy_names, unregister
from domain.strategies.spec import (
    Candidate,
    Readiness,
    ServedList,
    StrategySpec,
    TrainingInputs,
)
from domain.training import EventColumns, train
from store import keys
from store.answers import (
    ANSWER_LOOKUP,
    AnswerProjector,
    ProjectedArgs,
    answer_lookup_keys,
    decode_lookup,
    lookup_args,
)
from store.models import PublishedModel, ServingReader, publish_model
from store.ratelimit import RateLimiter, Window

CHEAPEST = "cheapest_first"

# ---- the whole strategy: what would be its module under domain/strategies ----


def _train_cheapest(inputs: TrainingInputs) -> dict[str, Any]:
    """The catalog, cheapest first: one list for the tenant."""
    ranked = sorted(inputs.catalog, key=lambda item: (float(item["price"]), item["productId"]))
    return {"cheap": [[str(item["productId"]), 1.0 / (1 + i), []] for i, item in enumerate(ranked)]}


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


async def test_a_registered_strategy_is_trained_published_and_served_from_its_projection(
    redis: Redis, tenant: TenantContext, registered: StrategySpec
) -> None:
    tenant_id = tenant.tenant_id
    result = train(events=_events(), catalog=CATALOG, now=1_700_000_100.0, with_evaluation=False)
    # Trained beside the built-in strategies, with its own readiness.
    assert [e[0] for e in result.lists["cheap"]] == ["p1", "p3", "p2", "p0", "p4"]
    assert result.readiness[CHEAPEST]["ready"] is True
    assert result.lists["cf"] is not None  # the built-in ones still train
    # Published with the version's other lists.
    await publish_model(
        redis,
        tenant_id=tenant_id,
        model=PublishedModel(
            version="v-extra",
            lists=result.lists,
            product_interactions=result.product_interactions,
            meta={"readiness": result.readiness, "version": "v-extra"},
        ),
    )
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
