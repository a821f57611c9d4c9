"""Metered usage: the Redis meters the hot paths bump, their daily copy in PostgreSQL, the
allowance alerts, and each tenant's plan.

A tenant's meter of one UTC month is one HASH (`keys.usage_meter`) with, per environment
(live / test keys) and metric (events / requests), a month total `live:events` and one field
per day `live:events:05`. Recommendation requests are metered inside the rate-limit call of
GET /recommendations (store.answers.ANSWER_LOOKUP); events inside the worker's guarded
side-effects script, once per row really stored (store.events), so the meter equals a count of
the stored rows. A job copies the meters to `usage_daily` and raises the alerts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from domain import usage as rules
from domain.plans import PLANS, PlanName
from store import keys
from store.db import all_tenants, tenant_transaction

# A month's meter outlives the month long enough for its last copy and the usage page.
METER_TTL_SECONDS = 70 * 24 * 3600
METRIC_FIELDS = {rules.EVENTS: "events", rules.REQUESTS: "requests"}

# The limiter's follow-up (store.ratelimit) that meters the requests it lets through: see
# store.answers.ANSWER_LOOKUP for the key and argument positions.
METER_REQUESTS = f"""
if ARGV[ab + 1] ~= '' then
  local total = redis.call('HINCRBY', KEYS[kb + 1], ARGV[ab + 1], allowed)
  redis.call('HINCRBY', KEYS[kb + 1], ARGV[ab + 2], allowed)
  if total == allowed then redis.call('EXPIRE', KEYS[kb + 1], {METER_TTL_SECONDS}) end
end
"""


def month_of(moment: datetime) -> str:
    """The meter's month bucket (YYYYMM) of a UTC moment."""
    return f"{moment.year:04d}{moment.month:02d}"


def meter_field(environment: str, metric: str, day: int | None = None) -> str:
    """The meter field of an environment's metric: the month total, or one day's."""
    name = f"{environment}:{METRIC_FIELDS[metric]}"
    return name if day is None else f"{name}:{day:02d}"


@dataclass(frozen=True, slots=True)
class Meter:
    """Where one request or event is metered: the tenant's month hash and its two fields."""

    key: str
    total: str
    daily: str


def meter_for(*, tenant_id: str, environment: str, metric: str, now: datetime) -> Meter:
    """The meter of one request or event of the tenant at `now` (UTC)."""
    return Meter(
        keys.usage_meter(tenant_id, month_of(now)),
        meter_field(environment, metric),
        meter_field(environment, metric, now.day),
    )


def event_meter_ops(
    *, tenant_id: str, test: bool, received_at: datetime
) -> list[tuple[str, str, str, str]]:
    """The guarded-script operations (store.events) that meter one stored event, on the day it
    was received (the day its row counts on in SQL)."""
    moment = received_at.astimezone(UTC)
    meter = meter_for(
        tenant_id=tenant_id,
        environment=rules.TEST if test else rules.LIVE,
        metric=rules.EVENTS,
        now=moment,
    )
    return [("hincrby", meter.key, meter.total, "1"), ("hincrby", meter.key, meter.daily, "1")]


async def unmeter(redis: Redis, meter: Meter) -> None:
    """Take back a request metered as it was let through that then did not answer 200."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(meter.key, meter.total, -1)
        pipe.hincrby(meter.key, meter.daily, -1)
        await pipe.execute()


def _number(value: Any) -> int:
    return int(value) if value is not None else 0


@dataclass(frozen=True)
class DayUsage:
    """One day's metered usage."""

    day: date
    events: int = 0
    recommendation_requests: int = 0
    test_events: int = 0
    test_recommendation_requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The API's camelCase form."""
        return {
            "day": self.day.isoformat(),
            "events": self.events,
            "recommendationRequests": self.recommendation_requests,
            "testEvents": self.test_events,
            "testRecommendationRequests": self.test_recommendation_requests,
        }


def days_of_meter(first: date, raw: Mapping[Any, Any]) -> list[DayUsage]:
    """Every day of the month from a meter's HGETALL (absent fields are zero)."""
    fields = {_text(k): int(v) for k, v in raw.items()}

    def get(environment: str, metric: str, day: int) -> int:
        return fields.get(meter_field(environment, metric, day), 0)

    return [
        DayUsage(
            day=day,
            events=get(rules.LIVE, rules.EVENTS, day.day),
            recommendation_requests=get(rules.LIVE, rules.REQUESTS, day.day),
            test_events=get(rules.TEST, rules.EVENTS, day.day),
            test_recommendation_requests=get(rules.TEST, rules.REQUESTS, day.day),
        )
        for day in rules.month_days(first)
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_meters(redis: Redis, *, tenant_ids: Sequence[str], first: date) -> list[dict]:
    """The raw meter hash of each tenant for the month starting at `first` (empty if none)."""
    month = f"{first.year:04d}{first.month:02d}"
    async with redis.pipeline(transaction=False) as pipe:
        for tenant_id in tenant_ids:
            pipe.hgetall(keys.usage_meter(tenant_id, month))
        return list(await pipe.execute())


async def persisted_days(pool: asyncpg.Pool, *, tenant_id: str, first: date) -> list[DayUsage]:
    """The days of the month starting at `first` as last copied to PostgreSQL."""
    days = rules.month_days(first)
    async with tenant_transaction(pool, tenant_id) as connection:
        rows = await connection.fetch(
            "SELECT day, events, recommendation_requests, test_events, "
            "test_recommendation_requests "
            "FROM usage_daily WHERE tenant_id = $1 AND day >= $2 AND day <= $3",
            uuid.UUID(tenant_id),
            days[0],
            days[-1],
        )
    found = {row["day"]: row for row in rows}
    return [
        DayUsage(
            day=day,
            events=_number(found[day]["events"]) if day in found else 0,
            recommendation_requests=(
                _number(found[day]["recommendation_requests"]) if day in found else 0
            ),
            test_events=_number(found[day]["test_events"]) if day in found else 0,
            test_recommendation_requests=(
                _number(found[day]["test_recommendation_requests"]) if day in found else 0
            ),
        )
        for day in days
    ]


async def month_usage(
    pool: asyncpg.Pool, redis: Redis, *, tenant_id: str, first: date
) -> list[DayUsage]:
    """Each day of a month's usage: the live meter while Redis holds it, else the copy."""
    (raw,) = await read_meters(redis, tenant_ids=[tenant_id], first=first)
    if raw:
        return days_of_meter(first, raw)
    return await persisted_days(pool, tenant_id=tenant_id, first=first)


_UPSERT_DAYS = """
INSERT INTO usage_daily (tenant_id, day, events, recommendation_requests, test_events,
                         test_recommendation_requests)
SELECT t.id, d.day, d.events, d.requests, d.test_events, d.test_requests
FROM unnest($1::uuid[], $2::date[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
     AS d(tenant_id, day, events, requests, test_events, test_requests)
JOIN tenants t ON t.id = d.tenant_id
ON CONFLICT (tenant_id, day) DO UPDATE SET
    events = excluded.events,
    recommendation_requests = excluded.recommendation_requests,
    test_events = excluded.test_events,
    test_recommendation_requests = excluded.test_recommendation_requests,
    updated_at = now()
WHERE (usage_daily.events, usage_daily.recommendation_requests, usage_daily.test_events,
       usage_daily.test_recommendation_requests)
      IS DISTINCT FROM (excluded.events, excluded.recommendation_requests,
                        excluded.test_events, excluded.test_recommendation_requests)
"""


async def persist_days(pool: asyncpg.Pool, rows: Iterable[tuple[str, DayUsage]]) -> int:
    """Copy (tenant id, day) usages to `usage_daily`; returns how many rows were written."""
    batch = [(uuid.UUID(t), d) for t, d in rows]
    if not batch:
        return 0
    # The metering job copies many tenants' meters in one statement.
    async with all_tenants(pool) as connection:
        result = await connection.execute(
            _UPSERT_DAYS,
            [t for t, _ in batch],
            [d.day for _, d in batch],
            [d.events for _, d in batch],
            [d.recommendation_requests for _, d in batch],
            [d.test_events for _, d in batch],
            [d.test_recommendation_requests for _, d in batch],
        )
    return int(result.split()[-1])


@dataclass(frozen=True)
class MeteredTenant:
    """A tenant whose usage the job looks at: its plan and owner."""

    tenant_id: str
    name: str
    plan: str
    owner_email: str


async def metered_tenants(pool: asyncpg.Pool) -> list[MeteredTenant]:
    """Every tenant that is not deleted, with its plan and its owner's address."""
    rows = await pool.fetch(
        "SELECT t.id, t.name, t.plan, a.email FROM tenants t JOIN admins a ON a.id = t.owner_id "
        "WHERE t.deleted_at IS NULL ORDER BY t.id"
    )
    return [MeteredTenant(str(row["id"]), row["name"], row["plan"], row["email"]) for row in rows]


def month_totals(days: Sequence[DayUsage]) -> dict[str, dict[str, int]]:
    """A month's totals per environment and metric."""
    return {
        rules.LIVE: {
            rules.EVENTS: sum(d.events for d in days),
            rules.REQUESTS: sum(d.recommendation_requests for d in days),
        },
        rules.TEST: {
            rules.EVENTS: sum(d.test_events for d in days),
            rules.REQUESTS: sum(d.test_recommendation_requests for d in days),
        },
    }


@dataclass(frozen=True)
class Alert:
    """An allowance threshold a tenant reached in a month."""

    environment: str
    metric: str
    threshold: int
    used: int
    included: int
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The API's camelCase form."""
        return {
            "environment": self.environment,
            "metric": self.metric,
            "threshold": self.threshold,
            "used": self.used,
            "included": self.included,
            "createdAt": self.created_at.isoformat() if self.created_at else None,
        }


def due_alerts(*, plan: str, totals: Mapping[str, Mapping[str, int]]) -> list[Alert]:
    """Every threshold the month's totals have reached (live on the tenant's plan, test on the
    test keys' plan)."""
    found = []
    for environment in rules.ENVIRONMENTS:
        applied = rules.plan_for(tenant_plan=plan, environment=environment)
        for metric in rules.METRICS:
            allowance = rules.included(applied, metric)
            used = totals[environment][metric]
            for threshold in rules.thresholds_reached(used, allowance):
                assert allowance is not None
                found.append(Alert(environment, metric, threshold, used, allowance))
    return found


def _alert_mail(tenant: MeteredTenant, alert: Alert, month: date) -> tuple[str, str]:
    applied = rules.plan_for(tenant_plan=tenant.plan, environment=alert.environment)
    what = "events" if alert.metric == rules.EVENTS else "recommendation requests"
    keys_kind = "test keys' " if alert.environment == rules.TEST else ""
    subject = f"RecomEngine: {tenant.name} used {alert.threshold}% of its {what} allowance"
    if alert.threshold >= 100 and rules.write_quota(applied) is not None:
        consequence = (
            "Event writes now get 429 quota_exceeded until the next month or a plan change; "
            "recommendations keep working."
            if alert.metric == rules.EVENTS
            else "Recommendations keep working."
        )
    elif alert.threshold >= 100:
        consequence = "Usage past the allowance is billed as overage on the usage page."
    else:
        consequence = "Nothing changes yet; the usage page shows the figures per day."
    body = (
        f"Your tenant {tenant.name} has used {alert.used:,} of the {alert.included:,} {what} "
        f"included in its {keys_kind}{applied.title} plan for {month:%B %Y} "
        f"({alert.threshold}%).\n\n{consequence}\n"
    )
    return subject, body


async def record_alerts(
    pool: asyncpg.Pool, *, tenant: MeteredTenant, first: date, alerts: Sequence[Alert]
) -> list[int]:
    """Record the alerts not recorded yet this month, each with its mail in the outbox in the
    same transaction; returns the new mails' ids (once per threshold per month)."""
    from store.mail import enqueue_mail

    mail_ids = []
    async with tenant_transaction(pool, tenant.tenant_id) as connection:
        for alert in alerts:
            new = await connection.fetchval(
                "INSERT INTO usage_alerts (tenant_id, month, environment, metric, threshold, "
                "used, included) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT DO NOTHING RETURNING true",
                uuid.UUID(tenant.tenant_id),
                first,
                alert.environment,
                alert.metric,
                alert.threshold,
                alert.used,
                alert.included,
            )
            if new:
                subject, body = _alert_mail(tenant, alert, first)
                mail_ids.append(
                    await enqueue_mail(
                        connection, to_address=tenant.owner_email, subject=subject, body=body
                    )
                )
    return mail_ids


async def month_alerts(pool: asyncpg.Pool, *, tenant_id: str, first: date) -> list[Alert]:
    """The alerts raised for the tenant in the month starting at `first`, oldest first."""
    async with tenant_transaction(pool, tenant_id) as connection:
        rows = await connection.fetch(
            "SELECT environment, metric, threshold, used, included, created_at FROM usage_alerts "
            "WHERE tenant_id = $1 AND month = $2 ORDER BY created_at, metric, threshold",
            uuid.UUID(tenant_id),
            first,
        )
    return [
        Alert(
            row["environment"],
            row["metric"],
            row["threshold"],
            row["used"],
            row["included"],
            row["created_at"],
        )
        for row in rows
    ]


async def meter_all(pool: asyncpg.Pool, redis: Redis, *, now: datetime) -> tuple[int, list[int]]:
    """Copy every tenant's meters of this month (and the last, on its first day) to
    PostgreSQL and raise the alerts now due; returns (rows written, new mail ids)."""
    tenants = await metered_tenants(pool)
    first = date(now.year, now.month, 1)
    months = [first]
    if now.day == 1:
        months.insert(0, date.fromordinal(first.toordinal() - 1).replace(day=1))
    written, mails = 0, []
    for start in range(0, len(tenants), 500):
        chunk = tenants[start : start + 500]
        for month in months:
            raws = await read_meters(redis, tenant_ids=[t.tenant_id for t in chunk], first=month)
            rows: list[tuple[str, DayUsage]] = []
            for tenant, raw in zip(chunk, raws, strict=True):
                if not raw:
                    continue
                days = days_of_meter(month, raw)
                rows.extend((tenant.tenant_id, d) for d in days if d.day <= now.date())
                if month == first:
                    alerts = due_alerts(plan=tenant.plan, totals=month_totals(days))
                    if alerts:
                        mails += await record_alerts(
                            pool, tenant=tenant, first=month, alerts=alerts
                        )
            written += await persist_days(pool, rows)
    return written, mails


async def get_plan(pool: asyncpg.Pool, *, tenant_id: str) -> str | None:
    """The tenant's plan name (None when no such tenant)."""
    try:
        tenant_uuid = uuid.UUID(tenant_id)
    except ValueError:
        return None
    plan = await pool.fetchval(
        "SELECT plan FROM tenants WHERE id = $1 AND deleted_at IS NULL", tenant_uuid
    )
    return None if plan is None else str(plan)


async def set_plan(pool: asyncpg.Pool, *, tenant_id: str, plan: PlanName) -> bool:
    """Move any tenant (an operator's act) to `plan`; False when no such tenant."""
    try:
        tenant_uuid = uuid.UUID(tenant_id)
    except ValueError:
        return False
    assert plan in PLANS
    changed = await pool.fetchval(
        "UPDATE tenants SET plan = $2, updated_at = now() "
        "WHERE id = $1 AND deleted_at IS NULL RETURNING id",
        tenant_uuid,
        plan.value,
    )
    return changed is not None


async def owner_plans(connection: asyncpg.Connection | asyncpg.Pool, *, owner_id: str) -> list[str]:
    """The plans of the admin's tenants that are not deleted."""
    rows = await connection.fetch(
        "SELECT plan FROM tenants WHERE owner_id = $1 AND deleted_at IS NULL", uuid.UUID(owner_id)
    )
    return [row["plan"] for row in rows]
