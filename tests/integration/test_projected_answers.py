"""The user's projected answers read in the rate-limit call: stamps, age and the request's
filters (exclude, category, availability, purchases, limit), against the real Redis."""

from __future__ import annotations

import time
import uuid

from conftest import TenantContext
from redis.asyncio import Redis

from domain.serving import ServedItem
from store import keys
from store.answers import (
    ANSWER_LOOKUP,
    AnswerLookup,
    ProjectedArgs,
    answer_lookup_keys,
    decode_lookup,
    encode_field,
    lookup_args,
)
from store.ratelimit import RateLimiter, Window

CARDS = {
    "p1": "Shoes",
    "p2": "Bags",
    "p3": "Shoes",
    "p4": "Shoes",
    "p5": "Bags",
}


def _args(**overrides: object) -> ProjectedArgs:
    values: dict[str, object] = {
        "field": "collaborative",
        "product_id": None,
        "limit": 10,
        "category": None,
        "include_purchased": False,
        "exclude": frozenset(),
    }
    values.update(overrides)
    return ProjectedArgs(**values)  # type: ignore[arg-type]


async def _project(redis: Redis, tenant: str, user: str, *, complete: bool = True) -> None:
    items = [
        ServedItem(p, 1.0 / (i + 1), "collaborative", (), {"name": p, "category": c})
        for i, (p, c) in enumerate(CARDS.items())
    ]
    head = {"strategy": "collaborative", "isFallback": False, "fallbackReason": None}
    field = encode_field(
        stamp="0|||", written_at=int(time.time()), complete=complete, head=head, items=items
    )
    assert field is not None
    await redis.hset(keys.user_answers(tenant, user), "collaborative", field)
    await redis.sadd(keys.catalog_available(tenant), *CARDS)


async def _read(redis: Redis, tenant: str, user: str, args: ProjectedArgs) -> AnswerLookup:
    limiter = RateLimiter(redis, follow_up=ANSWER_LOOKUP)
    counted = await limiter.count(
        Window(key=f"reco:{tenant}:test:{uuid.uuid4().hex}", limit=100),
        requests=1,
        follow_up_keys=answer_lookup_keys(
            tenant_id=tenant, user_id=user, placement_id="", query_digest=uuid.uuid4().hex
        ),
        follow_up_args=lookup_args(1, args, 300, user_id=user),
    )
    return decode_lookup(counted.extra)


def _ids(answer: AnswerLookup) -> list[str]:
    import json

    return [item["productId"] for item in json.loads(b"[" + answer.items + b"]")]


async def test_a_projection_hit_keeps_the_first_items_that_pass_every_filter(
    redis: Redis, tenant: TenantContext
) -> None:
    user = "shopper"
    await _project(redis, tenant.tenant_id, user)
    await redis.srem(keys.catalog_available(tenant.tenant_id), "p3")
    await redis.sadd(keys.user_purchased(tenant.tenant_id, user), "p4")
    answer = await _read(redis, tenant.tenant_id, user, _args())
    assert answer.projection == "hit" and _ids(answer) == ["p1", "p2", "p5"]
    kept = await _read(redis, tenant.tenant_id, user, _args(include_purchased=True, limit=2))
    assert _ids(kept) == ["p1", "p2"]
    shoes = await _read(redis, tenant.tenant_id, user, _args(category="shoes"))
    assert _ids(shoes) == ["p1"]
    excluded = await _read(redis, tenant.tenant_id, user, _args(exclude=frozenset({"p1"})))
    assert _ids(excluded) == ["p2", "p5"]


async def test_a_projection_of_another_stamp_or_too_short_is_not_served(
    redis: Redis, tenant: TenantContext
) -> None:
    await _project(redis, tenant.tenant_id, "later")
    await redis.hincrby(keys.user_stamp(tenant.tenant_id, "later"), "n", 1)
    assert (await _read(redis, tenant.tenant_id, "later", _args())).projection == "stale"
    await _project(redis, tenant.tenant_id, "cut", complete=False)
    cut = await _read(redis, tenant.tenant_id, "cut", _args(limit=6))
    assert cut.projection == "short" and cut.items == b""
    assert (await _read(redis, tenant.tenant_id, "cut", _args(limit=5))).projection == "hit"
    assert (await _read(redis, tenant.tenant_id, "nobody", _args())).projection == "absent"


async def _trending(
    redis: Redis, tenant: str, *, counter: str = "", age: int = 0, hour: int = 1
) -> None:
    """The tenant's trending projection, written now - `age` s behind trending stamp `counter`
    with the live counters of `hour` (the hour `_read` asks in)."""
    items = [
        ServedItem(p, 1.0 / (i + 1), "trending", (), {"name": p, "category": c})
        for i, (p, c) in enumerate(CARDS.items())
    ]
    fields = {}
    for name, members in (
        ("trending", items),
        ("trending@shoes", [i for i in items if i.card["category"] == "Shoes"]),
    ):
        field = encode_field(
            stamp=f"0|||{counter}@{hour}",
            written_at=int(time.time()) - age,
            complete=True,
            head={"modelVersion": None},
            items=members,
        )
        assert field is not None
        fields[name] = field
    await redis.hset(keys.tenant_answers(tenant), mapping=fields)  # type: ignore[arg-type]
    await redis.sadd(keys.catalog_available(tenant), *CARDS)


async def test_a_shopper_without_events_is_served_the_tenants_trending_and_becomes_a_reader(
    redis: Redis, tenant: TenantContext
) -> None:
    await _trending(redis, tenant.tenant_id)
    first = await _read(redis, tenant.tenant_id, "newcomer", _args(limit=3))
    assert (first.projection, first.source) == ("hit", "tenant")
    assert _ids(first) == ["p1", "p2", "p3"]
    shoes = await _read(redis, tenant.tenant_id, "newcomer", _args(category="shoes"))
    assert _ids(shoes) == ["p1", "p3", "p4"]
    # Asked for once: the ingest worker projects the shopper's field after their events.
    assert await redis.sismember(keys.answer_readers(tenant.tenant_id), "newcomer")
    assert await redis.hexists(keys.user_answers(tenant.tenant_id, "newcomer"), "collaborative")
    # With events of their own, the shopper's answer is ranked (nothing projected yet).
    await redis.zadd(keys.user_history(tenant.tenant_id, "newcomer"), {"product_viewed|p1": 1})
    assert (await _read(redis, tenant.tenant_id, "newcomer", _args())).projection == "absent"


async def test_the_trending_projection_is_served_behind_the_live_counters_for_a_moment_only(
    redis: Redis, tenant: TenantContext
) -> None:
    tenant_id = tenant.tenant_id
    await _trending(redis, tenant_id, counter="")
    asked = _args(field="trending")
    assert (await _read(redis, tenant_id, "shopper", asked)).projection == "hit"
    # A new event moved the counters: a projection written just now is still served...
    await redis.hincrby(keys.trending_stamp(tenant_id), "n", 1)
    assert (await _read(redis, tenant_id, "shopper", asked)).projection == "hit"
    # ...one written two seconds ago is not.
    await _trending(redis, tenant_id, counter="", age=2)
    behind = await _read(redis, tenant_id, "shopper", asked)
    assert (behind.projection, behind.trending) == ("stale", "stale")
    # The hour turned: the live counters it read are no longer the ones a request reads.
    await _trending(redis, tenant_id, counter="1", hour=0)
    assert (await _read(redis, tenant_id, "shopper", asked)).projection == "hit"
    await _trending(redis, tenant_id, counter="1", age=2, hour=0)
    turned = await _read(redis, tenant_id, "shopper", asked)
    assert (turned.projection, turned.trending) == ("stale", "stale")
    await _trending(redis, tenant_id, counter="1", age=2)
    assert (await _read(redis, tenant_id, "shopper", asked)).projection == "hit"
    await redis.delete(keys.tenant_answers(tenant_id))
    gone = await _read(redis, tenant_id, "shopper", asked)
    assert (gone.projection, gone.trending) == ("absent", "absent")


async def test_a_field_answered_by_trending_takes_its_head_and_the_tenants_items(
    redis: Redis, tenant: TenantContext
) -> None:
    tenant_id = tenant.tenant_id
    await _trending(redis, tenant_id)
    head = {"strategy": "trending", "isFallback": True, "fallbackReason": "cold_start_user"}
    field = encode_field(
        stamp="0|||", written_at=int(time.time()), complete=True, head=head, items=[], trending=True
    )
    assert field is not None
    await redis.hset(keys.user_answers(tenant_id, "few-events"), "collaborative", field)
    await redis.zadd(keys.user_history(tenant_id, "few-events"), {"product_viewed|p9": 1})
    answer = await _read(redis, tenant_id, "few-events", _args(exclude=frozenset({"p1"})))
    assert (answer.projection, answer.source) == ("hit", "field")
    assert b"cold_start_user" in answer.head and _ids(answer) == ["p2", "p3", "p4", "p5"]
