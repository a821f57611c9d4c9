"""`recomengine rebuild`: write every Redis projection again from PostgreSQL (after Redis lost
its data), or `--check` the live ones against a recount without changing them."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
from redis.asyncio import Redis

from store.db import create_pool
from store.rebuild import check_database_url, check_tenant, rebuild_tenant
from store.redis import create_redis
from store.settings import Settings, get_settings
from store.training import active_tenant_ids


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `rebuild`."""
    parser = subparsers.add_parser(
        "rebuild",
        help="rebuild the Redis projections from PostgreSQL (pause ingestion first), or --check",
    )
    parser.add_argument("--tenant", action="append", help="tenant id (repeatable; default: all)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="recount the event-derived projections into a scratch database and list where the "
        "live ones differ (changes nothing; exit code 1 when they do)",
    )
    parser.set_defaults(func=run_rebuild)


def run_rebuild(args: argparse.Namespace) -> int:
    """Rebuild (or check) the chosen tenants and print what was done."""
    return asyncio.run(_run(get_settings(), tenants=args.tenant, check=args.check))


async def _run(settings: Settings, *, tenants: list[str] | None, check: bool) -> int:
    pool = await create_pool(settings)
    redis = create_redis(settings)
    try:
        chosen = tenants or await active_tenant_ids(pool)
        if check:
            scratch_url = check_database_url(settings.redis_url)
            scratch = create_redis(settings.model_copy(update={"redis_url": scratch_url}))
            try:
                return await _check(pool, redis, scratch, tenants=chosen)
            finally:
                await scratch.aclose()
        needing_training = []
        for tenant_id in chosen:
            totals = await rebuild_tenant(pool, redis, tenant_id=tenant_id)
            print(
                f"{tenant_id}: {totals.products} products, {totals.widgets} widgets, "
                f"{totals.experiments} running experiments, {totals.events} events and "
                f"{totals.attributions} attributions recounted"
                + ("; no model: retrain queued" if totals.needs_training else "")
            )
            if totals.needs_training:
                needing_training.append(tenant_id)
        if needing_training:
            from workers.actors.training import train_tenant

            for tenant_id in needing_training:
                train_tenant.send(tenant_id)
        return 0
    finally:
        await redis.aclose()
        await pool.close()


async def _check(pool: asyncpg.Pool, redis: Redis, scratch: Redis, *, tenants: list[str]) -> int:
    mismatched = 0
    for tenant_id in tenants:
        events, attributions, found = await check_tenant(pool, redis, scratch, tenant_id=tenant_id)
        mismatched += len(found)
        print(f"{tenant_id}: {events} events, {attributions} attributions, {len(found)} differ")
        for line in found[:20]:
            print(f"  {line}")
    return 1 if mismatched else 0
