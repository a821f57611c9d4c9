"""The ingest and reconciliation actors called directly on the real PostgreSQL and Redis:
redelivery, crash between commit and projections, attribution, partitions."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from conftest import TenantContext
from redis.asyncio import Redis

from domain.events import parse_event
from store import keys
from store.answers import TRENDING_REWRITE_SECONDS, AnswerProjector
from store.counters import read_counters
from store.events import ingest_and_project, insert_events, list_events
from workers import runtime
from workers.actors.attribution import reconcile_revenue_attributions
from workers.actors.ingest import (
    IngestGroups,
    MalformedMessage,
    ReaderProjections,
    ingest_events,
)

# Dramatiq wraps async actors to run on its worker loop; the tests await the function itself.
ingest: Any = getattr(ingest_events.fn, "__wrapped__")  # noqa: B009
reconcile: Any = getattr(reconcile_revenue_attributions.fn, "__wrapped__")  # noqa: B009


@pytest.fixture
def actors(db: asyncpg.Pool, redis: Redis) -> Iterator[None]:
    """The actors' per-process pool and Redis client pointed at the test servers."""
    saved = runtime._pool, runtime._redis
    runtime._pool, runtime._redis = db, redis
    yield
    runtime._pool, runtime._redis = saved


def _message(tenant_id: str, **fields: Any) -> Any:
    """An event in queue message form (Any: the tests also send malformed ones)."""
    raw = {"eventType": "product_viewed", "userId": "u1", "productId": "sku-1", **fields}
    return parse_event(raw, tenant_id=tenant_id, now=datetime.now(UTC)).to_message()


def _now() -> datetime:
    """Now, or a second before today began while less than an hour of it has passed: the
    events a test dates up to an hour back then fall on the day whose counters it reads."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(seconds=1) if now - midnight < timedelta(hours=1) else now


def _at(moment: datetime) -> str:
    return moment.isoformat()


async def _counters(redis: Redis, tenant_id: str, moment: datetime) -> dict[str, float]:
    return await read_counters(redis, tenant_id=tenant_id, day=moment.strftime("%Y%m%d"))


async def _attributions(db: asyncpg.Pool, tenant_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT click_event_id, purchase_event_id, revenue::float8 AS revenue, placement_id"
        " FROM revenue_attributions WHERE tenant_id = $1",
        tenant_id,
    )


class _RecordingStore:
    """The store of an IngestGroups under test: records each group's size, waits for `release`
    (set unless held), then stores the group for real."""

    def __init__(self, db: asyncpg.Pool, redis: Redis, *, held: bool) -> None:
        self.sizes: list[int] = []
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self._db, self._redis = db, redis

    async def __call__(self, tenant_id: str, events: list[Any]) -> None:
        self.sizes.append(len(events))
        await self.release.wait()
        await ingest_and_project(self._db, self._redis, tenant_id=tenant_id, events=events)


async def test_the_same_message_delivered_twice_stores_counts_and_attributes_once(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    click = _message(
        t,
        eventType="recommendation_clicked",
        timestamp=_at(now - timedelta(minutes=10)),
        metadata={"placementId": "pdp", "strategy": "collaborative"},
    )
    purchase = _message(
        t, eventType="purchase", timestamp=_at(now - timedelta(minutes=1)), metadata={"price": 42}
    )
    events = [click, purchase]
    await ingest(t, events)
    await ingest(t, events)
    assert await ingest_and_project(db, redis, tenant_id=t, events=events) == 0
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", t) == 2
    counters = await _counters(redis, t, now)
    assert counters["events"] == 2 and counters["clicks"] == 1 and counters["conversions"] == 1
    assert counters["revenue"] == 42 and counters["attributed_revenue"] == 42
    assert counters["conversions|pdp|collaborative"] == 1
    found = await _attributions(db, t)
    assert [(a["click_event_id"], a["purchase_event_id"]) for a in found] == [
        (click["id"], purchase["id"])
    ]


async def test_a_crash_after_the_commit_is_healed_by_the_redelivery(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    events = [_message(t, productId=f"sku-{i}", timestamp=_at(now)) for i in range(3)]
    # The worker died right after the commit: rows exist, projections were never touched.
    await insert_events(db, tenant_id=t, events=events)
    assert "events" not in await _counters(redis, t, now)
    await ingest(t, events)
    await ingest(t, events)
    assert (await _counters(redis, t, now))["events"] == 3


async def test_a_client_event_id_is_stored_once_even_with_another_timestamp(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    first = _message(t, eventId="retry-1", timestamp=_at(now - timedelta(seconds=5)))
    retry = _message(t, eventId="retry-1", timestamp=_at(now))
    await ingest(t, [first])
    await ingest(t, [retry])
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", t) == 1
    assert (await _counters(redis, t, now))["events"] == 1


async def test_messages_queued_with_every_field_spelled_out_are_stored_like_slim_ones(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    # Earlier releases queued every optional field, null or empty: such messages may still
    # wait in the queue or the dead-letter queue when a new worker starts.
    t = tenant.tenant_id
    now = _now()
    slim = _message(t, userId="slim", timestamp=_at(now))
    assert set(slim) == {"id", "type", "user", "product", "ts", "flags"}
    spelled = {
        "client": False,
        "session": None,
        "meta": {},
        "price": None,
        "placement": None,
        "rec": None,
        **_message(t, userId="spelled", timestamp=_at(now)),
    }
    await ingest(t, [slim])
    await ingest(t, [spelled])
    stored = await db.fetch(
        """SELECT user_id, session_id, metadata::text, price, placement_id, recommendation_id,
                  flags FROM events WHERE tenant_id = $1 ORDER BY user_id""",
        t,
    )
    assert [r["user_id"] for r in stored] == ["slim", "spelled"]
    assert [tuple(r)[1:] for r in stored] == [(None, "{}", None, None, None, [])] * 2
    assert (await _counters(redis, t, now))["events"] == 2


async def test_a_malformed_message_is_refused_without_retries(actors: None) -> None:
    with pytest.raises(MalformedMessage):
        await ingest(str(uuid.uuid4()), [{"id": 1}])


@pytest.mark.parametrize(
    ("click_minutes_before", "attributed"), [(29, True), (31, False)], ids=["inside", "outside"]
)
async def test_a_purchase_is_attributed_only_within_30_minutes_of_the_click(
    click_minutes_before: int,
    attributed: bool,
    actors: None,
    tenant: TenantContext,
    db: asyncpg.Pool,
) -> None:
    t = tenant.tenant_id
    now = _now()
    click = _message(
        t,
        eventType="recommendation_clicked",
        timestamp=_at(now - timedelta(minutes=click_minutes_before)),
        metadata={"placementId": "home"},
    )
    purchase = _message(t, eventType="purchase", timestamp=_at(now), metadata={"price": 10})
    await ingest(t, [click])
    await ingest(t, [purchase])
    assert len(await _attributions(db, t)) == (1 if attributed else 0)


async def test_two_clicks_and_one_purchase_attribute_to_the_last_click_only(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    clicks = [
        _message(
            t,
            eventType="recommendation_clicked",
            timestamp=_at(now - timedelta(minutes=minutes)),
            metadata={"placementId": placement},
        )
        for minutes, placement in ((20, "home"), (5, "cart"))
    ]
    purchase = _message(t, eventType="purchase", timestamp=_at(now), metadata={"price": 7.5})
    await ingest(t, clicks)
    await ingest(t, [purchase])
    found = await _attributions(db, t)
    assert [(a["click_event_id"], a["placement_id"]) for a in found] == [(clicks[1]["id"], "cart")]
    assert (await _counters(redis, t, now))["attributed_revenue"] == 7.5


async def test_a_purchase_before_its_click_arrives_is_attributed_by_reconciliation(
    actors: None, tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    purchase = _message(t, eventType="purchase", timestamp=_at(now), metadata={"price": 99})
    late_click = _message(
        t,
        eventType="recommendation_clicked",
        timestamp=_at(now - timedelta(minutes=3)),
        metadata={"placementId": "home"},
    )
    await ingest(t, [purchase])
    await ingest(t, [late_click])
    assert await _attributions(db, t) == []
    assert await reconcile() >= 1
    assert await reconcile() == 0  # nothing left to do, nothing twice
    found = await _attributions(db, t)
    assert [(a["click_event_id"], a["revenue"]) for a in found] == [(late_click["id"], 99.0)]
    assert (await _counters(redis, t, now))["attributed_revenue"] == 99


async def test_events_outside_the_partitions_land_in_the_default_and_are_found(
    actors: None, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    t = tenant.tenant_id
    ancient = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    event = _message(t, timestamp=_at(ancient))
    await ingest(t, [event])
    partition = await db.fetchval(
        "SELECT tableoid::regclass::text FROM events WHERE tenant_id = $1", t
    )
    assert partition == "events_default"
    rows = await list_events(db, tenant_id=t, since=ancient - timedelta(days=1))
    assert [r["event_id"] for r in rows] == [event["id"]]


async def test_the_partition_job_creates_months_ahead_idempotently(
    actors: None, db: asyncpg.Pool
) -> None:
    from workers.actors.maintenance import create_event_partitions

    partitions: Any = getattr(create_event_partitions.fn, "__wrapped__")  # noqa: B009

    await partitions(months_ahead=5)
    assert await partitions(months_ahead=5) == 0
    ahead = (datetime.now(UTC).replace(day=1) + timedelta(days=5 * 31)).strftime("events_%Y_%m")
    assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", ahead)


async def test_the_seen_marker_key_contains_the_tenant(tenant: TenantContext) -> None:
    assert tenant.tenant_id in keys.events_seen(tenant.tenant_id, "20260101")


async def test_messages_waiting_together_are_stored_in_one_go_and_a_poison_one_fails_alone(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    store = _RecordingStore(db, redis, held=True)
    groups = IngestGroups(store, in_flight=1, linger=0)
    first = [_message(t, productId="sku-a", timestamp=_at(now))]
    second = [_message(t, productId=f"sku-{i}", timestamp=_at(now)) for i in range(3)]
    poison: list[Any] = [{**_message(t, productId="sku-x", timestamp=_at(now)), "ts": "not a time"}]
    submitted = [asyncio.create_task(groups.submit(t, m)) for m in (first, second, poison)]
    await asyncio.sleep(0.05)
    store.release.set()
    outcomes = await asyncio.gather(*submitted, return_exceptions=True)
    assert outcomes[:2] == [None, None] and isinstance(outcomes[2], ValueError)
    # The first alone, the two that waited together, then each of those two alone.
    assert store.sizes == [1, 4, 3, 1]
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", t) == 4
    assert (await _counters(redis, t, now))["events"] == 4


async def test_two_events_with_one_client_event_id_stored_together_make_one_row(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    first = _message(t, eventId="retry-2", timestamp=_at(now - timedelta(seconds=5)))
    retry = _message(t, eventId="retry-2", timestamp=_at(now))
    assert await ingest_and_project(db, redis, tenant_id=t, events=[first, retry]) == 1
    rows = await db.fetch("SELECT occurred_at FROM events WHERE tenant_id = $1", t)
    assert [r["occurred_at"] for r in rows] == [now - timedelta(seconds=5)]
    assert (await _counters(redis, t, now))["events"] == 1


async def test_a_second_group_starts_beside_a_running_one_only_for_a_real_backlog(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    store = _RecordingStore(db, redis, held=True)

    def message(first: int, size: int) -> list[Any]:
        numbers = range(first, first + size)
        return [_message(t, productId=f"sku-{n}", timestamp=_at(now)) for n in numbers]

    groups = IngestGroups(store, in_flight=2, overlap_min_events=100, linger=0)
    running = [asyncio.create_task(groups.submit(t, message(0, 5)))]
    await asyncio.sleep(0.01)
    # A trickle waits for the running group...
    running += [asyncio.create_task(groups.submit(t, message(5 + 5 * i, 5))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert store.sizes == [5]
    # ...and a backlog of 100 events or more starts a second group beside it.
    running.append(asyncio.create_task(groups.submit(t, message(100, 90))))
    await asyncio.sleep(0.01)
    assert store.sizes == [5, 105]
    store.release.set()
    await asyncio.gather(*running)
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", t) == 110


async def test_a_message_to_an_idle_worker_waits_briefly_for_others_to_share_its_group(
    tenant: TenantContext, db: asyncpg.Pool, redis: Redis
) -> None:
    t = tenant.tenant_id
    now = _now()
    store = _RecordingStore(db, redis, held=False)

    groups = IngestGroups(store, linger=0.05)
    first = asyncio.create_task(groups.submit(t, [_message(t, productId="a", timestamp=_at(now))]))
    await asyncio.sleep(0.01)
    assert store.sizes == []  # lingering
    second = asyncio.create_task(groups.submit(t, [_message(t, productId="b", timestamp=_at(now))]))
    await asyncio.gather(first, second)
    assert store.sizes == [2]
    # A backlog does not linger, however long the wait would be.
    big = [_message(t, productId=f"sku-{n}", timestamp=_at(now)) for n in range(100)]
    storing = asyncio.create_task(IngestGroups(store, linger=60).submit(t, big))
    await asyncio.sleep(0.01)
    assert store.sizes == [2, 100]
    await storing


async def test_a_readers_answers_are_rewritten_at_once_while_the_trending_list_waits_its_turn(
    actors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, float, tuple[str, ...]]] = []
    # A tenant of its own: earlier tests' projections may still be finishing on this loop.
    shop = f"shop-{uuid.uuid4()}"

    async def reproject(self: Any, *, tenant_id: str, user_ids: list[str]) -> int:
        if tenant_id == shop:
            calls.append(("users", time.monotonic(), tuple(user_ids)))
        return len(user_ids)

    async def trending(self: Any, *, tenant_id: str) -> int:
        if tenant_id == shop:
            calls.append(("trending", time.monotonic(), ()))
        return 0

    monkeypatch.setattr(AnswerProjector, "reproject_readers", reproject)
    monkeypatch.setattr(AnswerProjector, "project_trending", trending)
    projections = ReaderProjections()
    for user in ("first", "second", "third"):
        touched = time.monotonic()
        projections.touch(shop, {user})
        await asyncio.sleep(0.05)
        # Each shopper's answers follow their events at once, not after the trending rewrite.
        assert ("users", (user,)) in {(kind, users) for kind, at, users in calls if at >= touched}
    rewrites = [at for kind, at, _ in calls if kind == "trending"]
    assert len(rewrites) == 1  # the events after the first rewrite wait for the next one
    await asyncio.sleep(TRENDING_REWRITE_SECONDS + 0.1)
    rewrites = [at for kind, at, _ in calls if kind == "trending"]
    assert len(rewrites) == 2 and rewrites[1] - rewrites[0] >= TRENDING_REWRITE_SECONDS
