"""The Redis side of ingestion on the real Redis: the one-command pre-check, and the guarded
script that merges the operations of a message's new events before running them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from domain.events import dedupe_digest
from store import keys
from store.counters import day_of
from store.events import GuardedEffects, apply_guarded, event_effects, precheck


def _row(n: int, *, user: str, kind: str, moment: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"ev-{n}",
        "event_type": kind,
        "user_id": user,
        "product_id": f"sku-{n % 7}",
        "occurred_at": moment - timedelta(seconds=n),
        "price": extra.get("price"),
        "placement_id": extra.get("placement_id"),
        "strategy": extra.get("strategy"),
        "experiment_id": extra.get("experiment_id"),
        "variant": extra.get("variant"),
    }


def _rows() -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    rows = []
    kinds = ["product_viewed", "add_to_cart", "recommendation_impressed", "recommendation_clicked"]
    for n in range(60):
        kind = kinds[n % len(kinds)]
        extra: dict[str, Any] = {}
        if kind.startswith("recommendation"):
            extra = {"placement_id": "home", "strategy": "trending"}
            if n % 3 == 0:
                extra |= {"experiment_id": "exp-1", "variant": "variant"}
        rows.append(
            _row(n, user=f"u{n % 4}", kind=kind, moment=now if n % 2 else yesterday, **extra)
        )
    for n in range(60, 65):
        rows.append(_row(n, user="u1", kind="purchase", moment=now, price=19.99))
    # One user with more history entries than the projection keeps: the trim must agree.
    rows += [_row(n, user="heavy", kind="product_viewed", moment=now) for n in range(100, 240)]
    for row in rows[100:]:
        row["product_id"] = f"heavy-{row['event_id']}"
    return rows


async def _snapshot(redis: Redis, tenant_id: str) -> dict[str, Any]:
    """Every key of the tenant by its name with the tenant id removed, and its content."""
    found: dict[str, Any] = {}
    async for raw in redis.scan_iter(match=f"*{tenant_id}*", count=1000):
        key = raw.decode()
        kind_raw: Any = await redis.type(key)
        kind = kind_raw.decode()
        if kind == "hash":
            value: Any = await redis.hgetall(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set" and ":events:seen:" in key:
            value = await redis.scard(key)  # the guards are digests of the tenant id
        elif kind == "set":
            value = await redis.smembers(key)
        else:
            value = await redis.pfcount(key)
        found[key.replace(tenant_id, "TENANT")] = value
    return found


async def _apply_one_by_one(redis: Redis, effects: list[GuardedEffects]) -> None:
    """The reference: each new event's operations as plain commands, one at a time."""
    for effect in effects:
        if not await redis.sadd(effect.guard_key, effect.guard_member):
            continue
        for op, key, a, b in effect.ops:
            if op == "hincrby":
                await redis.hincrby(key, a, int(b))
            elif op == "hincrbyfloat":
                await redis.hincrbyfloat(key, a, float(b))
            elif op == "pfadd":
                await redis.pfadd(key, a)
            elif op == "zincrby":
                await redis.zincrby(key, float(b), a)
            elif op == "zaddgt":
                await redis.zadd(key, {a: float(b)}, gt=True)
            elif op == "ztrim":
                await redis.zremrangebyrank(key, 0, -(int(a) + 1))
            elif op == "sadd":
                await redis.sadd(key, a)
            else:
                raise AssertionError(f"unknown operation {op}")


async def test_merged_effects_leave_redis_exactly_as_applying_each_event_alone(
    redis: Redis,
) -> None:
    rows = _rows()
    merged, one_by_one = str(uuid.uuid4()), str(uuid.uuid4())
    effects = event_effects(tenant_id=merged, rows=rows + rows[:10])
    assert await apply_guarded(redis, effects) == len(rows)
    await _apply_one_by_one(redis, event_effects(tenant_id=one_by_one, rows=rows + rows[:10]))
    assert await apply_guarded(redis, event_effects(tenant_id=merged, rows=rows)) == 0
    expected = await _snapshot(redis, one_by_one)
    assert await _snapshot(redis, merged) == expected
    history = expected[keys.user_history("TENANT", "heavy")]
    assert len(history) == 100


async def test_the_precheck_answers_for_each_product_event_and_client_id(redis: Redis) -> None:
    t = str(uuid.uuid4())
    now = datetime.now(UTC)
    old = now - timedelta(days=3)

    def digest(n: int, moment: datetime) -> str:
        return dedupe_digest(
            tenant_id=t, user_id=f"u{n}", event_type="purchase", product_id="p", occurred_at=moment
        )

    await redis.hset(keys.catalog_cards(t), "sku-é/1", "{}")
    await redis.sadd(keys.events_seen(t, day_of(now)), bytes.fromhex(digest(1, now)))
    await redis.sadd(keys.events_seen(t, day_of(old)), bytes.fromhex(digest(2, old)))
    await redis.sadd(keys.event_client_ids(t, day_of(now)), "c-today")
    await redis.sadd(keys.event_client_ids(t, day_of(now - timedelta(days=1))), "c-yesterday")
    found = await precheck(
        redis,
        tenant_id=t,
        product_ids=["sku-é/1", "sku-2", "sku-é/1x"],
        digests=[
            (digest(1, now), now),
            (digest(2, old), old),
            (digest(3, now), now),
            (digest(2, now), now),
        ],
        client_ids=["c-today", "c-yesterday", "c-never"],
    )
    assert found.known_product == [True, False, False]
    assert found.seen == [True, True, False, False]
    assert found.seen_client_id == [True, True, False]
