"""HTTP route of an experiment's results over time: cumulative per-variant figures per day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import document
from api.security import owned_tenant, require_admin_or_api_key
from api.validation import ApiModel
from domain.errors import NotFound
from domain.experiment_days import cumulative_days
from store import experiments as experiment_store
from store.experiment_days import experiment_day_increments

bp = Blueprint("experiment_days", url_prefix="/api/v1")

# A chart of more days than this would be unreadable; the last ones are kept.
MAX_DAYS = 366


class DailyVariantFigures(ApiModel):
    """One variant's totals up to the end of a day."""

    users: int
    impressions: int
    clicks: int
    ctr: float | None
    buyers: int
    purchases: int
    conversion_rate: float | None
    revenue: float
    revenue_per_visitor: float | None


class ExperimentDay(ApiModel):
    """Both variants' cumulative figures at the end of one UTC day."""

    date: str
    control: DailyVariantFigures
    variant: DailyVariantFigures


class ExperimentDailyResults(ApiModel):
    """An experiment's figures over time, one entry per day since it started."""

    experiment_id: str
    metric: str
    days: list[ExperimentDay]


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


@bp.get("/tenants/<tenant_id:str>/experiments/<experiment_id:str>/results/daily")
@document(
    summary="Per-variant cumulative figures per day since the experiment started",
    tags=["experiments"],
    responses={200: ExperimentDailyResults},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def daily_results(request: Request, tenant_id: str, experiment_id: str) -> HTTPResponse:
    """Each day from the start to today (or the completion) with each variant's totals."""
    tenant = await owned_tenant(request, tenant_id)
    key = str(tenant["id"])
    pool = request.app.ctx.db
    experiment = await experiment_store.get_experiment(
        pool, tenant_id=key, experiment_id=experiment_id
    )
    if experiment is None:
        raise NotFound("No such experiment.")
    started = _parse(experiment["startedAt"])
    days: list[dict[str, Any]] = []
    if started is not None:
        end = _parse(experiment["completedAt"]) or datetime.now(UTC)
        first_day = max(started.date(), end.date() - timedelta(days=MAX_DAYS - 1))
        increments = await experiment_day_increments(
            pool, tenant_id=key, experiment_id=str(experiment["id"]), start=started, end=end
        )
        days = cumulative_days(first_day=first_day, last_day=end.date(), increments=increments)
    return json(
        {"experimentId": str(experiment["id"]), "metric": experiment["metric"], "days": days}
    )
