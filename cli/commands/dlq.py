"""`recomengine dlq list|replay`: inspect and replay Dramatiq's dead-lettered messages."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

NAMESPACE = "dramatiq"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `dlq` command and its `list` and `replay` subcommands."""
    from workers.broker import QUEUES

    parser = subparsers.add_parser("dlq", help="inspect or replay dead-lettered messages")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, func, helptext in (
        ("list", run_list, "show dead-lettered messages, oldest first"),
        ("replay", run_replay, "put dead-lettered messages back on their queue (retries reset)"),
    ):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("--queue", choices=QUEUES, default=None, help="default: every queue")
        action.add_argument("--limit", type=int, default=100)
        action.set_defaults(func=func)


@dataclass(frozen=True)
class DeadMessage:
    """One dead-lettered message."""

    queue: str
    redis_id: str
    dead_since: float
    message: Any


def _queues(chosen: str | None) -> list[str]:
    from workers.broker import QUEUES

    return [chosen] if chosen else list(QUEUES)


def dead_messages(client: Redis, *, queue: str, limit: int) -> list[DeadMessage]:
    """The queue's oldest dead-lettered messages (at most `limit`)."""
    from dramatiq import Message

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


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def run_list(args: argparse.Namespace) -> int:
    """Print the dead-lettered messages."""
    from workers.broker import broker

    client: Redis = broker.client
    total = 0
    for queue in _queues(args.queue):
        for dead in dead_messages(client, queue=queue, limit=args.limit):
            total += 1
            age = int(time.time() - dead.dead_since)
            options = dead.message.options
            print(
                f"{queue}\t{dead.redis_id}\t{dead.message.actor_name}\t"
                f"retries={options.get('retries', 0)}\tdead {age}s\t"
                f"{_last_line(options.get('traceback'))}"
            )
    print(f"{total} dead-lettered message(s)")
    return 0


def replay(client: Redis, broker: Any, *, queue: str, limit: int) -> int:
    """Enqueue dead messages again with their retries reset, then drop them from the DLQ."""
    from dramatiq import Message
    from dramatiq.common import q_name

    replayed = 0
    xqueue = f"{NAMESPACE}:{queue}.XQ"
    for dead in dead_messages(client, queue=queue, limit=limit):
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


def run_replay(args: argparse.Namespace) -> int:
    """Replay dead-lettered messages and say how many."""
    from workers.broker import broker

    total = 0
    for queue in _queues(args.queue):
        count = replay(broker.client, broker, queue=queue, limit=args.limit)
        if count:
            print(f"{queue}: replayed {count} message(s)")
        total += count
    print(f"{total} message(s) replayed")
    return 0
