"""Keeping the analytics aggregates exact between refreshes: every event ingestion stores is
noted as pending for its UTC day in the transaction that stores it, and the refresh that counts
it into its day's aggregates deletes the note in the same snapshot (store.analytics). A
redelivered message stores no event again and so notes none; a transaction that dies notes
none either: no accepted event is counted twice or lost, whatever day it falls on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg


async def note_stored(
    connection: asyncpg.Connection, *, tenant_id: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Note events just inserted (rows with event_id and occurred_at) as pending for their day's
    aggregates; call inside the transaction that inserted them."""
    if not rows:
        return
    await connection.execute(
        """INSERT INTO analytics_pending (tenant_id, day, event_id, occurred_at)
           SELECT $1, (t AT TIME ZONE 'UTC')::date, i, t
           FROM unnest($2::text[], $3::timestamptz[]) AS x(i, t)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        [row["event_id"] for row in rows],
        [row["occurred_at"] for row in rows],
    )


def pending_events(*, tenant: str, start: str, end: str, alias: str = "events") -> str:
    """SQL standing for the `events` rows of the tenant in [start, end) (parameter names) that
    are still pending, for reads that add them to the aggregates."""
    return f"""(SELECT e.* FROM analytics_pending p
               JOIN events e ON e.tenant_id = p.tenant_id AND e.event_id = p.event_id
                            AND e.occurred_at = p.occurred_at
               WHERE p.tenant_id = {tenant} AND p.occurred_at >= {start}
                 AND p.occurred_at < {end}) {alias}"""
