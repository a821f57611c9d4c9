"""Dead-lettered messages: what the operators' console and `recomengine dlq` list and replay."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dramatiq import Message
from dramatiq.common import q_name
from redis import Redis

NAMESPACE = "dramatiq"


@dataclass(frozen=True)
class DeadMessage:
    """One dead-lettered message."""

    queue: str
    redis_id: str
    dead_since: float
    message: Any


def dead_messages(client: Redis, *, queue: str, limit: int) -> list[DeadMessage]:
    """The queue's oldest dead-lettered messages (at most `limit`)."""
    xqueue = f"{NAMESPACE}:{queue}.XQ"
    entries: list[Any] = client.zrange(xqueue, 0, limit - 1, withscores=True)
    if not entries:
        return []
    ids = [redis_id for redis_id, _ in entries]
    bodies: list[Any] = client.hmget(f"{xqueue}.msgs", ids)
    found = []
    for (redis_id, score), body in zip(entries, bodies, strict=True):
        if body is None:
            continue
        found.append(DeadMessage(queue, redis_id.decode(), score / 1000, Message.decode(body)))
    return found


def replay(
    client: Redis, broker: Any, *, queue: str, limit: int, only: Collection[str] | None = None
) -> int:
    """Enqueue dead messages again with their retries reset, then drop them from the DLQ;
    `only` restricts it to these Redis message ids."""
    replayed = 0
    xqueue = f"{NAMESPACE}:{queue}.XQ"
    for dead in dead_messages(client, queue=queue, limit=limit):
        if only is not None and dead.redis_id not in only:
            continue
        options = {
            k: v
            for k, v in dead.message.options.items()
            if k not in {"retries", "traceback", "redis_message_id", "eta"}
        }
        fresh: Message[Any] = Message(
            queue_name=q_name(dead.message.queue_name),
            actor_name=dead.message.actor_name,
            args=dead.message.args,
            kwargs=dead.message.kwargs,
            options=options,
            message_id=dead.message.message_id,
        )
        # Enqueue before removing: a crash in between leaves a duplicate (our actors are
        # idempotent), never a lost message.
        broker.enqueue(fresh)
        client.zrem(xqueue, dead.redis_id)
        client.hdel(f"{xqueue}.msgs", dead.redis_id)
        replayed += 1
    return replayed


def last_error(traceback: str | None) -> str:
    """The last line of a traceback (the exception), at most 160 characters."""
    lines = [line for line in (traceback or "").strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def describe(dead: DeadMessage, *, preview_chars: int = 500) -> dict[str, Any]:
    """What the console shows of a dead message: its arguments only as a shortened preview."""
    options = dead.message.options
    arguments = json.dumps([*dead.message.args, dead.message.kwargs], default=str)
    return {
        "id": dead.redis_id,
        "queue": dead.queue,
        "actor": dead.message.actor_name,
        "failedAt": datetime.fromtimestamp(dead.dead_since, UTC).isoformat(),
        "retries": int(options.get("retries", 0)),
        "error": last_error(options.get("traceback")),
        "args": arguments[:preview_chars],
    }
