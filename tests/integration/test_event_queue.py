"""The ingest queue in the broker: messages sent through Dramatiq's own API carry the versioned
event message, and the layout the ingest gate's script writes is the installed Dramatiq's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from redis.asyncio import Redis

from domain.event_message import EVENT_MESSAGE_VERSION, EventMessage, MalformedMessage
from store.event_queue import DRAMATIQ_LAYOUT_VERSION, EventQueue
from store.ingest_gate import precheck
from store.settings import Settings
from workers.broker import build_broker


@pytest.fixture
def test_actor(migrated: Settings) -> Iterator[dramatiq.Actor[Any, Any]]:
    """An actor on a queue of its own (the session's worker consumes the real ones), bound to
    a broker on the test servers."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    broker = build_broker(migrated.broker_url)
    broker.lanes = frozenset({name})  # served as the ingest lanes are

    def store(tenant_id: str, events: list[Any], version: int = 1) -> None:
        """Stands for the ingest actor."""

    actor = dramatiq.actor(actor_name=name, queue_name=name, broker=broker)(store)
    yield actor
    broker.flush(name)
    broker.close()


def _fetch_with_dramatiq(actor: dramatiq.Actor[Any, Any]) -> list[dramatiq.MessageProxy]:
    """What Dramatiq's own consumer (on the lane broker) fetches from the actor's queue, and
    acks."""
    consumer = actor.broker.consume(actor.queue_name, prefetch=10, timeout=200)
    fetched = []
    try:
        for message in consumer:
            if message is None:
                break
            fetched.append(message)
            consumer.ack(message)
    finally:
        consumer.close()
    return fetched


def test_the_gate_writes_the_layout_of_the_installed_dramatiq() -> None:
    # When this fails, check the new version's dispatch.lua "enqueue" and "fetch" before
    # changing the version named in store.event_queue.
    assert dramatiq.__version__ == DRAMATIQ_LAYOUT_VERSION


async def test_a_message_sent_through_dramatiq_carries_the_versioned_event_message(
    test_actor: dramatiq.Actor[Any, Any],
) -> None:
    queue = EventQueue({"live": test_actor, "bulk": test_actor}, frame_db=None)
    events: Any = [{"id": "e1", "type": "purchase", "user": "u", "product": "p", "ts": "t"}]
    await queue.send(EventMessage("tenant-1", events))
    fetched = await asyncio.to_thread(_fetch_with_dramatiq, test_actor)
    assert [(m.args, m.kwargs) for m in fetched] == [
        (("tenant-1", events), {"version": EVENT_MESSAGE_VERSION})
    ]
    read = EventMessage.read(*fetched[0].args, **fetched[0].kwargs)
    assert read == EventMessage("tenant-1", events)


async def test_a_message_the_gate_queued_is_fetched_and_acked_by_dramatiqs_own_consumer(
    test_actor: dramatiq.Actor[Any, Any], redis: Redis, migrated: Settings
) -> None:
    from datetime import UTC, datetime

    from domain.events import parse_event

    tenant_id = str(uuid.uuid4())
    broker_redis = Redis.from_url(migrated.broker_url)
    broker_db = int(broker_redis.connection_pool.connection_kwargs.get("db") or 0)
    await broker_redis.aclose()
    queue = EventQueue({"live": test_actor, "bulk": test_actor}, frame_db=broker_db)
    frame = queue.frame(tenant_id)
    assert frame is not None
    event = parse_event(
        {"eventType": "product_viewed", "userId": "u1", "productId": "p1"},
        tenant_id=tenant_id,
        now=datetime.now(UTC),
    )
    await precheck(
        redis,
        tenant_id=tenant_id,
        events=[event],
        frame=frame,
        bodies=[queue.encode_event(event.to_message())],
    )
    fetched = await asyncio.to_thread(_fetch_with_dramatiq, test_actor)
    assert len(fetched) == 1
    read = EventMessage.read(*fetched[0].args, **fetched[0].kwargs)
    assert read.tenant_id == tenant_id and read.events[0]["id"] == event.event_id
    # Acked: nothing of it is left in the broker.
    assert test_actor.broker.client.hlen(frame.messages_key) == 0  # type: ignore[attr-defined]


def test_a_message_of_an_unknown_version_or_shape_is_refused_for_good() -> None:
    event = {"id": "e1", "type": "purchase", "user": "u", "product": "p", "ts": "t"}
    assert EventMessage.read("t", [event]).version == EVENT_MESSAGE_VERSION
    for args, kwargs in [
        (("t", [event]), {"version": EVENT_MESSAGE_VERSION + 1}),
        (("t", [{**event, "ts": None}]), {}),
        (("t", "not a list"), {}),
        ((7, [event]), {}),
    ]:
        with pytest.raises(MalformedMessage):
            EventMessage.read(*args, **kwargs)
