"""Widget configurations in PostgreSQL and their Redis projection, read on the hot path."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain import cursors
from domain.errors import Conflict, Unavailable
from store import keys
from store.db import in_tenant, tenant_transaction

_COLUMNS = (
    "placement_id, layout, columns, show_price, show_rating, cta_text, max_items, theme, "
    "strategy, created_at, updated_at"
)


class WidgetExists(Conflict):
    """The placement already has a configuration (HTTP 409)."""


def _iso(value: datetime) -> str:
    # One fixed format (always microseconds) so that timestamps also compare as strings.
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def widget_config_from_row(row: asyncpg.Record) -> dict[str, Any]:
    """The API shape of a widget_configs row: the config plus createdAt and updatedAt."""
    theme = row["theme"] or {}
    return {
        "placementId": row["placement_id"],
        "layout": row["layout"],
        "columns": row["columns"],
        "showPrice": row["show_price"],
        "showRating": row["show_rating"],
        "ctaText": row["cta_text"],
        "maxItems": row["max_items"],
        "theme": {
            "primaryColor": theme.get("primaryColor"),
            "fontFamily": theme.get("fontFamily"),
        },
        "strategy": row["strategy"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
    }


def _projection(config: dict[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


async def _publish(redis: Redis, *, tenant_id: str, config: dict[str, Any]) -> None:
    # Called inside the PostgreSQL transaction that holds the row lock, so two changes of one
    # placement publish in the order they commit; a Redis failure rolls the change back.
    try:
        await redis.set(keys.widget_config(tenant_id, config["placementId"]), _projection(config))
    except (RedisError, OSError) as exc:
        raise Unavailable("The widget store is unavailable; nothing was changed.") from exc


async def _unpublish(redis: Redis, *, tenant_id: str, placement_id: str) -> None:
    try:
        await redis.delete(keys.widget_config(tenant_id, placement_id))
    except (RedisError, OSError) as exc:
        raise Unavailable("The widget store is unavailable; nothing was changed.") from exc


def _values(config: dict[str, Any]) -> tuple[Any, ...]:
    return (
        config["layout"],
        config["columns"],
        config["showPrice"],
        config["showRating"],
        config["ctaText"],
        config["maxItems"],
        {
            "primaryColor": config["theme"]["primaryColor"],
            "fontFamily": config["theme"]["fontFamily"],
        },
        config["strategy"],
    )


async def create_widget(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Store a new placement's config (complete, validated) and project it; WidgetExists if
    the placement already has one."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            "INSERT INTO widget_configs (tenant_id, placement_id, layout, columns, show_price, "
            "show_rating, cta_text, max_items, theme, strategy) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            f"ON CONFLICT (tenant_id, placement_id) DO NOTHING RETURNING {_COLUMNS}",
            tenant_id,
            config["placementId"],
            *_values(config),
        )
        if row is None:
            raise WidgetExists(f"Placement {config['placementId']!r} already has a widget config.")
        stored = widget_config_from_row(row)
        await _publish(redis, tenant_id=tenant_id, config=stored)
    return stored


async def replace_widget(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, config: dict[str, Any]
) -> dict[str, Any] | None:
    """Replace a placement's config and re-project it; None when the placement has none."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            "UPDATE widget_configs SET layout = $3, columns = $4, show_price = $5, "
            "show_rating = $6, cta_text = $7, max_items = $8, theme = $9, strategy = $10, "
            # clock_timestamp: taken after the row lock, so later writers get later stamps.
            "updated_at = clock_timestamp() "
            f"WHERE tenant_id = $1 AND placement_id = $2 RETURNING {_COLUMNS}",
            tenant_id,
            config["placementId"],
            *_values(config),
        )
        if row is None:
            return None
        stored = widget_config_from_row(row)
        await _publish(redis, tenant_id=tenant_id, config=stored)
    return stored


async def delete_widget(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, placement_id: str
) -> bool:
    """Delete a placement's config and its projection; False when it had none."""
    async with tenant_transaction(pool, tenant_id) as conn:
        deleted = await conn.fetchval(
            "DELETE FROM widget_configs WHERE tenant_id = $1 AND placement_id = $2 "
            "RETURNING placement_id",
            tenant_id,
            placement_id,
        )
        if deleted is None:
            return False
        await _unpublish(redis, tenant_id=tenant_id, placement_id=placement_id)
    return True


async def get_widget(
    pool: asyncpg.Pool, *, tenant_id: str, placement_id: str
) -> dict[str, Any] | None:
    """A placement's config from PostgreSQL, or None."""
    row = await in_tenant(pool, tenant_id).fetchrow(
        f"SELECT {_COLUMNS} FROM widget_configs WHERE tenant_id = $1 AND placement_id = $2",
        tenant_id,
        placement_id,
    )
    return None if row is None else widget_config_from_row(row)


WIDGETS_CURSOR = "widgets"


def _encode_cursor(placement_id: str) -> str:
    return cursors.encode_cursor(WIDGETS_CURSOR, placement_id)


def decode_widget_cursor(cursor: str) -> str | None:
    """The placement id a list cursor points after, or None when the cursor is not one of ours
    (the format before domain.cursors, the bare id, is still read: clients may hold one)."""
    found = cursors.decode_cursor(cursor, WIDGETS_CURSOR, arity=1)
    if found is not None:
        return found[0]
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


async def list_widgets(
    pool: asyncpg.Pool, *, tenant_id: str, limit: int, after: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's configs by placement id, and the cursor of the next page."""
    rows = await in_tenant(pool, tenant_id).fetch(
        f"SELECT {_COLUMNS} FROM widget_configs WHERE tenant_id = $1 "
        "AND ($2::text IS NULL OR placement_id > $2) ORDER BY placement_id LIMIT $3",
        tenant_id,
        after,
        limit + 1,
    )
    page = [widget_config_from_row(row) for row in rows[:limit]]
    next_cursor = _encode_cursor(page[-1]["placementId"]) if len(rows) > limit else None
    return page, next_cursor


async def read_widget_projection(
    redis: Redis, *, tenant_id: str, placement_id: str
) -> dict[str, Any] | None:
    """The projected config of a placement (one GET, no PostgreSQL), or None when absent."""
    raw = await redis.get(keys.widget_config(tenant_id, placement_id))
    return None if raw is None else dict(json.loads(raw))


async def load_public_widget(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, placement_id: str
) -> dict[str, Any] | None:
    """A placement's config from the projection; on a miss from PostgreSQL, re-projected."""
    try:
        projected = await read_widget_projection(
            redis, tenant_id=tenant_id, placement_id=placement_id
        )
    except (RedisError, OSError):
        # Projections are rebuildable; PostgreSQL still knows the answer.
        return await get_widget(pool, tenant_id=tenant_id, placement_id=placement_id)
    if projected is not None:
        return projected
    async with tenant_transaction(pool, tenant_id) as conn:
        # FOR SHARE holds off a concurrent change or delete until the projection is written,
        # so a stale config can never be re-projected over a newer one.
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM widget_configs "
            "WHERE tenant_id = $1 AND placement_id = $2 FOR SHARE",
            tenant_id,
            placement_id,
        )
        if row is None:
            return None
        config = widget_config_from_row(row)
        try:
            await redis.set(
                keys.widget_config(tenant_id, placement_id), _projection(config), nx=True
            )
        except (RedisError, OSError):
            pass  # answering matters more than re-projecting; the next miss tries again
    return config


async def reproject_widgets(pool: asyncpg.Pool, redis: Redis, *, tenant_id: str) -> int:
    """Write every config of the tenant to Redis again (after a Redis loss); how many."""
    async with tenant_transaction(pool, tenant_id) as conn:
        # FOR SHARE: a change committing meanwhile would otherwise be overwritten by this copy.
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM widget_configs WHERE tenant_id = $1 FOR SHARE", tenant_id
        )
        if rows:
            async with redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    config = widget_config_from_row(row)
                    pipe.set(
                        keys.widget_config(tenant_id, row["placement_id"]), _projection(config)
                    )
                await pipe.execute()
    return len(rows)
