"""The catalog in PostgreSQL and its Redis projections (available set, cards, cached-reco index).

Every write follows one order: the PostgreSQL statement, then the Redis projections, then the
commit. The projections are written while the changed rows are still locked, so two writers of
one product reach Redis in the same order as they reach PostgreSQL.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from redis.asyncio import Redis

from domain.catalog import CatalogItem, build_card
from store import keys
from store.db import in_tenant, scope_to_tenant, tenant_transaction

# How long one queued content-model refresh covers further catalog changes of the tenant.
CONTENT_REFRESH_WINDOW_SECONDS = 3

_RETURNING = (
    "product_id, name, category, price, currency, image_url, url, description, attributes, "
    "available, created_at, updated_at"
)
_SET_ALL = """
    name = EXCLUDED.name, category = EXCLUDED.category, price = EXCLUDED.price,
    currency = EXCLUDED.currency, image_url = EXCLUDED.image_url, url = EXCLUDED.url,
    description = EXCLUDED.description, attributes = EXCLUDED.attributes,
    available = EXCLUDED.available, updated_at = now()
"""
_UPSERT_ONE = f"""
INSERT INTO catalog_items (tenant_id, product_id, name, category, price, currency, image_url,
                           url, description, attributes, available)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (tenant_id, product_id) DO UPDATE SET {_SET_ALL}
RETURNING {_RETURNING}, (xmax = 0) AS created
"""
_UPSERT_MANY = f"""
INSERT INTO catalog_items (tenant_id, product_id, name, category, price, currency, image_url,
                           url, description, attributes, available)
SELECT $1, p, n, c, pr, cu, iu, u, d, a::jsonb, av
FROM unnest($2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::bool[])
     AS t(p, n, c, pr, cu, iu, u, d, a, av)
ON CONFLICT (tenant_id, product_id) DO UPDATE SET {_SET_ALL}
RETURNING product_id, name, category, price, currency, image_url, url, available
"""
_STAGE_COLUMNS = (
    "product_id",
    "name",
    "category",
    "price",
    "currency",
    "image_url",
    "url",
    "description",
    "attributes",
    "available",
)
_UPSERT_STAGED = f"""
INSERT INTO catalog_items (tenant_id, product_id, name, category, price, currency, image_url,
                           url, description, attributes, available)
SELECT $1, product_id, name, category, price, currency, image_url, url, description,
       attributes::jsonb, available
FROM catalog_import_stage
ON CONFLICT (tenant_id, product_id) DO UPDATE SET {_SET_ALL}
RETURNING product_id, name, category, price, currency, image_url, url, available
"""


def item_out(row: Any) -> dict[str, Any]:
    """A catalog row as the API's item JSON."""
    return {
        "productId": row["product_id"],
        "name": row["name"],
        "category": row["category"],
        "price": float(row["price"]),
        "currency": row["currency"],
        "imageUrl": row["image_url"],
        "url": row["url"],
        "description": row["description"],
        "attributes": row["attributes"],
        "available": row["available"],
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["updated_at"].isoformat(),
    }


def _card_json(row: Any) -> bytes:
    card = build_card(
        name=row["name"],
        price=row["price"],
        currency=row["currency"],
        image_url=row["image_url"],
        url=row["url"],
        category=row["category"],
        available=row["available"],
    )
    return json.dumps(card, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _item_args(item: CatalogItem) -> tuple[Any, ...]:
    return (
        item.product_id,
        item.name,
        item.category,
        item.price,
        item.currency,
        item.image_url,
        item.url,
        item.description,
        item.attributes,
        item.available,
    )


async def project_rows(redis: Redis, *, tenant_id: str, rows: Sequence[Any]) -> None:
    """Write the cards and availability of `rows`; cached answers of the tenant go stale."""
    if not rows:
        return
    cards_key = keys.catalog_cards(tenant_id)
    available_key = keys.catalog_available(tenant_id)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(cards_key, mapping={row["product_id"]: _card_json(row) for row in rows})
    available = [row["product_id"] for row in rows if row["available"]]
    unavailable = [row["product_id"] for row in rows if not row["available"]]
    if available:
        pipe.sadd(available_key, *available)
    if unavailable:
        pipe.srem(available_key, *unavailable)
    # After the cards: an answer computed from the old cards carries the old stamp.
    pipe.incr(keys.serving_stamp(tenant_id))
    await pipe.execute()


async def drop_projections(redis: Redis, *, tenant_id: str, product_ids: Sequence[str]) -> None:
    """Forget deleted products (card, availability); cached answers of the tenant go stale."""
    if not product_ids:
        return
    pipe = redis.pipeline(transaction=False)
    pipe.hdel(keys.catalog_cards(tenant_id), *product_ids)
    pipe.srem(keys.catalog_available(tenant_id), *product_ids)
    pipe.incr(keys.serving_stamp(tenant_id))
    await pipe.execute()


async def claim_content_refresh(
    redis: Redis, *, tenant_id: str, window_seconds: int = CONTENT_REFRESH_WINDOW_SECONDS
) -> bool:
    """True for the first catalog change of the tenant in a window: the caller then queues one
    refresh (delayed to the window's end, so that it sees every change of the window)."""
    claimed = await redis.set(
        keys.content_refresh_pending(tenant_id), str(time.time()), nx=True, ex=window_seconds
    )
    return bool(claimed)


async def release_content_refresh(redis: Redis, *, tenant_id: str) -> None:
    """Give up a claimed refresh window (the refresh could not be queued)."""
    await redis.delete(keys.content_refresh_pending(tenant_id))


async def mark_content_model_dirty(redis: Redis, *, tenant_id: str) -> None:
    """Record that the tenant's content model is older than its catalog."""
    await redis.set(keys.content_model_dirty(tenant_id), str(time.time()))


async def upsert_item(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, item: CatalogItem
) -> tuple[dict[str, Any], bool]:
    """Create or update one product and its projections; (item JSON, created)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(_UPSERT_ONE, tenant_id, *_item_args(item))
        assert row is not None
        await project_rows(redis, tenant_id=tenant_id, rows=[row])
    return item_out(row), bool(row["created"])


async def replace_item(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, item: CatalogItem
) -> dict[str, Any] | None:
    """Replace every field of an existing product (omitted ones take their defaults); None when
    the tenant has no such product."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""
            UPDATE catalog_items SET name = $3, category = $4, price = $5, currency = $6,
                   image_url = $7, url = $8, description = $9, attributes = $10,
                   available = $11, updated_at = now()
            WHERE tenant_id = $1 AND product_id = $2
            RETURNING {_RETURNING}
            """,
            tenant_id,
            *_item_args(item),
        )
        if row is None:
            return None
        await project_rows(redis, tenant_id=tenant_id, rows=[row])
    return item_out(row)


async def delete_item(pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, product_id: str) -> bool:
    """Delete one product and its projections; False when the tenant has no such product."""
    async with tenant_transaction(pool, tenant_id) as conn:
        deleted = await conn.fetchval(
            "DELETE FROM catalog_items WHERE tenant_id = $1 AND product_id = $2 "
            "RETURNING product_id",
            tenant_id,
            product_id,
        )
        if deleted is None:
            return False
        await drop_projections(redis, tenant_id=tenant_id, product_ids=[deleted])
    return True


async def get_item(pool: asyncpg.Pool, *, tenant_id: str, product_id: str) -> dict[str, Any] | None:
    """One product of the tenant as item JSON, or None."""
    row = await in_tenant(pool, tenant_id).fetchrow(
        f"SELECT {_RETURNING} FROM catalog_items WHERE tenant_id = $1 AND product_id = $2",
        tenant_id,
        product_id,
    )
    return item_out(row) if row is not None else None


async def upsert_items(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, items: Sequence[CatalogItem]
) -> int:
    """Create or update many products (distinct ids) in one statement, then their projections.
    Idempotent: applying the same items twice leaves the same state."""
    if not items:
        return 0
    columns: list[list[Any]] = [[] for _ in range(10)]
    for item in items:
        for column, value in zip(columns, _item_args(item), strict=True):
            column.append(value)
    # jsonb travels as text through unnest; the statement casts it back.
    columns[8] = [json.dumps(value, ensure_ascii=False) for value in columns[8]]
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await conn.fetch(_UPSERT_MANY, tenant_id, *columns)
        await project_rows(redis, tenant_id=tenant_id, rows=rows)
    return len(rows)


async def import_chunk(
    conn: asyncpg.Connection, redis: Redis, *, tenant_id: str, items: Sequence[CatalogItem]
) -> int:
    """Upsert a large chunk through COPY into a staging table and one INSERT ... ON CONFLICT,
    then project it with pipelines. `items` must have distinct product ids."""
    if not items:
        return 0
    # COPY takes the attributes as JSON text: the same columns as an upsert, attributes encoded.
    records = [
        (*_item_args(item)[:8], json.dumps(item.attributes, ensure_ascii=False), item.available)
        for item in items
    ]
    async with conn.transaction():
        await scope_to_tenant(conn, tenant_id)
        await conn.execute(
            """
            CREATE TEMP TABLE IF NOT EXISTS catalog_import_stage (
                product_id text, name text, category text, price numeric, currency text,
                image_url text, url text, description text, attributes text, available boolean
            ) ON COMMIT DELETE ROWS
            """
        )
        await conn.copy_records_to_table(
            "catalog_import_stage", records=records, columns=_STAGE_COLUMNS
        )
        rows = await conn.fetch(_UPSERT_STAGED, tenant_id)
        await project_rows(redis, tenant_id=tenant_id, rows=rows)
    return len(rows)


async def rebuild_projections(pool: asyncpg.Pool, redis: Redis, *, tenant_id: str) -> int:
    """Rebuild the tenant's cards and available set from PostgreSQL into new keys, then swap them
    in at once (readers never see a half-built set). Returns the number of products."""
    cards_key = keys.catalog_cards(tenant_id)
    available_key = keys.catalog_available(tenant_id)
    suffix = f":rebuild:{time.time_ns()}"
    fresh_cards, fresh_available = cards_key + suffix, available_key + suffix
    total = total_available = 0
    async with tenant_transaction(pool, tenant_id) as conn:
        batch: list[Any] = []
        async for row in conn.cursor(
            "SELECT product_id, name, category, price, currency, image_url, url, available "
            "FROM catalog_items WHERE tenant_id = $1",
            tenant_id,
        ):
            batch.append(row)
            if len(batch) >= 5000:
                total_available += await _write_rebuild_batch(
                    redis, fresh_cards, fresh_available, batch
                )
                total += len(batch)
                batch = []
        total_available += await _write_rebuild_batch(redis, fresh_cards, fresh_available, batch)
        total += len(batch)
    pipe = redis.pipeline(transaction=True)
    pipe.delete(cards_key, available_key)
    if total:
        pipe.rename(fresh_cards, cards_key)
    if total_available:
        pipe.rename(fresh_available, available_key)
    pipe.incr(keys.serving_stamp(tenant_id))
    await pipe.execute()
    return total


async def _write_rebuild_batch(
    redis: Redis, cards_key: str, available_key: str, rows: Sequence[Any]
) -> int:
    if not rows:
        return 0
    pipe = redis.pipeline(transaction=False)
    pipe.hset(cards_key, mapping={row["product_id"]: _card_json(row) for row in rows})
    available = [row["product_id"] for row in rows if row["available"]]
    if available:
        pipe.sadd(available_key, *available)
    await pipe.execute()
    return len(available)


async def list_items(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    q: str | None = None,
    category: str | None = None,
    available: bool | None = None,
    limit: int = 20,
    after: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's products in product-id order and the id the next page starts
    after (None on the last page). Keyset paging: inserts never shift or repeat items."""
    rows = await in_tenant(pool, tenant_id).fetch(
        f"""
        SELECT {_RETURNING} FROM catalog_items
        WHERE tenant_id = $1
          AND ($2::text IS NULL OR product_id > $2)
          AND ($3::text IS NULL OR search_vector @@ websearch_to_tsquery('simple', $3))
          AND ($4::text IS NULL OR category = $4)
          AND ($5::boolean IS NULL OR available = $5)
        ORDER BY product_id
        LIMIT $6
        """,
        tenant_id,
        after,
        q,
        category,
        available,
        limit + 1,
    )
    page = [item_out(row) for row in rows[:limit]]
    next_after = page[-1]["productId"] if len(rows) > limit else None
    return page, next_after


async def interaction_counts(
    pool: asyncpg.Pool, *, tenant_id: str, product_ids: Sequence[str], days: int = 30
) -> dict[str, dict[str, int]]:
    """Views, clicks (product or recommendation clicks) and purchases of each product in the
    last `days` days, zero when none, in one grouped query."""
    counts = {pid: {"views": 0, "clicks": 0, "purchases": 0} for pid in product_ids}
    if not product_ids:
        return counts
    rows = await in_tenant(pool, tenant_id).fetch(
        """
        SELECT product_id,
               count(*) FILTER (WHERE event_type = 'product_viewed') AS views,
               count(*) FILTER (WHERE event_type IN ('product_clicked', 'recommendation_clicked'))
                   AS clicks,
               count(*) FILTER (WHERE event_type = 'purchase') AS purchases
        FROM events
        WHERE tenant_id = $1 AND product_id = ANY($2::text[])
          AND occurred_at >= now() - make_interval(days => $3)
        GROUP BY product_id
        """,
        tenant_id,
        list(product_ids),
        days,
    )
    for row in rows:
        counts[row["product_id"]] = {
            "views": int(row["views"]),
            "clicks": int(row["clicks"]),
            "purchases": int(row["purchases"]),
        }
    return counts


async def tenant_config(pool: asyncpg.Pool, *, tenant_id: str) -> dict[str, Any] | None:
    """The config of the tenant when it exists and is not deleted, else None."""
    try:
        tenant_uuid = uuid.UUID(tenant_id)
    except ValueError:
        return None
    row = await pool.fetchrow(
        "SELECT config FROM tenants WHERE id = $1 AND deleted_at IS NULL", tenant_uuid
    )
    return dict(row["config"] or {}) if row is not None else None
