"""Attribution reconciliation: purchases whose recommendation click arrived after them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dramatiq

from store.event_projections import apply_guarded, attribution_effects
from store.events import reconcile_attributions
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool, redis_client


@dramatiq.actor(queue_name="maintenance", max_retries=3, time_limit=300_000)
async def reconcile_revenue_attributions(lookback_hours: int = 48) -> int:
    """Attribute late-clicked purchases of the last `lookback_hours`; returns how many."""
    since = datetime.now(UTC) - timedelta(hours=lookback_hours)
    made = await reconcile_attributions(await db_pool(), since=since)
    by_tenant: dict[str, list[dict]] = {}
    for tenant_id, attribution in made:
        by_tenant.setdefault(tenant_id, []).append(attribution)
    for tenant_id, attributions in by_tenant.items():
        effects = attribution_effects(tenant_id=tenant_id, attributions=attributions)
        await apply_guarded(redis_client(), effects)
    return len(made)
