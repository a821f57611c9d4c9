"""Fair ingestion: live and bulk lanes, tenants served in turn inside a lane, each tenant's
backlog visible, through the real broker, api and workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import dramatiq
import httpx
import pytest
from conftest import Services, make_tenant
from redis import Redis as SyncRedis
from support.ingest_runs import FAST_WRITES, run_settings, start, start_api, stop

from domain.events import parse_event
from store.event_queue import QUANTUM_EVENTS, lane_backlogs
from store.settings import Settings
from workers.broker import LaneBroker, build_broker

# The flooding tenant's backlog in messages of QUANTUM_EVENTS events: far more than a worker
# stores in the seconds the test takes.
GROUPS = 500


@pytest.fixture
def lane_broker(migrated: Settings) -> Iterator[tuple[LaneBroker, str]]:
    """A lane broker on the test Redis with a lane of its own (the session's worker consumes
    the real ones), and that lane's name."""
    lane = f"lane-{uuid.uuid4().hex[:10]}"
    broker = build_broker(migrated.broker_url)
    broker.lanes = frozenset({lane})
    yield broker, lane
    client = broker.client
    for key in client.scan_iter(match=f"dramatiq:{lane}*"):
        client.delete(key)
    broker.close()


def _message(lane: str, tenant_id: str, size: int) -> dramatiq.Message[Any]:
    events = [{"id": f"{tenant_id}-{uuid.uuid4().hex}"} for _ in range(size)]
    return dramatiq.Message(
        queue_name=lane, actor_name="ingest_events", args=(tenant_id, events), kwargs={}, options={}
    )


def _fetch(broker: LaneBroker, lane: str, count: int) -> list[str]:
    """The tenants of the next `count` messages a consumer of the lane takes (and acks)."""
    consumer = broker.consume(lane, prefetch=count, timeout=100)
    tenants: list[str] = []
    try:
        while len(tenants) < count:
            message = next(consumer)
            if message is None:
                break
            tenants.append(message.args[0])
            consumer.ack(message)
    finally:
        consumer.close()
    return tenants


def test_a_tenant_with_a_deep_backlog_gets_its_share_and_the_others_are_served_in_turn(
    lane_broker: tuple[LaneBroker, str],
) -> None:
    broker, lane = lane_broker
    for _ in range(40):
        broker.enqueue(_message(lane, "tenant-a", QUANTUM_EVENTS))
    for _ in range(3):
        broker.enqueue(_message(lane, "tenant-b", 1))
    backlog = {(b.tenant_id, b.messages, b.events) for b in lane_backlogs(broker.client, (lane,))}
    assert backlog == {("tenant-a", 40, 40 * QUANTUM_EVENTS), ("tenant-b", 3, 3)}
    # A's turn takes one quantum's worth (one message of 100 events), B's all of its three.
    first = _fetch(broker, lane, 8)
    assert first[:4] == ["tenant-a", "tenant-b", "tenant-b", "tenant-b"]
    # B waits no more: A, alone now, gets everything there is.
    assert _fetch(broker, lane, 39) == ["tenant-a"] * (40 - first.count("tenant-a"))
    assert lane_backlogs(broker.client, (lane,)) == []


def test_a_message_larger_than_the_quantum_goes_after_turns_have_added_up_to_it(
    lane_broker: tuple[LaneBroker, str],
) -> None:
    broker, lane = lane_broker
    broker.enqueue(_message(lane, "big", 3 * QUANTUM_EVENTS))
    broker.enqueue(_message(lane, "big", 1))
    for _ in range(4):
        broker.enqueue(_message(lane, "small", QUANTUM_EVENTS))
    # The big message waits for three turns' worth of deficit while the other tenant is served
    # in each of them; the big tenant's next, small message goes at its next turn.
    assert _fetch(broker, lane, 6) == ["small", "small", "big", "small", "big", "small"]


def test_a_message_requeued_by_dramatiq_is_served_before_the_lane(
    lane_broker: tuple[LaneBroker, str],
) -> None:
    broker, lane = lane_broker
    broker.enqueue(_message(lane, "tenant-a", 1))
    consumer = broker.consume(lane, prefetch=1, timeout=100)
    taken = next(consumer)
    assert taken is not None
    consumer.requeue([taken])  # a worker shutting down gives back what it held
    consumer.close()
    broker.enqueue(_message(lane, "tenant-b", 1))
    assert _fetch(broker, lane, 2) == ["tenant-a", "tenant-b"]


async def test_single_events_land_within_two_seconds_while_another_tenants_backlog_is_deep(
    migrated: Settings, services: Services, db: asyncpg.Pool
) -> None:
    settings = run_settings(migrated, services, broker_db=14, redis_db=15)
    for url in (settings.broker_url, settings.redis_url):
        SyncRedis.from_url(url).flushdb()
    flooding = await make_tenant(db, settings, config=FAST_WRITES)
    quiet = await make_tenant(db, settings, config=FAST_WRITES)
    api = start_api(settings, services.workdir / "fair-api.log")
    worker_args = ["worker", "--queues", "ingest,ingest_bulk", "--processes", "1", "--threads", "2"]
    worker = start(settings, worker_args, services.workdir / "fair-worker.log")
    broker = build_broker(settings.broker_url)
    try:
        # The flooding tenant's backlog in the live lane, queued as the api queues single
        # events (one message per coalesced group): far more than the worker stores in the
        # time the test takes.
        from workers.actors.ingest import ingest_events

        now = datetime.now(UTC)
        for group in range(GROUPS):
            events = [
                parse_event(
                    {"eventType": "product_viewed", "userId": f"a{group}", "productId": f"p{n}"},
                    tenant_id=flooding.tenant_id,
                    now=now,
                ).to_message()
                for n in range(QUANTUM_EVENTS)
            ]
            broker.enqueue(
                ingest_events.message_with_options(
                    args=(flooding.tenant_id, events), kwargs={"version": 1}
                )
            )
        base = f"http://127.0.0.1:{settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            delays = []
            for number in range(5):
                sent = time.monotonic()
                response = await http.post(
                    "/api/v1/events",
                    json={
                        "eventType": "purchase",
                        "userId": f"b{number}",
                        "productId": "p1",
                        "metadata": {"price": 10},
                    },
                    headers=quiet.write_headers,
                )
                assert response.status_code == 202, response.text
                event_id = response.json()["eventId"]
                while not await db.fetchval(
                    "SELECT true FROM events WHERE tenant_id = $1 AND event_id = $2",
                    quiet.tenant_id,
                    event_id,
                ):
                    assert time.monotonic() - sent < 2, "a quiet tenant's event waited 2 s"
                    await asyncio.sleep(0.02)
                delays.append(time.monotonic() - sent)
            # The operators' view: the flooding tenant still has a deep backlog, per lane.
            waiting = {
                (b.queue, b.tenant_id): b
                for b in lane_backlogs(SyncRedis.from_url(settings.broker_url))
            }
            await db.execute(
                "UPDATE admins SET is_operator = true WHERE id = $1", flooding.admin_id
            )
            console = await http.get("/api/v1/ops/queues", headers=flooding.admin_headers)
        stored = await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1", flooding.tenant_id
        )
        assert stored < (GROUPS - 50) * QUANTUM_EVENTS, "the backlog was never deep"
        backlog = waiting[("ingest", flooding.tenant_id)]
        assert backlog.messages > 50 and backlog.events == backlog.messages * QUANTUM_EVENTS
        assert backlog.oldest_seconds > 0
        assert ("ingest", quiet.tenant_id) not in waiting
        assert console.status_code == 200, console.text
        lanes = {row["queue"]: row for row in console.json()["data"]}
        shown = {row["tenantId"]: row for row in lanes["ingest"]["tenants"]}
        assert shown[flooding.tenant_id]["messages"] > 50
        assert shown[flooding.tenant_id]["oldestSeconds"] > 0
        assert lanes["ingest"]["ready"] >= shown[flooding.tenant_id]["messages"]
        assert lanes["ingest_bulk"]["tenants"] == []
        assert max(delays) < 2
    finally:
        broker.close()
        stop(worker)
        stop(api)
