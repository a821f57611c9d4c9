"""Training actors (queue `training`): fit a tenant's models and publish them atomically."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import dramatiq

from domain.evaluation import DEFAULT_NDCG_TOLERANCE, gate
from domain.training import (
    Progress,
    catalog_refreshed_lists,
    check_incremental,
    refresh_user_lists,
    train,
)
from store import keys
from store.answers import (
    PROJECTED_PRODUCTS_AT_PUBLISH,
    PROJECTED_USERS_AT_PUBLISH,
    AnswerProjector,
    reproject_all_readers,
)
from store.models import (
    REJECTED_VERSION_TTL_SECONDS,
    PublishedModel,
    ServingReader,
    current_version,
    expire_version,
    list_version_records,
    make_current_unless_superseded,
    read_item_lists,
    read_user_lists,
    read_version_record,
    replace_refreshed_lists,
    save_version_record,
    top_products,
    update_user_lists,
    write_model,
)
from store.training import (
    active_tenant_ids,
    load_catalog,
    load_events,
    load_tenant_config,
    load_user_histories,
    record_training_run,
)
from workers import broker as _broker  # noqa: F401  (binds actors to the configured broker)
from workers.runtime import db_pool, redis_client

log = logging.getLogger("recomengine.training")


def new_version() -> str:
    """A sortable, unique model version."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def ndcg_tolerance(config: dict[str, Any]) -> float:
    """The tenant's `publishGate.ndcgTolerance`, else the default (10% relative NDCG@10)."""
    value = (config.get("publishGate") or {}).get("ndcgTolerance")
    return float(value) if isinstance(value, int | float) else DEFAULT_NDCG_TOLERANCE


async def train_and_publish(
    *, tenant_id: str, progress: Progress = lambda _step: None, evaluate: bool = True
) -> dict[str, Any]:
    """Load, evaluate, fit; publish when the gate lets it (else keep it as rejected); returns
    the version, counts and the gate's decision."""
    started = time.perf_counter()
    pool = await db_pool()
    redis = redis_client()
    # Users touched from here on wait for the next run; those before are in this one's data.
    await redis.delete(keys.touched_users(tenant_id))
    # Named before the data is read: of two overlapping trainings, the one that read later wins.
    version = new_version()
    config = await load_tenant_config(pool, tenant_id=tenant_id)
    # Test keys' events are sandbox traffic: trained on only when the tenant asks for it.
    include_test = bool(config.get("trainOnTestEvents"))
    events = await load_events(pool, tenant_id=tenant_id, include_test=include_test)
    catalog = await load_catalog(pool, tenant_id=tenant_id)
    tolerance = ndcg_tolerance(config)
    progress("loaded")
    # Fitting is CPU-bound: off the event loop, which every async actor of this process shares.
    result = await asyncio.to_thread(
        train,
        events=events,
        catalog=catalog,
        now=time.time(),
        progress=progress,
        with_evaluation=evaluate,
    )
    evaluation = result.evaluation
    published = await current_version(redis, tenant_id=tenant_id)
    published_record = (
        await read_version_record(redis, tenant_id=tenant_id, version=published)
        if published
        else None
    )
    decision = gate(
        candidate=evaluation.metrics if evaluation else {},
        published=(published_record or {}).get("metrics") or None,
        tolerance=tolerance,
        skipped=evaluation.skipped if evaluation else "evaluation turned off",
    )
    # With nothing published, a weak first model still beats serving none: it goes out, and
    # its gate record says it did not pass.
    publish = decision.passed or published is None
    gate_record = decision.to_dict()
    if not decision.passed and published is None:
        gate_record["reasons"] = [*decision.reasons, "published anyway: no version was before"]
    trained_at = datetime.now(UTC).isoformat()
    model = PublishedModel(
        version=version,
        lists=result.lists,
        product_interactions=result.product_interactions,
        meta={
            "readiness": result.readiness,
            "counts": result.counts,
            "trainedAt": trained_at,
            "version": version,
        },
    )
    seconds = round(time.perf_counter() - started, 3)
    record = {
        "version": version,
        "status": "published" if publish else "rejected",
        "trainedAt": trained_at,
        "seconds": seconds,
        "sizes": {
            "users": result.counts["users"],
            "products": result.counts["products"],
            "events": result.counts["events"],
        },
        "metrics": evaluation.metrics if evaluation else {},
        "evaluation": evaluation.to_dict() if evaluation else None,
        "gate": gate_record,
        "tolerance": tolerance,
        "comparedWith": published,
    }
    superseded = False
    if publish:
        await write_model(redis, tenant_id=tenant_id, model=model)
        await save_version_record(redis, tenant_id=tenant_id, record=record)
        if await make_current_unless_superseded(redis, tenant_id=tenant_id, version=version):
            progress("published")
            popular = await top_products(
                redis, tenant_id=tenant_id, version=version, n=PROJECTED_PRODUCTS_AT_PUBLISH
            )
            # The most recently active users (events are oldest first): their first requests
            # are then not computed either.
            active = list(dict.fromkeys(reversed(events.user_ids)))[:PROJECTED_USERS_AT_PUBLISH]
            # The new model's answers: trending, the popular products', the reading users',
            # the active users'.
            await reproject_all_readers(
                redis,
                tenant_id=tenant_id,
                products=popular,
                active_users=active,
                default_strategy=config.get("defaultStrategy"),
            )
        else:
            publish = False
            superseded = True
    else:
        # One rejected version is kept at a time: the ones before it go soon.
        for earlier in await list_version_records(redis, tenant_id=tenant_id):
            if earlier["status"] == "rejected":
                await expire_version(
                    redis, tenant_id=tenant_id, version=earlier["version"], seconds=300
                )
        await write_model(
            redis, tenant_id=tenant_id, model=model, ttl_seconds=REJECTED_VERSION_TTL_SECONDS
        )
        await save_version_record(redis, tenant_id=tenant_id, record=record)
        progress("rejected")
    summary = {
        "version": version,
        "published": publish,
        "seconds": seconds,
        "gate": gate_record,
        **result.counts,
    }
    if publish:
        log.info("model published", extra={"tenant_id": tenant_id, **summary})
    elif superseded:
        log.info("model superseded by a newer training", extra={"tenant_id": tenant_id, **summary})
    else:
        log.warning("model rejected by the publish gate", extra={"tenant_id": tenant_id, **summary})
    return summary


async def refresh_content(*, tenant_id: str) -> None:
    """After catalog changes: the lists the registered strategies rebuild from the catalog
    (StrategySpec.catalog_refresh) swapped into the current version, or a first training."""
    catalog = await load_catalog(await db_pool(), tenant_id=tenant_id)
    lists = await asyncio.to_thread(catalog_refreshed_lists, catalog)
    version = await replace_refreshed_lists(redis_client(), tenant_id=tenant_id, lists=lists)
    if version is None:
        await train_and_publish(tenant_id=tenant_id)


async def _recorded(tenant_id: str, kind: str, run: Awaitable[Any]) -> None:
    """Run a retrain and note it (or its failure, or the gate's rejection) for the operators'
    console."""
    started = time.perf_counter()
    try:
        outcome = await run
    except Exception as exc:
        await record_training_run(
            redis_client(),
            tenant_id=tenant_id,
            kind=kind,
            seconds=time.perf_counter() - started,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    gate_record = outcome.get("gate") if isinstance(outcome, dict) else None
    if gate_record is not None and isinstance(outcome, dict) and outcome.get("version"):
        gate_record = {**gate_record, "version": outcome["version"]}
    await record_training_run(
        redis_client(),
        tenant_id=tenant_id,
        kind=kind,
        seconds=time.perf_counter() - started,
        gate=gate_record,
    )


@dramatiq.actor(queue_name="training", max_retries=2, time_limit=30 * 60_000)
async def train_tenant(tenant_id: str) -> None:
    """Retrain, evaluate and (gate permitting) republish every strategy of one tenant
    (idempotent: a new version each time)."""
    await _recorded(tenant_id, "full", train_and_publish(tenant_id=tenant_id))


async def refresh_touched_users(*, tenant_id: str, batch: int = 5_000) -> dict[str, Any]:
    """Incremental retrain: rescore only the users with new events since the last run, each
    batch written only if a cheap held-out check passes the publish gate."""
    redis = redis_client()
    version = await current_version(redis, tenant_id=tenant_id)
    if version is None:
        summary = await train_and_publish(tenant_id=tenant_id)
        return {"refreshedUsers": 0, "gate": summary["gate"]}
    pool = await db_pool()
    config = await load_tenant_config(pool, tenant_id=tenant_id)
    tolerance = ndcg_tolerance(config)
    include_test = bool(config.get("trainOnTestEvents"))
    refreshed, rejected = 0, 0
    decisions: list[dict[str, Any]] = []
    while True:
        popped = await redis.spop(keys.touched_users(tenant_id), batch)
        users = [u.decode() if isinstance(u, bytes) else str(u) for u in popped or []]
        if not users:
            break
        timed = await load_user_histories(
            pool, tenant_id=tenant_id, user_ids=users, include_test=include_test
        )
        histories = {u: {p: wt[0] for p, wt in products.items()} for u, products in timed.items()}
        products = sorted({p for weights in histories.values() for p in weights})
        item_lists = await read_item_lists(
            redis, tenant_id=tenant_id, version=version, product_ids=products
        )
        sample = sorted(u for u in timed if len(timed[u]) >= 2)[:300]
        published_lists = await read_user_lists(
            redis, tenant_id=tenant_id, version=version, user_ids=sample
        )
        popular = await top_products(redis, tenant_id=tenant_id, version=version, n=200)
        decision, metrics = await asyncio.to_thread(
            check_incremental,
            histories={u: timed[u] for u in sample},
            item_lists=item_lists,
            published_lists=published_lists,
            popular=popular,
            tolerance=tolerance,
        )
        decisions.append({**decision.to_dict(), "metrics": metrics})
        if not decision.passed:
            # These users keep their published lists until the next full retrain.
            rejected += len(users)
            log.warning(
                "incremental lists rejected by the publish gate",
                extra={"tenant_id": tenant_id, "reasons": decision.reasons},
            )
            continue
        lists = await asyncio.to_thread(
            refresh_user_lists, histories=histories, item_lists=item_lists
        )
        await update_user_lists(redis, tenant_id=tenant_id, user_lists=lists)
        await AnswerProjector(redis, ServingReader(redis)).reproject_readers(
            tenant_id=tenant_id, user_ids=users
        )  # the rescored users' projected answers
        refreshed += len(users)
    reasons = [r for d in decisions for r in d["reasons"]]
    passed = all(d["passed"] for d in decisions)
    return {
        "refreshedUsers": refreshed,
        "rejectedUsers": rejected,
        "version": version,
        "gate": {"passed": passed, "reasons": reasons[:10]},
    }


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
