"""HTTP routes of plans and usage: a tenant's metered usage of a month (JSON and CSV), the plan
table, and the operators' plan change."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import Field
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, text

from api.blueprints.operations import require_operator
from api.openapi import document
from api.security import owned_tenant, require_admin
from api.validation import ApiModel, parse_body, parse_query
from domain import usage as rules
from domain.errors import FieldError, NotFound, Unavailable, ValidationFailed
from domain.plans import PLANS, PlanName
from store import tenants as tenant_store
from store import usage as usage_store

bp = Blueprint("usage", url_prefix="/api/v1")


class UsageQuery(ApiModel):
    """Which month (UTC); the current one by default."""

    month: str | None = Field(
        default=None, json_schema_extra={"pattern": rules.MONTH_PATTERN}, description="YYYY-MM"
    )


class UsageExportQuery(UsageQuery):
    """Which month, and the format (CSV only)."""

    format: Literal["csv"] = "csv"


class MetricPair(ApiModel):
    """A figure per metric (None: no allowance, custom plan)."""

    events: float | int | None
    recommendation_requests: float | int | None


class OverageRead(ApiModel):
    """Usage past the allowances of a paid plan, and its price (USD, pro rata per million)."""

    events: int
    recommendation_requests: int
    amount_usd: float


class DayUsageRead(ApiModel):
    """One UTC day's metered usage."""

    day: date
    events: int
    recommendation_requests: int
    test_events: int
    test_recommendation_requests: int


class AlertRead(ApiModel):
    """An allowance threshold reached this month (each one once per month)."""

    environment: Literal["live", "test"]
    metric: Literal["events", "recommendationRequests"]
    threshold: Literal[80, 100]
    used: int
    included: int
    created_at: datetime | None


class TestUsageRead(ApiModel):
    """The test keys' usage: always on the Sandbox plan's limits, never billed."""

    plan: str
    events: int
    recommendation_requests: int
    allowances: MetricPair
    share_used: MetricPair
    writes_refused: bool


class UsageRead(ApiModel):
    """A tenant's metered usage of one month against its plan."""

    plan: str
    plan_title: str
    month: str
    events: int = Field(description="Events accepted after dedupe (rows stored), live keys")
    recommendation_requests: int = Field(description="Recommendation requests answered (200)")
    allowances: MetricPair
    share_used: MetricPair = Field(description="used / included, 1.0 = 100%")
    overage: OverageRead
    writes_refused: bool = Field(
        description="Past the events allowance of a plan without overage: event writes get "
        "429 quota_exceeded (reads keep working)"
    )
    alerts: list[AlertRead]
    test: TestUsageRead
    days: list[DayUsageRead]


class PlanRead(ApiModel):
    """One plan of the table the server enforces."""

    name: str
    title: str
    monthly_price_usd: int | None
    events_included: int | None
    requests_included: int | None
    overage_per_million_events_usd: int | None
    overage_per_million_requests_usd: int | None
    max_tenants: int | None
    notes: str


class PlanList(ApiModel):
    """Every plan."""

    data: list[PlanRead]


class PlanChange(ApiModel):
    """Body of the operators' plan change."""

    plan: Literal["sandbox", "starter", "growth", "scale", "enterprise"]


class TenantPlanRead(ApiModel):
    """A tenant's plan after a change."""

    tenant_id: str
    plan: str


def _month(query: UsageQuery) -> date:
    if query.month is None:
        now = datetime.now(UTC)
        return date(now.year, now.month, 1)
    first = rules.parse_month(query.month)
    if first is None:
        raise ValidationFailed(
            "month must be YYYY-MM", errors=[FieldError("month", "must be YYYY-MM, e.g. 2026-12")]
        )
    return first


def _pair(events: Any, requests: Any) -> dict[str, Any]:
    return {"events": events, "recommendationRequests": requests}


def _shares(plan: Any, used: dict[str, int]) -> dict[str, Any]:
    return _pair(
        rules.share_used(used[rules.EVENTS], rules.included(plan, rules.EVENTS)),
        rules.share_used(used[rules.REQUESTS], rules.included(plan, rules.REQUESTS)),
    )


def _refused(plan: Any, events: int) -> bool:
    quota = rules.write_quota(plan)
    return quota is not None and events >= quota


async def _usage(request: Request, tenant: Any, first: date) -> dict[str, Any]:
    tenant_id = str(tenant["id"])
    try:
        days = await usage_store.month_usage(
            request.app.ctx.db, request.app.ctx.redis, tenant_id=tenant_id, first=first
        )
    except OSError as exc:
        raise Unavailable("Usage cannot be read right now; retry shortly.") from exc
    alerts = await usage_store.month_alerts(request.app.ctx.db, tenant_id=tenant_id, first=first)
    totals = usage_store.month_totals(days)
    live, test = totals[rules.LIVE], totals[rules.TEST]
    plan = rules.plan_named(tenant["plan"])
    sandbox = rules.plan_for(tenant_plan=tenant["plan"], environment=rules.TEST)
    return {
        "plan": plan.name.value,
        "planTitle": plan.title,
        "month": f"{first:%Y-%m}",
        "events": live[rules.EVENTS],
        "recommendationRequests": live[rules.REQUESTS],
        "allowances": _pair(plan.events_included, plan.requests_included),
        "shareUsed": _shares(plan, live),
        "overage": rules.overage(
            plan, events=live[rules.EVENTS], requests=live[rules.REQUESTS]
        ).to_dict(),
        "writesRefused": _refused(plan, live[rules.EVENTS]),
        "alerts": [a.to_dict() for a in alerts],
        "test": {
            "plan": sandbox.name.value,
            "events": test[rules.EVENTS],
            "recommendationRequests": test[rules.REQUESTS],
            "allowances": _pair(sandbox.events_included, sandbox.requests_included),
            "shareUsed": _shares(sandbox, test),
            "writesRefused": _refused(sandbox, test[rules.EVENTS]),
        },
        "days": [d.to_dict() for d in days],
    }


@bp.get("/tenants/<tenant_id:str>/usage")
@document(
    summary="A tenant's metered usage of a month against its plan",
    tags=["usage"],
    query=UsageQuery,
    responses={200: UsageRead},
    security="bearer",
)
@require_admin
async def get_usage(request: Request, tenant_id: str) -> HTTPResponse:
    """Events and recommendation requests per day and in total, allowances, overage, alerts."""
    tenant = await owned_tenant(request, tenant_id)
    first = _month(parse_query(request, UsageQuery))
    return json(await _usage(request, tenant, first))


CSV_COLUMNS = (
    "day",
    "events",
    "recommendation_requests",
    "test_events",
    "test_recommendation_requests",
)


@bp.get("/tenants/<tenant_id:str>/usage/export")
@document(
    summary="A tenant's metered usage of a month as CSV, one row per UTC day",
    tags=["usage"],
    query=UsageExportQuery,
    responses={200: None},
    security="bearer",
    content_type="text/csv",
)
@require_admin
async def export_usage(request: Request, tenant_id: str) -> HTTPResponse:
    """A header line, one row per day of the month, and a total row."""
    tenant = await owned_tenant(request, tenant_id)
    first = _month(parse_query(request, UsageExportQuery))
    days = await usage_store.month_usage(
        request.app.ctx.db, request.app.ctx.redis, tenant_id=str(tenant["id"]), first=first
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for day in days:
        writer.writerow(
            [
                day.day.isoformat(),
                day.events,
                day.recommendation_requests,
                day.test_events,
                day.test_recommendation_requests,
            ]
        )
    writer.writerow(
        [
            "total",
            sum(d.events for d in days),
            sum(d.recommendation_requests for d in days),
            sum(d.test_events for d in days),
            sum(d.test_recommendation_requests for d in days),
        ]
    )
    name = f"usage-{tenant['id']}-{first:%Y-%m}.csv"
    return text(
        buffer.getvalue(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def plan_dict(name: PlanName) -> dict[str, Any]:
    """One plan in the API's camelCase form."""
    plan = PLANS[name]
    return {
        "name": plan.name.value,
        "title": plan.title,
        "monthlyPriceUsd": plan.monthly_price_usd,
        "eventsIncluded": plan.events_included,
        "requestsIncluded": plan.requests_included,
        "overagePerMillionEventsUsd": plan.overage_per_million_events_usd,
        "overagePerMillionRequestsUsd": plan.overage_per_million_requests_usd,
        "maxTenants": plan.max_tenants,
        "notes": plan.notes,
    }


@bp.get("/plans")
@document(
    summary="The plans and what each includes (the table the server enforces)",
    tags=["usage"],
    responses={200: PlanList},
)
async def list_plans(request: Request) -> HTTPResponse:
    """Every plan, cheapest first."""
    return json({"data": [plan_dict(name) for name in PLANS]})


@bp.put("/ops/tenants/<tenant_id:str>/plan")
@document(
    summary="Move a tenant to another plan (operator role only)",
    tags=["operations"],
    body=PlanChange,
    responses={200: TenantPlanRead},
    security="bearer",
)
@require_operator
async def change_plan(request: Request, tenant_id: str) -> HTTPResponse:
    """Set any tenant's plan; its keys pick the new limits up at once."""
    body = parse_body(request, PlanChange)
    changed = await usage_store.set_plan(
        request.app.ctx.db, tenant_id=tenant_id, plan=PlanName(body.plan)
    )
    if not changed:
        raise NotFound("No such tenant.")
    # The api workers cache each key with its tenant's plan: the epoch makes them reload it.
    await tenant_store.bump_auth_epoch(request.app.ctx.redis, tenant_id=tenant_id)
    return json({"tenantId": tenant_id, "plan": body.plan})
