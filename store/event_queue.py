"""The ingest queue in the broker: event messages are written through Dramatiq's own API
(`Actor.send_with_options`), except where the ingest gate's script queues the fresh events of
the call that checked them (`QueueFrame`): that script writes Dramatiq's Redis layout itself,
the one of the version below, which tests/integration/test_event_queue.py checks against the
installed Dramatiq."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

import dramatiq

from domain.event_message import EventMessage, MessageEvent

# The Dramatiq release whose Redis layout QueueFrame writes: the message body under its Redis
# id in the hash `<namespace>:<queue>.msgs`, then the id at the tail of the list
# `<namespace>:<queue>` (its `dispatch.lua`, command "enqueue").
DRAMATIQ_LAYOUT_VERSION = "2.2.1"


@dataclass(frozen=True)
class QueueFrame:
    """A broker message the ingest gate's script fills with the fresh events and queues itself.

    `head` and `tail` are the message encoded around its (empty) events list; the broker's
    hash and list are in database `db` of the projections' Redis server.
    """

    db: int
    messages_key: str
    queue_key: str
    message_id: str
    head: bytes
    tail: bytes


class EventQueue:
    """Sends event messages to the ingest actor's queue."""

    def __init__(self, actor: dramatiq.Actor[Any, Any], *, frame_db: int | None) -> None:
        """`frame_db`: the broker's database when it is on the projections' Redis server (the
        gate's script may then queue in the call that checks), else None."""
        self._actor = actor
        self._frame_db = frame_db
        self._encoder = dramatiq.get_encoder()

    def _message(self, message: EventMessage) -> dramatiq.Message[Any]:
        return self._actor.message_with_options(
            args=message.actor_args(), kwargs=message.actor_kwargs()
        )

    async def send(self, message: EventMessage) -> None:
        """Queue `message`; returns once the broker holds it. Dramatiq's broker is
        synchronous: it runs in a thread, so the api's loop goes on meanwhile."""
        await asyncio.to_thread(
            self._actor.send_with_options, args=message.actor_args(), kwargs=message.actor_kwargs()
        )

    def encode_event(self, event: MessageEvent) -> bytes:
        """`event` encoded as it is inside a message (what a frame's script joins)."""
        return self._encoder.encode(event)  # type: ignore[arg-type]

    def frame(self, tenant_id: str) -> QueueFrame | None:
        """A message of the tenant for the gate's script to fill and queue, or None when the
        broker is on another server (then `send` queues the fresh events after the check)."""
        if self._frame_db is None:
            return None
        marker = os.urandom(16).hex()
        redis_id = str(uuid.uuid4())
        empty = self._message(EventMessage(tenant_id, []))
        filled = empty.copy(args=(tenant_id, [marker]), options={"redis_message_id": redis_id})
        head, tail = filled.encode().split(f'"{marker}"'.encode())
        broker = self._actor.broker
        queue = f"{getattr(broker, 'namespace', 'dramatiq')}:{empty.queue_name}"
        return QueueFrame(
            db=self._frame_db,
            messages_key=f"{queue}.msgs",
            queue_key=queue,
            message_id=redis_id,
            head=head,
            tail=tail,
        )
