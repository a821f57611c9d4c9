"""Catalog actors: apply a validated batch, and note that the content model needs a refresh."""

from __future__ import annotations

from typing import Any

import asyncpg
import dramatiq

from domain.catalog import from_message
from domain.errors import ValidationFailed
from store import catalog as catalog_store
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.actors.training import refresh_content
from workers.runtime import db_pool, redis_client


@dramatiq.actor(
    queue_name="training",
    max_retries=3,
    time_limit=30 * 60_000,
    throws=(ValueError,),
)
async def refresh_content_model(tenant_id: str) -> None:
    """Refresh the tenant's content neighbours after catalog changes (coalesced per window)."""
    await catalog_store.mark_content_model_dirty(redis_client(), tenant_id=tenant_id)
    await refresh_content(tenant_id=tenant_id)


def request_content_refresh_delay_ms() -> int:
    """How long a queued refresh waits, so that it covers every change of its window."""
    return catalog_store.CONTENT_REFRESH_WINDOW_SECONDS * 1000


async def queue_content_refresh(redis: Any, *, tenant_id: str) -> bool:
    """Queue one content-model refresh per tenant and window; True when this call queued it."""
    if not await catalog_store.claim_content_refresh(redis, tenant_id=tenant_id):
        return False
    try:
        refresh_content_model.send_with_options(
            args=(tenant_id,), delay=request_content_refresh_delay_ms()
        )
    except Exception:
        # Not queued: free the window so that the next catalog change queues the refresh.
        await catalog_store.release_content_refresh(redis, tenant_id=tenant_id)
        raise
    return True


@dramatiq.actor(
    queue_name="catalog",
    max_retries=5,
    time_limit=120_000,
    # A message that fails validation, or whose tenant is gone, fails the same way every time.
    throws=(ValidationFailed, asyncpg.ForeignKeyViolationError),
)
async def apply_catalog_batch(tenant_id: str, items: list[dict[str, Any]]) -> int:
    """Upsert the api-validated items of one batch (distinct product ids) and their projections."""
    parsed = [from_message(item) for item in items]
    pool = await db_pool()
    redis = redis_client()
    written = await catalog_store.upsert_items(pool, redis, tenant_id=tenant_id, items=parsed)
    await queue_content_refresh(redis, tenant_id=tenant_id)
    return written
