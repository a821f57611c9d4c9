"""Housekeeping actors: flush API-key last-used times, purge tenants deleted long ago."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dramatiq

from store.api_keys import flush_last_used
from store.tenants import purge_tenant_redis_keys, purge_tenant_rows, tenants_deleted_before
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool, redis_client

PURGE_AFTER_DAYS = 30


@dramatiq.actor(queue_name="maintenance", max_retries=5, time_limit=120_000, throws=(ValueError,))
async def flush_api_key_last_used() -> int:
    """Copy last-used times marked in Redis to api_keys.last_used_at; the rows updated."""
    return await flush_last_used(await db_pool(), redis_client())


@dramatiq.actor(queue_name="maintenance", max_retries=5, time_limit=1_800_000, throws=(ValueError,))
async def purge_deleted_tenants(older_than_days: int = PURGE_AFTER_DAYS) -> list[str]:
    """Delete every tenant soft-deleted more than `older_than_days` ago: rows and Redis keys."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    pool = await db_pool()
    redis = redis_client()
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    purged = []
    for tenant_id in await tenants_deleted_before(pool, cutoff=cutoff):
        # Redis first: if the database step then fails, the retry finds the tenant again and
        # redoes both; the other way round a failure would leave keys nobody comes back for.
        await purge_tenant_redis_keys(redis, tenant_id=tenant_id)
        if await purge_tenant_rows(pool, tenant_id=tenant_id):
            purged.append(tenant_id)
    return purged
