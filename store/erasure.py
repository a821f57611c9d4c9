"""Right to erasure: remove everything of one shopper of a tenant from PostgreSQL and Redis.

Aggregates stay: daily analytics, real-time counters, trending and day-level distinct-user
bitmaps are counts that name nobody. Rows that feed aggregates but name the shopper (revenue
attributions, the shopper's number in the distinct-user bitmaps) are kept under an unlinkable
pseudonym, so past figures do not change and the number is never handed to someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from domain.events import dedupe_digest
from domain.strategies.registry import served_lists
from store import keys
from store.counters import day_of
from store.db import tenant_transaction

SCAN_COUNT = 1000


@dataclass
class ErasureReport:
    """What one erasure removed (counts only: the report names nobody)."""

    events: int = 0
    event_ids: int = 0
    experiment_metrics: int = 0
    attributions_pseudonymised: int = 0
    user_numbers_pseudonymised: int = 0
    redis_keys: int = 0
    redis_members: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts, in the API's camelCase."""
        return {
            "events": self.events,
            "eventIds": self.event_ids,
            "experimentMetrics": self.experiment_metrics,
            "attributionsPseudonymised": self.attributions_pseudonymised,
            "userNumbersPseudonymised": self.user_numbers_pseudonymised,
            "redisKeys": self.redis_keys,
            "redisMembers": self.redis_members,
        }


def user_digest(tenant_id: str, user_id: str, *, secret: str) -> str:
    """A keyed digest naming the shopper in the audit trail (not reversible without the
    secret, and no two tenants' shoppers share one)."""
    material = f"{tenant_id}\n{user_id}".encode()
    return hmac.new(secret.encode(), b"erasure:" + material, hashlib.sha256).hexdigest()


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


async def erase_user_rows(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    user_id: str,
    digest: str,
    api_key_id: str | None,
    request_id: str | None,
    report: ErasureReport,
    audit: bool = True,
) -> list[asyncpg.Record]:
    """Delete or pseudonymise the shopper's rows in one transaction and write the audit row;
    the deleted events (for their Redis guards)."""
    pseudonym = f"erased:{uuid.uuid4().hex}"
    async with tenant_transaction(pool, tenant_id) as connection:
        events = await connection.fetch(
            "DELETE FROM events WHERE tenant_id = $1 AND user_id = $2 "
            "RETURNING event_id, event_type, product_id, occurred_at, received_at",
            tenant_id,
            user_id,
        )
        report.events += len(events)
        if events:
            removed = await connection.execute(
                "DELETE FROM event_ids WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
                tenant_id,
                [row["event_id"] for row in events],
            )
            report.event_ids += int(removed.split()[-1])
        removed = await connection.execute(
            "DELETE FROM experiment_user_metrics WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
        )
        report.experiment_metrics += int(removed.split()[-1])
        changed = await connection.execute(
            "UPDATE revenue_attributions SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
            pseudonym,
        )
        report.attributions_pseudonymised += int(changed.split()[-1])
        # The number stays taken (numbers are handed out as max + 1): a bitmap bit of the
        # erased shopper never becomes someone else's.
        changed = await connection.execute(
            "UPDATE analytics_users SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2",
            tenant_id,
            user_id,
            pseudonym,
        )
        report.user_numbers_pseudonymised += int(changed.split()[-1])
        if audit:
            await connection.execute(
                "INSERT INTO user_erasures "
                "(tenant_id, user_digest, api_key_id, request_id, removed) "
                "VALUES ($1, $2, $3, $4, $5::jsonb)",
                tenant_id,
                digest,
                api_key_id,
                request_id,
                report.as_dict(),
            )
    return list(events)


async def erase_user_projections(
    redis: Redis,
    *,
    tenant_id: str,
    user_id: str,
    events: list[asyncpg.Record],
    report: ErasureReport,
) -> None:
    """Remove the shopper's history, purchases, stamps, cached and projected answers, model
    lists and the dedupe guards of their deleted events from Redis."""
    doomed = [
        keys.user_history(tenant_id, user_id),
        keys.user_purchased(tenant_id, user_id),
        keys.user_stamp(tenant_id, user_id),
        keys.user_answers(tenant_id, user_id),
    ]
    answers = _glob_escape(keys.answer_cache(tenant_id, user_id, "")) + "*"
    async for key in redis.scan_iter(match=answers, count=SCAN_COUNT):
        doomed.append(key)
    report.redis_keys += int(await redis.delete(*doomed))
    report.redis_members += int(await redis.srem(keys.touched_users(tenant_id), user_id))
    report.redis_members += int(await redis.srem(keys.answer_readers(tenant_id), user_id))
    # Every list a strategy publishes per user (domain.strategies.registry), in any version.
    for suffix in {lst.suffix for lst in served_lists() if lst.key == "user"}:
        model_lists = _glob_escape(keys.model_prefix(tenant_id)) + "*:" + suffix
        async for key in redis.scan_iter(match=model_lists, count=SCAN_COUNT):
            report.redis_members += int(await redis.hdel(key, user_id))
    if not events:
        return
    pipe = redis.pipeline(transaction=False)
    today = datetime.now(UTC)
    client_id_days = {day_of(today - timedelta(days=n)) for n in range(8)}
    event_ids = [row["event_id"] for row in events]
    for row in events:
        digest = dedupe_digest(
            tenant_id=tenant_id,
            user_id=user_id,
            event_type=row["event_type"],
            product_id=row["product_id"],
            occurred_at=row["occurred_at"],
        )
        pipe.srem(keys.events_seen(tenant_id, day_of(row["occurred_at"])), bytes.fromhex(digest))
        client_id_days.add(day_of(row["received_at"]))
    for day in client_id_days:
        pipe.srem(keys.event_client_ids(tenant_id, day), *event_ids)
    report.redis_members += sum(int(n or 0) for n in await pipe.execute())


async def erase_user(
    pool: asyncpg.Pool,
    redis: Redis,
    *,
    tenant_id: str,
    user_id: str,
    secret: str,
    api_key_id: str | None = None,
    request_id: str | None = None,
    audit: bool = True,
) -> ErasureReport:
    """Erase one shopper of the tenant everywhere; idempotent (a second run removes nothing).
    With `audit`, the erasure and its counts are recorded in `user_erasures`."""
    report = ErasureReport()
    digest = user_digest(tenant_id, user_id, secret=secret)
    events = await erase_user_rows(
        pool,
        tenant_id=tenant_id,
        user_id=user_id,
        digest=digest,
        api_key_id=api_key_id,
        request_id=request_id,
        report=report,
        audit=audit,
    )
    await erase_user_projections(
        redis, tenant_id=tenant_id, user_id=user_id, events=events, report=report
    )
    if not audit:
        return report
    # The audit row was written before Redis was cleaned: complete it with the final counts.
    async with tenant_transaction(pool, tenant_id) as connection:
        await connection.execute(
            "UPDATE user_erasures SET removed = $3::jsonb WHERE tenant_id = $1 AND id = "
            "(SELECT max(id) FROM user_erasures WHERE tenant_id = $1 AND user_digest = $2)",
            tenant_id,
            digest,
            report.as_dict(),
        )
    return report
