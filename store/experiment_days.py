"""Per-day increments of an experiment's variants, read from events and attributions."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from domain.experiment_days import DayIncrement
from store.db import in_tenant

# Exposure comes from the impression and click events that carry the experiment in their
# metadata (as the SDK sends them); purchases from the attributions made of those clicks.
_EXPOSURE = """
WITH ev AS (
    SELECT metadata->>'variant' AS variant, user_id,
           (occurred_at AT TIME ZONE 'UTC')::date AS day,
           (event_type = 'recommendation_impressed')::int AS impressed,
           (event_type = 'recommendation_clicked')::int AS clicked
    FROM events
    WHERE tenant_id = $1 AND occurred_at >= $3 AND occurred_at < $4
      AND event_type IN ('recommendation_impressed', 'recommendation_clicked')
      AND metadata->>'experimentId' = $2 AND 'test' <> ALL(flags)
), firsts AS (
    SELECT variant, min(day) AS day FROM ev GROUP BY variant, user_id
), new_users AS (
    SELECT variant, day, count(*) AS n FROM firsts GROUP BY variant, day
), sums AS (
    SELECT variant, day, sum(impressed) AS impressions, sum(clicked) AS clicks
    FROM ev GROUP BY variant, day
)
SELECT s.variant, s.day, coalesce(n.n, 0) AS new_users, s.impressions, s.clicks
FROM sums s LEFT JOIN new_users n USING (variant, day)
"""

_PURCHASES = """
WITH att AS (
    SELECT variant, user_id, (purchased_at AT TIME ZONE 'UTC')::date AS day, revenue
    FROM revenue_attributions
    WHERE tenant_id = $1 AND experiment_id = $2::uuid AND purchased_at >= $3 AND purchased_at < $4
), firsts AS (
    SELECT variant, min(day) AS day FROM att GROUP BY variant, user_id
), new_buyers AS (
    SELECT variant, day, count(*) AS n FROM firsts GROUP BY variant, day
), sums AS (
    SELECT variant, day, count(*) AS purchases, sum(revenue)::float8 AS revenue
    FROM att GROUP BY variant, day
)
SELECT s.variant, s.day, coalesce(n.n, 0) AS new_buyers, s.purchases, s.revenue
FROM sums s LEFT JOIN new_buyers n USING (variant, day)
"""


async def experiment_day_increments(
    pool: asyncpg.Pool, *, tenant_id: str, experiment_id: str, start: datetime, end: datetime
) -> list[DayIncrement]:
    """Each variant's gains per UTC day between `start` and `end`."""
    exposure = await in_tenant(pool, tenant_id).fetch(
        _EXPOSURE, tenant_id, experiment_id, start, end
    )
    purchases = await in_tenant(pool, tenant_id).fetch(
        _PURCHASES, tenant_id, experiment_id, start, end
    )
    merged: dict[tuple[str, date], dict[str, float]] = {}
    for row in exposure:
        merged.setdefault((row["variant"], row["day"]), {}).update(
            new_users=row["new_users"], impressions=row["impressions"], clicks=row["clicks"]
        )
    for row in purchases:
        merged.setdefault((row["variant"], row["day"]), {}).update(
            new_buyers=row["new_buyers"], purchases=row["purchases"], revenue=row["revenue"]
        )
    return [
        DayIncrement(
            variant=variant,
            day=day,
            new_users=int(values.get("new_users", 0)),
            impressions=int(values.get("impressions", 0)),
            clicks=int(values.get("clicks", 0)),
            new_buyers=int(values.get("new_buyers", 0)),
            purchases=int(values.get("purchases", 0)),
            revenue=float(values.get("revenue", 0.0)),
        )
        for (variant, day), values in merged.items()
        if variant is not None
    ]
