"""Maintenance actors: partitions, retention, purges."""

from __future__ import annotations

import dramatiq

from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool


@dramatiq.actor(queue_name="maintenance", max_retries=3, time_limit=300_000)
async def create_event_partitions(months_ahead: int = 3) -> int:
    """Create the monthly events partitions from this month to `months_ahead` months ahead."""
    pool = await db_pool()
    created = await pool.fetchval(
        "SELECT ensure_event_partitions(date_trunc('month', now())::date, $1)", months_ahead + 1
    )
    return int(created or 0)
