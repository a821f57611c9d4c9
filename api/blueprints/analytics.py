"""HTTP routes of the analytics area: KPIs, time series, top products and a CSV export per
tenant, and the overview over every tenant of the admin (today from the real-time counters,
past days from the daily aggregates: see store.analytics)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import owned_tenant, require_admin, require_admin_or_api_key
from api.validation import ApiModel, parse_query
from domain import analytics as rules
from domain import holdout
from domain.errors import FieldError, ValidationFailed
from store import analytics as analytics_store

bp = Blueprint("analytics", url_prefix="/api/v1")

Metric = Literal[
    "impressions",
    "clicks",
    "ctr",
    "conversions",
    "conversionRate",
    "revenue",
    "attributedRevenue",
    "events",
    "activeUsers",
    "buyers",
    "purchasesPerUser",
    "revenuePerVisitor",
]
CSV_COLUMNS = ["day", *rules.METRICS]


# A bound of a period as the document states it: an ISO date or a date-time with its zone.
PeriodBound = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"anyOf": [{"format": "date"}, {"format": "date-time"}]},
    ),
]


class PeriodQuery(ApiModel):
    """The period: ISO dates (whole UTC days, `to` included) or date-times with a zone (`to`
    excluded); by default the last 30 UTC days including today; at most 400 days."""

    from_: PeriodBound | None = Field(default=None, alias="from")
    to: PeriodBound | None = None


class OverviewQuery(PeriodQuery):
    """The period, optionally narrowed to the recommendations of one placement and/or strategy:
    then impressions and clicks are theirs, conversions and revenue the purchases attributed
    to their clicks, activeUsers the users who saw or clicked them, events = impressions +
    clicks."""

    placement_id: str | None = Field(default=None, min_length=1, max_length=128)
    strategy: str | None = Field(default=None, min_length=1, max_length=64)


class TimeseriesQuery(PeriodQuery):
    """A metric per UTC day, or per hour for periods of at most 7 days."""

    metric: Metric = "impressions"
    interval: Literal["day", "hour"] = "day"


class TopProductsQuery(PeriodQuery):
    """Products ranked by one figure."""

    sort: Literal["clicks", "impressions", "conversions", "revenue", "attributedRevenue"] = "clicks"
    limit: int = Field(default=10, ge=1, le=100)


class BreakdownQuery(PeriodQuery):
    """The period, and what to break the recommendations' figures down by."""

    by: Literal["placement", "strategy"] = "placement"


class ExportQuery(PeriodQuery):
    """Daily rows of every overview figure."""

    format: Literal["csv"] = "csv"


class OverviewRead(ApiModel):
    """KPIs of a period; a ratio is null when its denominator is 0."""

    impressions: int = Field(description="recommendation_impressed events")
    clicks: int = Field(description="recommendation_clicked events")
    ctr: float | None = Field(description="clicks / impressions")
    conversions: int = Field(description="purchase events")
    conversion_rate: float | None = Field(
        description="buyers / activeUsers: the share (0-1) of active users who bought"
    )
    purchases_per_user: float | None = Field(
        description="conversions / activeUsers: purchase events per active user"
    )
    revenue_per_visitor: float | None = Field(
        description="revenue / activeUsers: purchase revenue per active user"
    )
    revenue: float = Field(description="sum of purchase prices")
    attributed_revenue: float = Field(description="revenue attributed to recommendation clicks")
    events: int = Field(description="every event")
    active_users: int = Field(description="distinct users with an event over the whole period")
    buyers: int = Field(
        description="distinct users with a purchase over the whole period (scoped: with a "
        "purchase attributed to the scope's clicks)"
    )


class PeriodRead(ApiModel):
    """The period an answer covers, [from, to)."""

    from_: str = Field(alias="from")
    to: str


class IncrementalTest(ApiModel):
    """Everyone else minus the holdout, by the experiments' statistics."""

    absolute_diff: float | None = Field(description="exposed value - holdout value")
    relative_lift: float | None = Field(description="absoluteDiff / holdout value")
    ci: list[float] | None = Field(description="95% interval of absoluteDiff")
    p_value: float | None
    significant: bool = Field(description="pValue < 0.05")
    low_confidence: bool = Field(
        description="fewer than 500 users or 25 buyers in the holdout or in the rest"
    )


class Incremental(ApiModel):
    """What recommendations added: users outside the holdout against the holdout (a stable
    `holdoutPercent` slice served the baseline), over the period's raw events (90 days)."""

    revenue_per_visitor: IncrementalTest = Field(
        description="revenue / users of each side (Welch's t-test)"
    )
    conversion_rate: IncrementalTest = Field(
        description="buyers / users of each side (two-proportion z-test)"
    )
    holdout_percent: int
    holdout_users: int = Field(description="active users of the period in the holdout")
    exposed_users: int = Field(description="active users of the period outside it")
    holdout_revenue_per_visitor: float | None
    exposed_revenue_per_visitor: float | None
    holdout_conversion_rate: float | None
    exposed_conversion_rate: float | None
    sample_ratio_mismatch: bool = Field(description="users per side off the configured split")


class TenantOverviewRead(OverviewRead):
    """One tenant's overview; `incremental` when the tenant's holdoutPercent > 0 (unscoped)."""

    period: PeriodRead
    incremental: Incremental | None = None


class TenantFigures(OverviewRead):
    """One tenant's share of the all-tenants overview."""

    tenant_id: str
    name: str


class AllTenantsOverviewRead(OverviewRead):
    """The overview summed over the admin's tenants, with each tenant's figures."""

    period: PeriodRead
    tenants: list[TenantFigures]


class SeriesPoint(ApiModel):
    """One bucket, starting at `start` (the period's start for a partial first bucket)."""

    start: str
    value: float | None


class TimeseriesRead(ApiModel):
    """A metric over time."""

    metric: Metric
    interval: Literal["day", "hour"]
    period: PeriodRead
    points: list[SeriesPoint]


class ProductFigures(ApiModel):
    """One product's figures over the period."""

    product_id: str
    name: str | None
    impressions: int
    clicks: int
    ctr: float | None
    conversions: int
    revenue: float
    attributed_revenue: float


class TopProductsRead(ApiModel):
    """Products with a non-zero `sort` figure, best first."""

    sort: str
    period: PeriodRead
    data: list[ProductFigures]


class BreakdownRow(ApiModel):
    """The recommendations of one placement or strategy ('' when the event named none)."""

    key: str = Field(description="the placementId or the strategy")
    impressions: int = Field(description="recommendation_impressed events")
    clicks: int = Field(description="recommendation_clicked events")
    ctr: float | None = Field(description="clicks / impressions")
    conversions: int = Field(description="purchases attributed to these recommendations' clicks")
    attributed_revenue: float = Field(description="revenue of those attributed purchases")


class BreakdownRead(ApiModel):
    """Figures per placement or strategy, most impressions first."""

    by: Literal["placement", "strategy"]
    period: PeriodRead
    data: list[BreakdownRow]


class FunnelStep(ApiModel):
    """One step: users who did this and every earlier step within the period (any order)."""

    step: Literal["viewed", "clickedRecommendation", "addedToCart", "purchased"]
    event_type: str = Field(description="the event that marks the step")
    users: int = Field(description="distinct users who reached the step")
    rate_from_previous: float | None = Field(
        description="users / users of the previous step (null for the first step)"
    )
    rate_from_first: float | None = Field(
        description="users / users who viewed (null for the first step)"
    )


class FunnelRead(ApiModel):
    """viewed -> clicked a recommendation -> added to cart -> purchased, from the raw events
    (kept 90 days)."""

    period: PeriodRead
    steps: list[FunnelStep]


def _period(query: PeriodQuery, *, interval: str | None = None) -> rules.Period:
    try:
        period = rules.resolve_period(from_raw=query.from_, to_raw=query.to, now=datetime.now(UTC))
        if interval is not None:
            rules.check_interval(period, interval)
    except rules.PeriodError as exc:
        raise ValidationFailed(
            "The period is not valid.", errors=[FieldError(exc.field, exc.message)]
        ) from exc
    return period


def _period_read(period: rules.Period) -> dict[str, str]:
    return {"from": period.start.isoformat(), "to": period.end.isoformat()}


async def _tenant_key(request: Request, tenant_id: str) -> str:
    tenant = await owned_tenant(request, tenant_id)
    return str(tenant["id"])


@bp.get("/tenants/<tenant_id:str>/analytics/overview")
@document(
    summary="A tenant's KPIs over a period",
    tags=["analytics"],
    query=OverviewQuery,
    responses={200: TenantOverviewRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=False)
async def tenant_overview(request: Request, tenant_id: str) -> HTTPResponse:
    """Impressions, clicks, CTR, conversions, revenue, attributed revenue, users."""
    tenant = await owned_tenant(request, tenant_id)
    query = parse_query(request, OverviewQuery)
    period = _period(query)
    figures = await analytics_store.tenant_overview(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=str(tenant["id"]),
        period=period,
        now=datetime.now(UTC),
        scope=analytics_store.Scope(placement_id=query.placement_id, strategy=query.strategy),
        holdout_percent=holdout.holdout_percent(tenant["config"]),
    )
    return json({**figures, "period": _period_read(period)})


@bp.get("/analytics/overview")
@document(
    summary="KPIs summed over every tenant of the admin",
    tags=["analytics"],
    query=PeriodQuery,
    responses={200: AllTenantsOverviewRead},
    security="bearer",
)
@require_admin
async def all_tenants_overview(request: Request) -> HTTPResponse:
    """The caller's tenants only, summed, with each tenant's own figures."""
    period = _period(parse_query(request, PeriodQuery))
    figures = await analytics_store.owner_overview(
        request.app.ctx.db,
        request.app.ctx.redis,
        owner_id=request.ctx.admin_id,
        period=period,
        now=datetime.now(UTC),
    )
    return json({**figures, "period": _period_read(period)})


@bp.get("/tenants/<tenant_id:str>/analytics/timeseries")
@document(
    summary="One metric of a tenant per day or hour",
    tags=["analytics"],
    query=TimeseriesQuery,
    responses={200: TimeseriesRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=False)
async def timeseries(request: Request, tenant_id: str) -> HTTPResponse:
    """Every bucket of the period, empty ones included."""
    tenant_key = await _tenant_key(request, tenant_id)
    query = parse_query(request, TimeseriesQuery)
    period = _period(query, interval=query.interval)
    points = await analytics_store.series(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        period=period,
        interval=query.interval,
        now=datetime.now(UTC),
    )
    return json(
        {
            "metric": query.metric,
            "interval": query.interval,
            "period": _period_read(period),
            "points": [
                {"start": point["start"].isoformat(), "value": point[query.metric]}
                for point in points
            ],
        }
    )


@bp.get("/tenants/<tenant_id:str>/analytics/top-products")
@document(
    summary="A tenant's top products over a period",
    tags=["analytics"],
    query=TopProductsQuery,
    responses={200: TopProductsRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=False)
async def top_products(request: Request, tenant_id: str) -> HTTPResponse:
    """Products by clicks, impressions, conversions, revenue or attributed revenue."""
    tenant_key = await _tenant_key(request, tenant_id)
    query = parse_query(request, TopProductsQuery)
    period = _period(query)
    found = await analytics_store.top_products(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        period=period,
        sort=query.sort,
        limit=query.limit,
        now=datetime.now(UTC),
    )
    return json({"sort": query.sort, "period": _period_read(period), "data": found})


@bp.get("/tenants/<tenant_id:str>/analytics/breakdown")
@document(
    summary="A tenant's recommendation figures per placement or per strategy",
    tags=["analytics"],
    query=BreakdownQuery,
    responses={200: BreakdownRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=False)
async def breakdown(request: Request, tenant_id: str) -> HTTPResponse:
    """Impressions, clicks, CTR, attributed conversions and revenue per placement or strategy."""
    tenant_key = await _tenant_key(request, tenant_id)
    query = parse_query(request, BreakdownQuery)
    period = _period(query)
    rows = await analytics_store.breakdown(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        period=period,
        by=query.by,
        now=datetime.now(UTC),
    )
    return json({"by": query.by, "period": _period_read(period), "data": rows})


@bp.get("/tenants/<tenant_id:str>/analytics/funnel")
@document(
    summary="A tenant's shopper funnel over a period",
    tags=["analytics"],
    query=PeriodQuery,
    responses={200: FunnelRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=False)
async def funnel(request: Request, tenant_id: str) -> HTTPResponse:
    """Viewed, clicked a recommendation, added to cart, purchased: distinct users per step."""
    tenant_key = await _tenant_key(request, tenant_id)
    period = _period(parse_query(request, PeriodQuery))
    steps = await analytics_store.funnel(request.app.ctx.db, tenant_id=tenant_key, period=period)
    return json({"period": _period_read(period), "steps": steps})


def _csv_lines(points: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for point in points:
        writer.writerow(
            [point["start"].date().isoformat()]
            + ["" if point[name] is None else point[name] for name in rules.METRICS]
        )
    return buffer.getvalue()


@bp.get("/tenants/<tenant_id:str>/analytics/export")
@document(
    summary="A tenant's daily figures as CSV (streamed)",
    tags=["analytics"],
    query=ExportQuery,
    responses={200: None},
    security="bearer|apiKey",
    content_type="text/csv",
)
@require_admin_or_api_key(write=False)
async def export(request: Request, tenant_id: str) -> None:
    """A header line, then one row per UTC day of the period, sent a month at a time."""
    tenant_key = await _tenant_key(request, tenant_id)
    period = _period(parse_query(request, ExportQuery))
    now = datetime.now(UTC)
    name = f"analytics-{tenant_key}-{period.start.date()}-{period.end.date()}.csv"
    response = await request.respond(
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
    await response.send(",".join(CSV_COLUMNS) + "\n")
    for piece in analytics_store.daily_chunks(period):
        points = await analytics_store.series(
            request.app.ctx.db,
            request.app.ctx.redis,
            tenant_id=tenant_key,
            period=piece,
            interval="day",
            now=now,
        )
        await response.send(_csv_lines(points))
    # Nothing is returned: the stream has answered, and a returned response would be refused
    # (and logged as an error) by Sanic.
    await response.eof()
