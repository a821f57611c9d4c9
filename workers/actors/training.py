"""Training actors (queue `training`): fit a tenant's models and publish them atomically."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

import dramatiq

from domain.training import Progress, content_lists, refresh_user_lists, train
from store import keys
from store.models import (
    PublishedModel,
    current_version,
    publish_model,
    read_item_lists,
    replace_content_lists,
    update_user_lists,
)
from store.training import (
    active_tenant_ids,
    load_catalog,
    load_events,
    load_user_weights,
    record_training_run,
)
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool, redis_client

log = logging.getLogger("recomengine.training")


def new_version() -> str:
    """A sortable, unique model version."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


async def train_and_publish(
    *, tenant_id: str, progress: Progress = lambda _step: None
) -> dict[str, object]:
    """Load, fit, publish; returns the published version and counts."""
    started = time.perf_counter()
    pool = await db_pool()
    redis = redis_client()
    # Users touched from here on wait for the next run; those before are in this one's data.
    await redis.delete(keys.touched_users(tenant_id))
    events = await load_events(pool, tenant_id=tenant_id)
    catalog = await load_catalog(pool, tenant_id=tenant_id)
    progress("loaded")
    # Fitting is CPU-bound: off the event loop, which every async actor of this process shares.
    result = await asyncio.to_thread(
        train, events=events, catalog=catalog, now=time.time(), progress=progress
    )
    version = new_version()
    await publish_model(
        redis,
        tenant_id=tenant_id,
        model=PublishedModel(
            version=version,
            user_lists=result.user_lists,
            collaborative_item_lists=result.collaborative_item_lists,
            content_item_lists=result.content_item_lists,
            fbt_item_lists=result.fbt_item_lists,
            trending=result.trending,
            product_interactions=result.product_interactions,
            meta={
                "readiness": result.readiness,
                "counts": result.counts,
                "trainedAt": datetime.now(UTC).isoformat(),
                "version": version,
            },
        ),
    )
    progress("published")
    summary = {
        "version": version,
        "seconds": round(time.perf_counter() - started, 3),
        **result.counts,
    }
    log.info("model published", extra={"tenant_id": tenant_id, **summary})
    return summary


async def refresh_content(*, tenant_id: str) -> None:
    """After catalog changes: new content lists in the current version, or a first training."""
    catalog = await load_catalog(await db_pool(), tenant_id=tenant_id)
    lists = await asyncio.to_thread(content_lists, catalog)
    version = await replace_content_lists(
        redis_client(), tenant_id=tenant_id, content_item_lists=lists
    )
    if version is None:
        await train_and_publish(tenant_id=tenant_id)


async def _recorded(tenant_id: str, kind: str, run: Awaitable[object]) -> None:
    """Run a retrain and note it (or its failure) for the operators' console."""
    started = time.perf_counter()
    try:
        await run
    except Exception as exc:
        await record_training_run(
            redis_client(),
            tenant_id=tenant_id,
            kind=kind,
            seconds=time.perf_counter() - started,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    await record_training_run(
        redis_client(), tenant_id=tenant_id, kind=kind, seconds=time.perf_counter() - started
    )


@dramatiq.actor(queue_name="training", max_retries=2, time_limit=30 * 60_000)
async def train_tenant(tenant_id: str) -> None:
    """Retrain and republish every strategy of one tenant (idempotent: a new version each time)."""
    await _recorded(tenant_id, "full", train_and_publish(tenant_id=tenant_id))


async def refresh_touched_users(*, tenant_id: str, batch: int = 5_000) -> int:
    """Incremental retrain: rescore only the users with new events since the last run."""
    redis = redis_client()
    version = await current_version(redis, tenant_id=tenant_id)
    if version is None:
        await train_and_publish(tenant_id=tenant_id)
        return 0
    refreshed = 0
    while True:
        popped = await redis.spop(keys.touched_users(tenant_id), batch)
        users = [u.decode() if isinstance(u, bytes) else str(u) for u in popped or []]
        if not users:
            return refreshed
        histories = await load_user_weights(await db_pool(), tenant_id=tenant_id, user_ids=users)
        products = sorted({p for weights in histories.values() for p in weights})
        item_lists = await read_item_lists(
            redis, tenant_id=tenant_id, version=version, product_ids=products
        )
        lists = await asyncio.to_thread(
            refresh_user_lists, histories=histories, item_lists=item_lists
        )
        await update_user_lists(redis, tenant_id=tenant_id, user_lists=lists)
        refreshed += len(users)


@dramatiq.actor(queue_name="training", max_retries=2, time_limit=10 * 60_000)
async def retrain_touched_users(tenant_id: str) -> None:
    """Incremental retrain of one tenant (idempotent: rescoring a user twice is harmless)."""
    await _recorded(tenant_id, "incremental", refresh_touched_users(tenant_id=tenant_id))


@dramatiq.actor(queue_name="training", max_retries=1, time_limit=60_000)
async def retrain_touched_tenants() -> None:
    """Every 15 min: incremental retrain of the tenants with new events since the last run."""
    redis = redis_client()
    for tenant_id in await active_tenant_ids(await db_pool()):
        if await redis.scard(keys.touched_users(tenant_id)):
            retrain_touched_users.send(tenant_id)


@dramatiq.actor(queue_name="training", max_retries=1, time_limit=60_000)
async def retrain_all_tenants() -> None:
    """Daily: retrain every active tenant."""
    for tenant_id in await active_tenant_ids(await db_pool()):
        train_tenant.send(tenant_id)
