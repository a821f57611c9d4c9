"""`recomengine dlq list|replay`: inspect and replay Dramatiq's dead-lettered messages."""

from __future__ import annotations

import argparse
import time

from redis import Redis

from workers.dead_letters import dead_messages, last_error, replay


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `dlq` command and its `list` and `replay` subcommands."""
    from workers.queues import QUEUES

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


def _queues(chosen: str | None) -> list[str]:
    from workers.queues import QUEUES

    return [chosen] if chosen else list(QUEUES)


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
                f"{last_error(options.get('traceback'))}"
            )
    print(f"{total} dead-lettered message(s)")
    return 0


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
