"""The schedule: one table of periodic jobs, each of which only enqueues an actor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """Enqueue `actor` with `kwargs` on an APScheduler trigger."""

    name: str
    actor: str
    trigger: str
    trigger_args: dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


JOBS: list[Job] = [
    Job("create-event-partitions", "create_event_partitions", "cron", {"hour": 1, "minute": 5}),
]
