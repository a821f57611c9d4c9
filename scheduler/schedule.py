"""The schedule: one table of periodic jobs, each of which only enqueues an actor.

Every trigger is a cron on the wall clock (every N minutes is `*/N`), never an interval timed
from a process's start: two schedulers, or a new leader after a hand-over, agree on each slot.
"""

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
    Job("retrain-touched-tenants", "retrain_touched_tenants", "cron", {"minute": "*/15"}),
    Job("retrain-all-tenants", "retrain_all_tenants", "cron", {"hour": 2, "minute": 30}),
    Job(
        "reconcile-revenue-attributions",
        "reconcile_revenue_attributions",
        "cron",
        {"minute": "*/2"},
    ),
    Job("send-pending-mail", "send_pending_mail", "cron", {"minute": "*"}),
    # Copies the usage meters to PostgreSQL (the daily record) and raises the 80%/100% alerts.
    Job("meter-usage", "meter_usage", "cron", {"minute": "*"}),
    Job("flush-api-key-last-used", "flush_api_key_last_used", "cron", {"minute": "*"}),
    Job("purge-deleted-tenants", "purge_deleted_tenants", "cron", {"hour": 3, "minute": 17}),
    Job("refresh-analytics", "refresh_analytics", "cron", {"minute": "*/5"}),
    Job(
        "refresh-analytics-nightly",
        "refresh_analytics",
        "cron",
        {"hour": 0, "minute": 20},
        {"lookback_minutes": 26 * 60},
    ),
    Job(
        "apply-analytics-retention", "apply_analytics_retention", "cron", {"hour": 3, "minute": 47}
    ),
]
