"""Row-level security (migration 0016): with the platform's own role, every table with a
tenant_id column shows and takes only the rows of the tenant the transaction is scoped to, none
outside a scope, and every row only in the explicit cross-tenant scope."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Process, TenantContext
from redis.asyncio import Redis

from domain.plans import PLANS, PlanName
from store import analytics as analytics_store
from store import keys
from store.db import all_tenants, in_tenant, tenant_transaction
from store.usage import meter_all, month_of

_TENANT_TABLES = """
SELECT c.relname, c.relkind, c.relispartition, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid
          AND p.polname = 'tenant_isolation' AND p.polcmd = '*'
          AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL) AS policies
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""


async def _tenant_tables(db: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await db.fetch(_TENANT_TABLES))


def _quoted(table: str) -> str:
    return '"' + table.replace('"', '""') + '"'


async def test_every_table_with_a_tenant_id_column_has_row_level_security_and_its_policy(
    db: asyncpg.Pool,
) -> None:
    tables = await _tenant_tables(db)
    names = {row["relname"] for row in tables}
    # The schema's tenant tables, partitions included (a sanity check that the query finds them).
    assert {"events", "events_default", "catalog_items", "api_keys", "usage_daily"} <= names
    assert any(row["relispartition"] for row in tables)
    unprotected = [
        row["relname"] for row in tables if not row["relrowsecurity"] or row["policies"] != 1
    ]
    assert unprotected == [], f"tables with tenant_id but no row-level security: {unprotected}"


async def test_every_view_checks_the_policies_as_the_role_that_queries_it(
    db: asyncpg.Pool,
) -> None:
    views = await db.fetch(
        "SELECT c.relname, coalesce(c.reloptions, '{}') AS options FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')"
    )
    assert {row["relname"] for row in views} >= {"live_events", "live_events_default"}
    # A view runs with its owner's rights by default, and the owner is exempt from the policies.
    definer_views = [
        row["relname"] for row in views if "security_invoker=true" not in row["options"]
    ]
    assert definer_views == []


async def test_the_platform_role_is_held_to_the_policies(app_db: asyncpg.Pool) -> None:
    role = await app_db.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert role is not None and not role["rolsuper"] and not role["rolbypassrls"]
    owner = await app_db.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'events'")
    assert owner != await app_db.fetchval("SELECT current_user")


async def test_a_monthly_partition_made_later_is_protected_as_it_is_made(
    app_db: asyncpg.Pool, db: asyncpg.Pool
) -> None:
    # The platform role makes partitions ahead through the owner's function.
    await app_db.execute("SELECT ensure_event_partitions('2033-02-01'::date, 1)")
    try:
        row = await db.fetchrow(
            "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid "
            "AND p.polname = 'tenant_isolation') AS policies "
            "FROM pg_class c WHERE c.relname = 'events_2033_02'"
        )
        assert row is not None and row["relrowsecurity"] and row["policies"] == 1
    finally:
        await app_db.execute("SELECT drop_event_partition('events_2033_02')")


# ---------------------------------------------------------------------------------------------
# Two tenants seeded through the real api, worker and services


@pytest.fixture(scope="module")
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the api."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


async def _seed(
    http: httpx.AsyncClient, app_db: asyncpg.Pool, redis: Redis, shop: TenantContext
) -> int:
    """Give the tenant a row in every tenant table it can have; the events it posted."""
    products = [{"productId": f"p{n}", "name": f"Product {n}", "price": 10 + n} for n in range(3)]
    answer = await http.post(
        "/api/v1/catalog/batch", json={"items": products}, headers=shop.write_headers
    )
    assert answer.status_code == 202, answer.text
    answer = await http.post(
        f"/api/v1/tenants/{shop.tenant_id}/widgets",
        json={"placementId": "home"},
        headers=shop.admin_headers,
    )
    assert answer.status_code == 201, answer.text
    answer = await http.post(
        f"/api/v1/tenants/{shop.tenant_id}/experiments",
        json={
            "name": "Trending against collaborative",
            "placementId": "home",
            "controlStrategy": "trending",
            "variantStrategy": "collaborative",
            "trafficSplit": 50,
            "metric": "ctr",
        },
        headers=shop.admin_headers,
    )
    assert answer.status_code == 201, answer.text
    experiment = answer.json()["id"]
    answer = await http.patch(
        f"/api/v1/tenants/{shop.tenant_id}/experiments/{experiment}",
        json={"status": "running"},
        headers=shop.admin_headers,
    )
    assert answer.status_code == 200, answer.text
    now = datetime.now(UTC)
    shown = {"placementId": "home", "strategy": "trending"}
    shown |= {"experimentId": experiment, "variant": "control"}
    events: list[dict[str, Any]] = []
    for user in ("ann", "bob", "erased"):
        at = now - timedelta(minutes=10)
        events += [
            {"eventType": "product_viewed", "userId": user, "productId": "p1",
             "timestamp": at.isoformat(), "eventId": f"view-{user}"},
            {"eventType": "recommendation_impressed", "userId": user, "productId": "p1",
             "timestamp": (at + timedelta(seconds=1)).isoformat(), "metadata": shown},
            {"eventType": "recommendation_clicked", "userId": user, "productId": "p1",
             "timestamp": (at + timedelta(seconds=2)).isoformat(), "metadata": shown},
            {"eventType": "purchase", "userId": user, "productId": "p1",
             "timestamp": (at + timedelta(seconds=3)).isoformat(), "metadata": {"price": 11}},
        ]  # fmt: skip
    answer = await http.post(
        "/api/v1/events/batch", json={"events": events}, headers=shop.write_headers
    )
    assert answer.status_code == 202 and answer.json()["accepted"] == len(events), answer.text
    # The worker stores them (and the catalog) as the platform role, in the tenant's scope.
    scoped = in_tenant(app_db, shop.tenant_id)
    deadline = asyncio.get_running_loop().time() + 30
    while await scoped.fetchval("SELECT count(*) FROM revenue_attributions") < 3:
        assert asyncio.get_running_loop().time() < deadline, "events were not stored in time"
        await asyncio.sleep(0.2)
    while await scoped.fetchval("SELECT count(*) FROM catalog_items") < len(products):
        assert asyncio.get_running_loop().time() < deadline, "the catalog was not stored in time"
        await asyncio.sleep(0.2)
    answer = await http.delete("/api/v1/users/erased", headers=shop.write_headers)
    assert answer.status_code in (200, 202, 204), answer.text
    answer = await http.patch(
        f"/api/v1/tenants/{shop.tenant_id}/experiments/{experiment}",
        json={"status": "completed"},
        headers=shop.admin_headers,
    )
    assert answer.status_code == 200, answer.text
    # The events' day and today: the same day unless the seeding began just after midnight.
    days = [(now - timedelta(minutes=10)).date(), now.date()]
    await analytics_store.refresh_tenant_days(app_db, tenant_id=shop.tenant_id, days=days)
    # A pending note (an event stored after the refresh) and a usage alert (80% of Sandbox).
    answer = await http.post(
        "/api/v1/events",
        json={"eventType": "product_viewed", "userId": "late", "productId": "p2"},
        headers=shop.write_headers,
    )
    assert answer.status_code == 202, answer.text
    while await scoped.fetchval("SELECT count(*) FROM analytics_pending") < 1:
        assert asyncio.get_running_loop().time() < deadline, "the late event was not stored"
        await asyncio.sleep(0.2)
    requests = PLANS[PlanName.SANDBOX].requests_included
    assert requests is not None
    meter = keys.usage_meter(shop.tenant_id, month_of(now))
    await redis.hset(
        meter, mapping={"live:requests": requests, f"live:requests:{now.day:02d}": requests}
    )
    return len(events) + 1


@pytest.fixture(scope="module")
async def two_shops(
    http: httpx.AsyncClient,
    app_db: asyncpg.Pool,
    db: asyncpg.Pool,
    redis: Redis,
    migrated: Any,
    worker_process: Process,
) -> tuple[TenantContext, TenantContext]:
    """Two tenants with rows in every tenant table, seeded through the api and services."""
    from conftest import make_tenant

    shops = (await make_tenant(db, migrated), await make_tenant(db, migrated))
    for shop in shops:
        await _seed(http, app_db, redis, shop)
    # The metering job spans tenants (usage_daily, usage_alerts), as the platform role.
    await meter_all(app_db, redis, now=datetime.now(UTC))
    return shops


async def _owner_counts(db: asyncpg.Pool, table: str, tenant_id: str) -> tuple[int, int]:
    """(rows of the tenant, rows of everyone) as the owner sees them."""
    row = await db.fetchrow(
        f"SELECT count(*) FILTER (WHERE tenant_id = $1) AS mine, count(*) AS every "
        f"FROM {_quoted(table)}",
        uuid.UUID(tenant_id),
    )
    assert row is not None
    return int(row["mine"]), int(row["every"])


async def test_every_tenant_table_was_seeded_for_both_tenants(
    two_shops: tuple[TenantContext, TenantContext], db: asyncpg.Pool
) -> None:
    empty = []
    for row in await _tenant_tables(db):
        if row["relispartition"]:
            continue  # only the month the events fell in holds them
        for shop in two_shops:
            mine, _ = await _owner_counts(db, row["relname"], shop.tenant_id)
            if mine == 0:
                empty.append(row["relname"])
    # Without rows of both tenants the checks below would prove nothing for that table.
    assert empty == []


async def test_a_raw_select_of_every_tenant_table_in_one_tenants_scope_returns_only_its_rows(
    two_shops: tuple[TenantContext, TenantContext], app_db: asyncpg.Pool, db: asyncpg.Pool
) -> None:
    for row in await _tenant_tables(db):
        table = row["relname"]
        for shop in two_shops:
            mine, every = await _owner_counts(db, table, shop.tenant_id)
            async with tenant_transaction(app_db, shop.tenant_id) as connection:
                seen = await connection.fetch(f"SELECT * FROM {_quoted(table)}")
            assert {str(r["tenant_id"]) for r in seen} <= {shop.tenant_id}, table
            assert len(seen) == mine, table
            if every > mine:
                assert len(seen) < every, table


async def test_outside_any_tenant_scope_the_platform_role_sees_no_tenant_rows(
    two_shops: tuple[TenantContext, TenantContext], app_db: asyncpg.Pool, db: asyncpg.Pool
) -> None:
    for row in await _tenant_tables(db):
        table = row["relname"]
        _, every = await _owner_counts(db, table, two_shops[0].tenant_id)
        # A forgotten scope fails closed: no transaction, and a transaction without a tenant.
        assert await app_db.fetchval(f"SELECT count(*) FROM {_quoted(table)}") == 0, table
        async with app_db.acquire() as connection, connection.transaction():
            assert await connection.fetchval(f"SELECT count(*) FROM {_quoted(table)}") == 0
        # The explicit cross-tenant scope sees them all.
        async with all_tenants(app_db) as connection:
            assert await connection.fetchval(f"SELECT count(*) FROM {_quoted(table)}") == every


async def test_the_scope_ends_with_its_transaction_on_a_pooled_connection(
    two_shops: tuple[TenantContext, TenantContext], app_db: asyncpg.Pool
) -> None:
    shop = two_shops[0]
    async with app_db.acquire() as connection:
        async with connection.transaction():
            await connection.execute("SELECT set_config('app.tenant_id', $1, true)", shop.tenant_id)
            assert await connection.fetchval("SELECT count(*) FROM catalog_items") == 3
        assert await connection.fetchval("SELECT count(*) FROM catalog_items") == 0
        async with connection.transaction():
            await connection.execute("SELECT set_config('app.all_tenants', 'on', true)")
            assert await connection.fetchval("SELECT count(*) FROM catalog_items") >= 6
        assert await connection.fetchval("SELECT count(*) FROM catalog_items") == 0


async def _writable_columns(db: asyncpg.Pool, table: str) -> list[str]:
    rows = await db.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        _quoted(table),
    )
    return [row["attname"] for row in rows]


async def test_writing_another_tenants_row_inside_a_tenants_scope_is_refused_by_the_policy(
    two_shops: tuple[TenantContext, TenantContext], app_db: asyncpg.Pool, db: asyncpg.Pool
) -> None:
    shop, other = two_shops
    for row in await _tenant_tables(db):
        table = row["relname"]
        # One of the other tenant's rows, copied as it is: only its tenant makes it foreign.
        foreign = await db.fetchval(
            f"SELECT row_to_json(t) FROM {_quoted(table)} t WHERE tenant_id = $1 LIMIT 1",
            uuid.UUID(other.tenant_id),
        )
        if foreign is None:
            assert row["relispartition"], table
            continue
        columns = ", ".join(_quoted(c) for c in await _writable_columns(db, table))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with tenant_transaction(app_db, shop.tenant_id) as connection:
                await connection.execute(
                    f"INSERT INTO {_quoted(table)} ({columns}) SELECT {columns} "
                    f"FROM json_populate_record(NULL::{_quoted(table)}, $1::json)",
                    foreign,
                )
        # Nor can a row of its own be handed to the other tenant, or the other's be touched.
        async with tenant_transaction(app_db, shop.tenant_id) as connection:
            changed = await connection.execute(
                f"UPDATE {_quoted(table)} SET tenant_id = tenant_id WHERE tenant_id = $1",
                uuid.UUID(other.tenant_id),
            )
            assert changed.split()[-1] == "0", table
            deleted = await connection.execute(
                f"DELETE FROM {_quoted(table)} WHERE tenant_id = $1", uuid.UUID(other.tenant_id)
            )
            assert deleted.split()[-1] == "0", table
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(app_db, shop.tenant_id) as connection:
            await connection.execute(
                "UPDATE widget_configs SET tenant_id = $1 WHERE tenant_id = $2",
                uuid.UUID(other.tenant_id),
                uuid.UUID(shop.tenant_id),
            )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM widget_configs WHERE tenant_id = $1", uuid.UUID(shop.tenant_id)
        )
        == 1
    )


async def test_a_tenant_id_that_is_not_a_uuid_scopes_to_no_tenant_instead_of_failing(
    two_shops: tuple[TenantContext, TenantContext], app_db: asyncpg.Pool
) -> None:
    # Ids from URLs reach some queries as text; such a scope sees nothing and raises nothing.
    for bogus in ("not-a-uuid", "", "'; SELECT 1; --"):
        async with tenant_transaction(app_db, bogus) as connection:
            assert await connection.fetchval("SELECT count(*) FROM catalog_items") == 0
        assert await in_tenant(app_db, bogus).fetchval("SELECT count(*) FROM events") == 0
