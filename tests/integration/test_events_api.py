"""Event ingestion over real HTTP with a real worker: validation, dedupe, counters, viewer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext, make_tenant
from redis.asyncio import Redis

from store import keys
from store.counters import read_counters
from store.settings import Settings


def _event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventType": "product_viewed",
        "userId": f"user-{uuid.uuid4().hex[:8]}",
        "productId": "sku-1",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    event.update(overrides)
    return event


async def _count(db: asyncpg.Pool, tenant_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id))


async def _wait_rows(db: asyncpg.Pool, tenant_id: str, expected: int, within: float = 15) -> int:
    deadline = asyncio.get_running_loop().time() + within
    count = await _count(db, tenant_id)
    while count < expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        count = await _count(db, tenant_id)
    return count


async def _post_after_revoking(
    http: httpx.AsyncClient, db: asyncpg.Pool, tenant: TenantContext, *, permission: str
) -> httpx.Response:
    """Post one event (which caches the write key in the api), revoke the tenant's key of
    `permission`, then post another event; the second answer."""
    first = await http.post("/api/v1/events", json=_event(), headers=tenant.write_headers)
    assert first.status_code == 202
    key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE tenant_id = $1 AND permission = $2",
        uuid.UUID(tenant.tenant_id),
        permission,
    )
    revoked = await http.delete(
        f"/api/v1/tenants/{tenant.tenant_id}/api-keys/{key_id}", headers=tenant.admin_headers
    )
    assert revoked.status_code == 204
    return await http.post("/api/v1/events", json=_event(), headers=tenant.write_headers)


async def _settled_count(db: asyncpg.Pool, tenant_id: str, expected: int) -> int:
    """The tenant's stored events once `expected` landed and a little more time passed (for
    one that should not land)."""
    await _wait_rows(db, tenant_id, expected)
    await asyncio.sleep(0.5)
    return await _count(db, tenant_id)


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An asyncio HTTP client for the api."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
def worker(worker_process: Process) -> Process:
    """The session worker (ingestion needs it)."""
    return worker_process


BAD_EVENTS = {
    "unknown event type": _event(eventType="product_liked"),
    "event type an object": _event(eventType={}, metadata=None),
    "event type a list": _event(eventType=["purchase"]),
    "missing userId": {k: v for k, v in _event().items() if k != "userId"},
    "missing productId": {k: v for k, v in _event().items() if k != "productId"},
    "purchase without price": _event(eventType="purchase", metadata={}),
    "purchase with a negative price": _event(eventType="purchase", metadata={"price": -1}),
    "purchase with a text price": _event(eventType="purchase", metadata={"price": "9.99"}),
    "click without placementId": _event(eventType="recommendation_clicked", metadata={}),
    "impression without placementId": _event(eventType="recommendation_impressed"),
    "257-char userId": _event(userId="u" * 257),
    "257-char productId": _event(productId="p" * 257),
    "empty userId": _event(userId=""),
    "5 KB metadata": _event(metadata={"blob": "x" * 5000}),
    "metadata not an object": _event(metadata=[1, 2]),
    "timestamp not ISO 8601": _event(timestamp="yesterday at noon"),
    "timestamp without zone": _event(timestamp="2026-01-01T10:00:00"),
    "timestamp in the future": _event(
        timestamp=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ),
    "129-char eventId": _event(eventId="e" * 129),
    "unknown field": _event(color="red"),
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
async def test_an_invalid_event_is_a_422_problem_and_stores_nothing(
    case: str, http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    response = await http.post(
        "/api/v1/events", json=BAD_EVENTS[case], headers=tenant.write_headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"]
    batch = await http.post(
        "/api/v1/events/batch", json={"events": [BAD_EVENTS[case]]}, headers=tenant.write_headers
    )
    assert batch.status_code == 202
    assert batch.json()["rejected"] == 1 and batch.json()["results"][0]["errors"]
    await asyncio.sleep(0.3)
    assert await _count(db, tenant.tenant_id) == 0


async def test_malformed_json_is_a_400_problem(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool
) -> None:
    for path in ("/api/v1/events", "/api/v1/events/batch"):
        response = await http.post(
            path,
            content=b'{"eventType": "product_viewed",',
            headers={**tenant.write_headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await _count(db, tenant.tenant_id) == 0


UNSTORABLE_BODIES = {
    "unpaired surrogate in sessionId": b'"sessionId": "s\\udfff"',
    "unpaired surrogate in userId": b'"userId": "\\ud800u"',
    "unpaired surrogate in a metadata value": b'"metadata": {"note": "\\udfff"}',
    "unpaired surrogate in a metadata key": b'"metadata": {"\\ud83d": 1}',
    "nesting deeper than Python's recursion": b'"metadata": {"deep": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE_BODIES))
async def test_json_that_is_not_storable_text_is_a_400_problem_and_stores_nothing(
    case: str, http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    event = (
        b'{"eventType": "product_viewed", "userId": "u1", "productId": "sku-1", '
        + UNSTORABLE_BODIES[case]
        + b"}"
    )
    headers = {**tenant.write_headers, "Content-Type": "application/json"}
    for path, body in (
        ("/api/v1/events", event),
        ("/api/v1/events/batch", b'{"events": [' + event + b"]}"),
        # Every route reads its body the same way.
        ("/api/v1/catalog", event),
    ):
        response = await http.post(path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    await asyncio.sleep(0.3)
    assert await _count(db, tenant.tenant_id) == 0


async def test_a_paired_surrogate_escape_is_ordinary_text(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    body = (
        b'{"eventType": "product_viewed", "userId": "u1", "productId": "sku-1", '
        b'"sessionId": "\\ud83d\\ude00"}'
    )
    headers = {**tenant.write_headers, "Content-Type": "application/json"}
    response = await http.post("/api/v1/events", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert await _wait_rows(db, tenant.tenant_id, 1) == 1
    stored = await db.fetchval(
        "SELECT session_id FROM events WHERE tenant_id = $1", tenant.tenant_id
    )
    assert stored == "\U0001f600"


async def test_a_batch_of_101_events_is_refused_whole(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    events = [_event(productId=f"sku-{i}") for i in range(101)]
    response = await http.post(
        "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    await asyncio.sleep(0.5)
    assert await _count(db, tenant.tenant_id) == 0


async def test_a_read_key_may_not_post_events(
    http: httpx.AsyncClient, tenant: TenantContext
) -> None:
    response = await http.post("/api/v1/events", json=_event(), headers=tenant.read_headers)
    assert response.status_code == 403


async def test_single_events_over_the_write_limit_are_429s_and_are_not_stored(
    http: httpx.AsyncClient, db: asyncpg.Pool, migrated: Settings, worker: Process
) -> None:
    shop = await make_tenant(db, migrated, config={"rateLimits": {"writesPerMinute": 4}})
    # The first request loads the key into the api's cache; the next ones are counted in the
    # Redis call that pre-checks and queues their events.
    first = await http.post("/api/v1/events", json=_event(), headers=shop.write_headers)
    assert first.status_code == 202 and first.headers["RateLimit-Remaining"] == "3"
    # Posted together, the six events are counted together and share pre-checks and queue
    # messages: only the three admitted ones may be queued.
    responses = await asyncio.gather(
        *(
            http.post("/api/v1/events", json=_event(userId=f"u{i}"), headers=shop.write_headers)
            for i in range(6)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [202, 202, 202, 429, 429, 429]
    remaining = sorted(r.headers["RateLimit-Remaining"] for r in responses if r.status_code == 202)
    assert remaining == ["0", "1", "2"]
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 429)
    # Over the limit, a bad body is refused for the limit, not for the body.
    bad = await http.post("/api/v1/events", json={"eventType": 1}, headers=shop.write_headers)
    assert bad.status_code == 429 and "Retry-After" in bad.headers
    assert await _wait_rows(db, shop.tenant_id, 4) == 4
    await asyncio.sleep(0.5)
    stored = await db.fetch("SELECT event_id FROM events WHERE tenant_id = $1", shop.tenant_id)
    accepted = {r.json()["eventId"] for r in [first, *responses] if r.status_code == 202}
    assert {row["event_id"] for row in stored} == accepted


async def test_a_bad_body_under_the_limit_is_a_422_and_is_counted(
    http: httpx.AsyncClient, db: asyncpg.Pool, migrated: Settings
) -> None:
    shop = await make_tenant(db, migrated, config={"rateLimits": {"writesPerMinute": 2}})
    first = await http.post("/api/v1/events", json={"eventType": 1}, headers=shop.write_headers)
    second = await http.post("/api/v1/events", json={"eventType": 1}, headers=shop.write_headers)
    third = await http.post("/api/v1/events", json=_event(), headers=shop.write_headers)
    assert [first.status_code, second.status_code, third.status_code] == [422, 422, 429]


async def test_a_single_event_posted_after_another_key_changed_is_queued_once(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    # The tenant's keys changed, so the cached write key is read again before its event is
    # queued; it is still valid.
    second = await _post_after_revoking(http, db, tenant, permission="read")
    assert second.status_code == 202 and "RateLimit-Remaining" in second.headers
    assert await _settled_count(db, tenant.tenant_id, 2) == 2


async def test_a_revoked_key_cannot_post_a_single_event_on_its_next_call(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    refused = await _post_after_revoking(http, db, tenant, permission="read_write")
    assert refused.status_code == 401
    assert await _settled_count(db, tenant.tenant_id, 1) == 1


async def test_an_accepted_event_lands_with_its_warnings_as_flags(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    response = await http.post(
        "/api/v1/events",
        json=_event(productId="not-in-catalog", timestamp=old),
        headers=tenant.write_headers,
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert set(body["warnings"]) == {"unknown_product", "stale_timestamp"}
    assert await _wait_rows(db, tenant.tenant_id, 1) == 1
    flags = await db.fetchval(
        "SELECT flags FROM events WHERE tenant_id = $1 AND event_id = $2",
        tenant.tenant_id,
        body["eventId"],
    )
    assert set(flags) == {"unknown_product", "stale_timestamp"}


async def test_metadata_is_stored_exactly_as_posted_in_single_events_and_batches(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    # Integers past 64 bits, decimals, non-ASCII text and slashes: JSON libraries differ on
    # each of them, and the queue message carries the metadata from the api to the worker.
    metadata = {
        "order": 2**70 + 1,
        "small": -(2**63),
        "ratio": 0.1,
        "note": 'café / 東京 \\ "quoted"',
        "nested": {"list": [1, 2.5, None, True], "empty": {}},
    }
    single = await http.post(
        "/api/v1/events", json=_event(metadata=metadata), headers=tenant.write_headers
    )
    batch = await http.post(
        "/api/v1/events/batch",
        json={"events": [_event(metadata=metadata), _event(metadata={"plain": 1})]},
        headers=tenant.write_headers,
    )
    assert single.status_code == 202 and batch.status_code == 202
    ids = [single.json()["eventId"]] + [r["eventId"] for r in batch.json()["results"]]
    assert await _wait_rows(db, tenant.tenant_id, 3) == 3
    stored = await db.fetch(
        "SELECT event_id, metadata FROM events WHERE tenant_id = $1", tenant.tenant_id
    )
    by_id = {row["event_id"]: row["metadata"] for row in stored}
    assert [by_id[i] for i in ids] == [metadata, metadata, {"plain": 1}]


async def test_a_product_in_the_catalog_gets_no_unknown_product_warning(
    http: httpx.AsyncClient, tenant: TenantContext, redis: Redis
) -> None:
    await redis.hset(keys.catalog_cards(tenant.tenant_id), "sku-known", '{"name": "Known"}')
    response = await http.post(
        "/api/v1/events", json=_event(productId="sku-known"), headers=tenant.write_headers
    )
    assert response.status_code == 202
    assert response.json()["warnings"] == []


async def test_the_same_event_posted_again_is_a_duplicate_and_stored_once(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    event = _event()
    first = await http.post("/api/v1/events", json=event, headers=tenant.write_headers)
    assert first.status_code == 202
    assert await _wait_rows(db, tenant.tenant_id, 1) == 1
    await asyncio.sleep(0.3)  # the worker marks it seen right after the insert
    again = await http.post("/api/v1/events", json=event, headers=tenant.write_headers)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "eventId": first.json()["eventId"]}
    await asyncio.sleep(0.3)
    assert await _count(db, tenant.tenant_id) == 1


async def test_a_client_event_id_dedupes_retries_without_a_timestamp(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    event = _event(eventId="order-42-view")
    del event["timestamp"]
    first = await http.post("/api/v1/events", json=event, headers=tenant.write_headers)
    assert first.status_code == 202 and first.json()["eventId"] == "order-42-view"
    assert await _wait_rows(db, tenant.tenant_id, 1) == 1
    await asyncio.sleep(0.3)
    again = await http.post("/api/v1/events", json=event, headers=tenant.write_headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    await asyncio.sleep(0.3)
    assert await _count(db, tenant.tenant_id) == 1


async def test_the_same_batch_posted_twice_stores_and_counts_each_event_once(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, worker: Process
) -> None:
    now = datetime.now(UTC)
    events = [
        _event(
            userId="u1", productId=f"sku-{i}", timestamp=(now - timedelta(seconds=i)).isoformat()
        )
        for i in range(30)
    ]
    events.append(
        _event(
            eventType="recommendation_impressed",
            userId="u1",
            productId="sku-x",
            metadata={"placementId": "home", "strategy": "trending"},
        )
    )
    first = await http.post(
        "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
    )
    # Posted again at once, before the worker has run: the database dedupes.
    second = await http.post(
        "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["accepted"] == 31
    assert await _wait_rows(db, tenant.tenant_id, 31) == 31
    await asyncio.sleep(0.5)
    third = await http.post(
        "/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers
    )
    assert third.json()["duplicates"] == 31
    await asyncio.sleep(0.5)
    assert await _count(db, tenant.tenant_id) == 31
    counters = await read_counters(redis, tenant_id=tenant.tenant_id, day=now.strftime("%Y%m%d"))
    assert counters["events"] == 31
    assert counters["impressions"] == 1
    assert counters["impressions|home|trending"] == 1
    assert counters["active_users"] == 1


async def test_an_event_repeated_inside_one_batch_is_reported_duplicate(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    event = _event()
    response = await http.post(
        "/api/v1/events/batch", json={"events": [event, event]}, headers=tenant.write_headers
    )
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate"]
    assert await _wait_rows(db, tenant.tenant_id, 1) == 1


async def test_ingestion_feeds_history_purchased_set_and_trending(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, redis: Redis, worker: Process
) -> None:
    now = datetime.now(UTC)
    events = [
        _event(userId="shopper", productId="sku-a", timestamp=now.isoformat()),
        _event(
            eventType="purchase",
            userId="shopper",
            productId="sku-b",
            metadata={"price": 20.5},
            timestamp=(now - timedelta(seconds=5)).isoformat(),
        ),
    ]
    await http.post("/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers)
    assert await _wait_rows(db, tenant.tenant_id, 2) == 2
    await asyncio.sleep(0.3)
    from store.history import purchased, recent_history, trending_scores

    history = await recent_history(redis, tenant_id=tenant.tenant_id, user_id="shopper")
    assert [(p, t) for p, t, _ in history] == [("sku-a", "product_viewed"), ("sku-b", "purchase")]
    assert await purchased(redis, tenant_id=tenant.tenant_id, user_id="shopper") == {"sku-b"}
    # The purchase, 5 s older, falls in the previous hour when the test runs just past one.
    hours = sorted({(now - timedelta(seconds=5)).strftime("%Y%m%d%H"), now.strftime("%Y%m%d%H")})
    scores = await trending_scores(redis, tenant_id=tenant.tenant_id, hours=hours)
    assert dict(scores) == {"sku-b": 5.0, "sku-a": 1.0}


async def test_the_event_viewer_pages_newest_first_with_filters(
    http: httpx.AsyncClient, tenant: TenantContext, db: asyncpg.Pool, worker: Process
) -> None:
    now = datetime.now(UTC)
    events = [
        _event(
            userId="viewer",
            productId=f"sku-{i}",
            timestamp=(now - timedelta(minutes=i)).isoformat(),
        )
        for i in range(5)
    ]
    events.append(_event(userId="someone-else", productId="sku-9"))
    await http.post("/api/v1/events/batch", json={"events": events}, headers=tenant.write_headers)
    assert await _wait_rows(db, tenant.tenant_id, 6) == 6
    url = f"/api/v1/tenants/{tenant.tenant_id}/events"
    seen: list[str] = []
    cursor = None
    while True:
        params = {"userId": "viewer", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await http.get(url, params=params, headers=tenant.admin_headers)
        assert page.status_code == 200, page.text
        seen += [item["productId"] for item in page.json()["data"]]
        assert page.json()["items"] == page.json()["data"]  # the older name, kept
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"sku-{i}" for i in range(5)]
    ranged = await http.get(
        url,
        params={
            "from": (now - timedelta(minutes=2, seconds=30)).isoformat(),
            "to": (now - timedelta(seconds=30)).isoformat(),
            "eventType": "product_viewed",
        },
        headers=tenant.admin_headers,
    )
    assert [item["productId"] for item in ranged.json()["data"]] == ["sku-1", "sku-2"]
    bad = await http.get(url, params={"cursor": "nonsense"}, headers=tenant.admin_headers)
    assert bad.status_code == 422


async def test_the_event_viewer_hides_other_tenants_events(
    http: httpx.AsyncClient, tenant: TenantContext, other_tenant: TenantContext
) -> None:
    response = await http.get(
        f"/api/v1/tenants/{other_tenant.tenant_id}/events", headers=tenant.admin_headers
    )
    assert response.status_code == 404
    unauthenticated = await http.get(f"/api/v1/tenants/{tenant.tenant_id}/events")
    assert unauthenticated.status_code == 401


async def test_the_events_routes_are_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/api/v1/openapi.json")).json()["paths"]
    assert "post" in paths["/api/v1/events"]
    assert "post" in paths["/api/v1/events/batch"]
    assert "get" in paths["/api/v1/tenants/{tenant_id}/events"]


class _RecordingQueue:
    """An event queue on another server than the gate (no frame): records the users of each
    message it is sent."""

    def __init__(self, sent: list[list[str]]) -> None:
        self.sent = sent
        self.lanes: list[str] = []

    def frame(self, tenant_id: str, *, lane: str = "live") -> None:
        return None

    def encode_event(self, event: Any) -> bytes:
        raise AssertionError("nothing is encoded for a frame when there is none")

    async def send(self, message: Any, *, lane: str = "live") -> None:
        self.sent.append([e["user"] for e in message.events])
        self.lanes.append(lane)


def _two_call_delivery(redis: Redis, sent: list[list[str]]) -> Any:
    """A delivery that pre-checks in Redis, then records the users of each message it queues."""
    from api.ingestion import QueueDelivery
    from store.ingest_gate import ADMITTED_SCREEN
    from store.ratelimit import RateLimiter

    limiter = RateLimiter(redis, follow_up=ADMITTED_SCREEN)
    return QueueDelivery(redis, limiter=limiter, queue=_RecordingQueue(sent))  # type: ignore[arg-type]


async def test_single_events_and_small_batches_go_to_the_live_lane_larger_batches_to_bulk(
    redis: Redis, tenant: TenantContext
) -> None:
    from api.ingestion import IngestEnqueuer
    from domain.events import parse_event
    from store.event_queue import LIVE_BATCH_MAX_EVENTS

    sent: list[list[str]] = []
    delivery = _two_call_delivery(redis, sent)
    enqueuer = IngestEnqueuer(delivery)
    now = datetime.now(UTC)

    def events(run: str, count: int) -> list[Any]:
        return [
            parse_event(_event(userId=f"{run}{i}"), tenant_id=tenant.tenant_id, now=now)
            for i in range(count)
        ]

    await enqueuer.enqueue_one(tenant.tenant_id, events("one", 1)[0])
    await enqueuer.enqueue_batch(tenant.tenant_id, events("small", LIVE_BATCH_MAX_EVENTS))
    await enqueuer.enqueue_batch(tenant.tenant_id, events("large", LIVE_BATCH_MAX_EVENTS + 1))
    assert delivery._queue.lanes == ["live", "live", "bulk"]
    assert [len(users) for users in sent] == [1, LIVE_BATCH_MAX_EVENTS, LIVE_BATCH_MAX_EVENTS + 1]


async def test_single_events_of_one_window_share_one_message_and_repeats_are_duplicates(
    redis: Redis, tenant: TenantContext
) -> None:
    from api.ingestion import IngestEnqueuer
    from domain.events import parse_event

    sent: list[list[str]] = []
    enqueuer = IngestEnqueuer(_two_call_delivery(redis, sent), window=0.05)
    now = datetime.now(UTC)
    raw = [_event(userId="same"), _event(userId="same"), _event(userId="other")]
    raw[1]["timestamp"] = raw[0]["timestamp"]
    events = [parse_event(r, tenant_id=tenant.tenant_id, now=now) for r in raw]
    answers = await asyncio.gather(*(enqueuer.enqueue_one(tenant.tenant_id, e) for e in events))
    assert [answer.duplicate for answer in answers] == [False, True, False]
    assert sent == [["same", "other"]]
    assert answers[0].message["flags"] == ["unknown_product"]


async def test_single_events_arriving_during_a_pre_check_go_together_in_the_next_message(
    redis: Redis, tenant: TenantContext
) -> None:
    from api.ingestion import IngestEnqueuer
    from domain.events import parse_event

    screened: list[list[str]] = []
    sent: list[list[str]] = []
    release, screening = asyncio.Event(), asyncio.Event()
    delivery = _two_call_delivery(redis, sent)
    deliver = delivery.deliver

    async def slow_deliver(tenant_id: str, events: list[Any], *rest: Any) -> Any:
        screened.append([e.user_id for e in events])
        screening.set()
        await release.wait()
        return await deliver(tenant_id, events, *rest)

    delivery.deliver = slow_deliver
    enqueuer = IngestEnqueuer(delivery)
    now = datetime.now(UTC)
    events = [
        parse_event(_event(userId=f"u{i}"), tenant_id=tenant.tenant_id, now=now) for i in range(4)
    ]
    first = asyncio.create_task(enqueuer.enqueue_one(tenant.tenant_id, events[0]))
    # Nothing else is on its way: the first event goes at once.
    await asyncio.wait_for(screening.wait(), timeout=5)
    rest = [asyncio.create_task(enqueuer.enqueue_one(tenant.tenant_id, e)) for e in events[1:]]
    await asyncio.sleep(0.05)
    assert screened == [["u0"]] and sent == [] and not first.done()
    release.set()
    answers = await asyncio.gather(first, *rest)
    assert screened == [["u0"], ["u1", "u2", "u3"]]
    assert sent == [["u0"], ["u1", "u2", "u3"]]
    assert [answer.duplicate for answer in answers] == [False] * 4
