"""The Redis side of ingestion on the real Redis: the one-command pre-check, and the guarded
script that merges the operations of a message's new events before running them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
from redis.asyncio import Redis

from domain.events import Event, parse_event
from store import keys
from store.counters import day_of
from store.event_projections import GuardedEffects, apply_guarded, event_effects
from store.event_queue import EventQueue
from store.history import hour_of
from store.ingest_gate import precheck
from store.settings import Settings
from workers.broker import broker as dramatiq_broker


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


def _events(t: str, now: datetime, *raw: dict[str, Any]) -> list[Event]:
    return [
        parse_event({"eventType": "product_viewed", "productId": "p", **r}, tenant_id=t, now=now)
        for r in raw
    ]


async def test_the_precheck_answers_for_each_product_event_and_client_id(redis: Redis) -> None:
    t = str(uuid.uuid4())
    now = datetime.now(UTC)
    old = now - timedelta(days=3)
    events = _events(
        t,
        now,
        {"userId": "u1", "timestamp": now.isoformat(), "productId": "sku-é/1"},
        {"userId": "u2", "timestamp": old.isoformat(), "productId": "sku-2"},
        {"userId": "u3", "timestamp": now.isoformat(), "eventId": "c-today"},
        {"userId": "u4", "timestamp": now.isoformat(), "eventId": "c-yesterday"},
        {"userId": "u5", "timestamp": old.isoformat(), "eventId": "c-never"},
    )
    await redis.hset(keys.catalog_cards(t), mapping={"sku-é/1": "{}", "p": "{}"})
    await redis.sadd(keys.events_seen(t, day_of(now)), bytes.fromhex(events[0].digest))
    await redis.sadd(keys.events_seen(t, day_of(old)), bytes.fromhex(events[1].digest))
    await redis.sadd(keys.event_client_ids(t, day_of(now)), "c-today")
    await redis.sadd(keys.event_client_ids(t, day_of(now - timedelta(days=1))), "c-yesterday")
    found = await precheck(redis, tenant_id=t, events=events)
    assert found.known_product == [True, False, True, True, True]
    assert found.seen == [True, True, False, False, False]
    assert found.seen_client_id == [False, False, True, True, False]


async def test_the_precheck_queues_the_fresh_events_itself_in_the_brokers_database(
    redis: Redis, migrated: Settings
) -> None:
    t = str(uuid.uuid4())
    now = datetime.now(UTC)
    events = _events(
        t,
        now,
        {"userId": "seen", "timestamp": now.isoformat()},
        {"userId": "fresh", "timestamp": now.isoformat(), "productId": "sku-ünknown"},
        {"userId": "stale", "timestamp": (now - timedelta(days=2)).isoformat()},
        {"userId": "left-out", "timestamp": now.isoformat()},
    )
    await redis.hset(keys.catalog_cards(t), "p", "{}")
    await redis.sadd(keys.events_seen(t, day_of(now)), bytes.fromhex(events[0].digest))
    broker = Redis.from_url(migrated.broker_url)
    broker_db = int(broker.connection_pool.connection_kwargs.get("db") or 0)

    # A queue of its own: the session's worker consumes the real ones.
    def store(tenant_id: str, events: list[Any], version: int = 1) -> None:
        """Stands for the ingest actor."""

    actor = dramatiq.actor(
        actor_name=f"test_ingest_{t}", queue_name=f"test-{t}", broker=dramatiq_broker
    )(store)
    queue = EventQueue({"live": actor, "bulk": actor}, frame_db=broker_db)
    frame = queue.frame(t)
    assert frame is not None
    messages = [e.to_message() for e in events]
    bodies = [queue.encode_event(m) for m in messages[:3]] + [b""]
    try:
        found = await precheck(redis, tenant_id=t, events=events, frame=frame, bodies=bodies)
        assert found.seen == [True, False, False, False]
        # Two fresh events in one message, in the tenant's sub-queue of the lane, and the
        # tenant in the lane's rotation.
        entry = f"2:{frame.message_id}".encode()
        assert await broker.lrange(frame.sub_queue_key, 0, -1) == [entry]
        assert await broker.lrange(frame.rotation_key, 0, -1) == [t.encode()]
        encoded = await broker.hget(frame.messages_key, frame.message_id)
        assert isinstance(encoded, bytes)
        queued = dramatiq.Message.decode(encoded)
    finally:
        await broker.delete(
            frame.sub_queue_key, frame.messages_key, frame.rotation_key, frame.active_key
        )
        await broker.aclose()
    assert queued.options["redis_message_id"] == frame.message_id
    tenant_id, carried = queued.args
    messages[1]["flags"].append("unknown_product")
    assert tenant_id == t and carried == messages[1:3] and queued.kwargs == {"version": 1}
    assert carried[1]["flags"] == ["stale_timestamp"]
    # The script's SELECT did not move the caller's connection off the projections' database.
    assert await redis.hexists(keys.catalog_cards(t), "p")


def test_day_buckets_follow_each_moments_date_however_many_days_came_before() -> None:
    start = datetime(2019, 12, 31, 23, 59, 59, tzinfo=UTC)
    moments = [start + timedelta(hours=7 * n) for n in range(20_000)]  # past the cache's size
    for moment in moments + moments[:50]:
        assert day_of(moment) == moment.strftime("%Y%m%d")


def test_hour_buckets_follow_each_moments_date_and_hour_however_many_hours_came_before() -> None:
    start = datetime(2019, 12, 31, 22, 59, 59, tzinfo=UTC)
    moments = [start + timedelta(minutes=37 * n) for n in range(20_000)]  # past the day cache
    for moment in moments + moments[:50]:
        assert hour_of(moment) == moment.strftime("%Y%m%d%H")
