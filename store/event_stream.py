"""The live tail of a tenant's events: what was received after a position, oldest first."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import asyncpg

from store.db import in_tenant

Position = tuple[datetime, str]


def encode_position(received_at: datetime, event_id: str) -> str:
    """An opaque stream position (the SSE id) after one received event."""
    raw = json.dumps([received_at.isoformat(), event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(value: str) -> Position | None:
    """The position an SSE id points after, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        moment, event_id = json.loads(raw)
        parsed = datetime.fromisoformat(moment)
    except (ValueError, TypeError):
        return None
    if parsed.tzinfo is None or not isinstance(event_id, str):
        return None
    return parsed, event_id


async def stream_start(pool: asyncpg.Pool, *, settle_seconds: float = 2.0) -> Position:
    """The position "now": only events received from here on are new (those still settling
    included)."""
    moment = await pool.fetchval("SELECT now() - make_interval(secs => $1)", settle_seconds)
    return moment, ""


async def events_received_after(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    after: Position,
    event_type: str | None = None,
    limit: int,
    settle_seconds: float = 2.0,
) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` events received after `after`, oldest first, and how many more wait.

    Only events received `settle_seconds` ago or earlier: `received_at` is the inserting
    transaction's start, so a row can commit after a later-stamped one; waiting lets such rows
    land before the position moves past them."""
    rows = await in_tenant(pool, tenant_id).fetch(
        """SELECT event_id, event_type, user_id, product_id, session_id, metadata, flags,
                  occurred_at, received_at, count(*) OVER () AS waiting
           FROM events
           WHERE tenant_id = $1 AND (received_at, event_id) > ($2, $3)
             AND received_at <= now() - make_interval(secs => $6)
             AND ($4::text IS NULL OR event_type = $4)
           ORDER BY received_at, event_id
           LIMIT $5""",
        tenant_id,
        after[0],
        after[1],
        event_type,
        limit,
        settle_seconds,
    )
    waiting = int(rows[0]["waiting"]) if rows else 0
    return [dict(r) for r in rows], max(0, waiting - len(rows))
