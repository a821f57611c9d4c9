"""Analytics actors (queue maintenance): refresh the daily aggregates, apply retention."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import dramatiq

from store.analytics import apply_retention, refresh_due, refresh_tenant_days
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool

# The frequent run looks this far back for late arrivals; runs overlap, so none is missed
# while the scheduler keeps its few-minute cadence.
RECENT_LOOKBACK_MINUTES = 60
# The nightly run looks back a whole day and more, for anything a stopped scheduler missed.
NIGHTLY_LOOKBACK_MINUTES = 26 * 60
MAX_DAYS_PER_CALL = 400


class BadAnalyticsRequest(ValueError):
    """The message's arguments are unusable; retrying cannot help."""


@dramatiq.actor(
    queue_name="maintenance", max_retries=3, time_limit=1_800_000, throws=(BadAnalyticsRequest,)
)
async def refresh_analytics(lookback_minutes: int = RECENT_LOOKBACK_MINUTES) -> int:
    """Refresh today's aggregates, close yesterday's, and redo days that received late events
    or attributions in the last `lookback_minutes`; returns the (tenant, day) pairs done."""
    if not 1 <= lookback_minutes <= 7 * 24 * 60:
        raise BadAnalyticsRequest("lookback_minutes must be between 1 and 10080")
    now = datetime.now(UTC)
    return await refresh_due(
        await db_pool(), now=now, late_since=now - timedelta(minutes=lookback_minutes)
    )


@dramatiq.actor(
    queue_name="maintenance", max_retries=3, time_limit=3_600_000, throws=(BadAnalyticsRequest,)
)
async def refresh_analytics_days(tenant_id: str, days: list[str]) -> int:
    """Recompute one tenant's aggregates of the given ISO days (backfills, operators)."""
    try:
        tenant_id = str(uuid.UUID(tenant_id))
        parsed = [date.fromisoformat(day) for day in days]
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadAnalyticsRequest("tenant_id must be a UUID and days ISO dates") from exc
    if len(parsed) > MAX_DAYS_PER_CALL:
        raise BadAnalyticsRequest(f"at most {MAX_DAYS_PER_CALL} days per message")
    return await refresh_tenant_days(await db_pool(), tenant_id=tenant_id, days=parsed)


@dramatiq.actor(queue_name="maintenance", max_retries=3, time_limit=3_600_000)
async def apply_analytics_retention() -> dict[str, object]:
    """Summarise and drop raw events past 90 days, delete daily aggregates past a year."""
    outcome = await apply_retention(await db_pool(), now=datetime.now(UTC))
    return {
        "partitionsDropped": outcome.partitions_dropped,
        "defaultRowsDeleted": outcome.default_rows_deleted,
        "dailyRowsDeleted": outcome.daily_rows_deleted,
    }
