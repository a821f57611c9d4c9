"""HTTP routes of the experiments area: A/B tests between two strategies on a placement."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.openapi import document, linked
from api.security import owned_tenant, require_admin_or_api_key
from api.validation import ApiModel, NonBlank, parse_body, parse_query
from domain import widgets as widget_rules
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.strategies.registry import STRATEGY_NAMES
from store import experiments as experiment_store

bp = Blueprint("experiments", url_prefix="/api/v1")

EXPERIMENT = "/api/v1/tenants/{tenant_id}/experiments/{experiment_id}"
Strategy = Literal[STRATEGY_NAMES]  # type: ignore[valid-type]
Metric = Literal["ctr", "conversion_rate", "revenue_per_visitor"]
Status = Literal["draft", "running", "paused", "completed"]


class ExperimentWrite(ApiModel):
    """Body of POST .../experiments and PUT .../experiments/{expId} (drafts only)."""

    name: NonBlank = Field(min_length=1, max_length=200)
    placement_id: str = Field(
        max_length=widget_rules.PLACEMENT_ID_MAX_CHARS,
        json_schema_extra={"pattern": widget_rules.PLACEMENT_ID_PATTERN},
    )
    control_strategy: Strategy
    variant_strategy: Strategy
    traffic_split: int = Field(ge=0, le=100, strict=True, description="% of users to variant")
    metric: Metric
    # Stored as numeric(14, 4): a smaller cap would be saved as 0, which no test can use.
    revenue_cap: float | None = Field(
        default=None,
        ge=0.0001,
        le=1e9,
        description="per-user revenue cap fixed before the start (capped test shown beside)",
    )
    sequential: bool = Field(
        default=False, strict=True, description="always-valid p-values, safe to look daily"
    )

    @field_validator("placement_id")
    @classmethod
    def _plain_placement(cls, value: str) -> str:
        return widget_rules.check_placement_id(value)

    @model_validator(mode="after")
    def _strategies_differ(self) -> ExperimentWrite:
        if self.control_strategy == self.variant_strategy:
            raise ValueError("controlStrategy and variantStrategy must differ")
        return self

    def fields(self) -> dict[str, Any]:
        """The settings in camelCase, as the store takes them."""
        return self.model_dump(by_alias=True)


class ExperimentStatusChange(ApiModel):
    """Body of PATCH .../experiments/{expId}."""

    status: Status


class ExperimentRead(ApiModel):
    """An experiment as answered."""

    id: str
    name: str
    placement_id: str
    control_strategy: Strategy
    variant_strategy: Strategy
    traffic_split: int
    metric: Metric
    status: Status
    revenue_cap: float | None
    sequential: bool
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None


class ExperimentList(ApiModel):
    """One page of a tenant's experiments, oldest first."""

    data: list[ExperimentRead]
    next_cursor: str | None


class ExperimentListQuery(ApiModel):
    """Paging and filters of the experiment list."""

    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)
    status: Status | None = None
    placement_id: str | None = Field(default=None, max_length=widget_rules.PLACEMENT_ID_MAX_CHARS)


class VariantFigures(ApiModel):
    """Descriptive figures of one arm."""

    users: int
    impressions: int
    clicks: int
    ctr: float | None
    buyers: int
    purchases: int
    conversion_rate: float | None
    revenue: float
    revenue_per_visitor: float | None


class ComparisonRead(ApiModel):
    """One metric compared, variant minus control."""

    p_value: float | None
    significant: bool
    absolute_diff: float | None
    relative_lift: float | None
    ci: list[float] | None
    relative_lift_ci: list[float] | None


class VariantsFigures(ApiModel):
    """Both arms."""

    control: VariantFigures
    variant: VariantFigures


class ResultTests(ApiModel):
    """Every test; the capped ones only when a revenue cap is set."""

    ctr: ComparisonRead
    conversion_rate: ComparisonRead
    revenue_per_visitor: ComparisonRead
    purchases_per_user: ComparisonRead
    revenue_per_visitor_capped: ComparisonRead | None = None


class SrmCheck(ApiModel):
    """Sample ratio mismatch: users per arm against the split (flagged at p < 0.001)."""

    chi_square: float | None
    p_value: float
    mismatch: bool
    expected_split: int
    observed: dict[str, int]
    expected: dict[str, float]


class ExperimentResultsRead(ApiModel):
    """Results of an experiment, with the user as the unit of analysis."""

    experiment_id: str
    status: Status
    primary_metric: Metric
    variants: VariantsFigures
    tests: ResultTests
    srm: SrmCheck
    low_confidence: bool
    winner: Literal["control", "variant"] | None
    sequential: bool
    frozen: bool


async def _tenant_key(request: Request, tenant_id: str, *, write: bool = False) -> str:
    tenant = await owned_tenant(request, tenant_id, write=write)
    return str(tenant["id"])


def _not_found() -> NotFound:
    return NotFound("No such experiment.")


@bp.post("/tenants/<tenant_id:str>/experiments")
@document(
    summary="Create a draft experiment",
    tags=["experiments"],
    body=ExperimentWrite,
    responses={201: ExperimentRead},
    security="bearer|apiKey",
    links=linked(
        [
            f"GET {EXPERIMENT}",
            f"PUT {EXPERIMENT}",
            f"PATCH {EXPERIMENT}",
            f"DELETE {EXPERIMENT}",
            f"GET {EXPERIMENT}/results",
            f"GET {EXPERIMENT}/results/daily",
        ],
        experiment_id="$response.body#/id",
    ),
)
@require_admin_or_api_key(write=True)
async def create_experiment(request: Request, tenant_id: str) -> HTTPResponse:
    """A new experiment in status draft."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    body = parse_body(request, ExperimentWrite)
    created = await experiment_store.create_experiment(
        request.app.ctx.db, tenant_id=tenant_key, fields=body.fields()
    )
    return json(created, status=201)


@bp.get("/tenants/<tenant_id:str>/experiments")
@document(
    summary="List a tenant's experiments",
    tags=["experiments"],
    query=ExperimentListQuery,
    responses={200: ExperimentList},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def list_experiments(request: Request, tenant_id: str) -> HTTPResponse:
    """The tenant's experiments, oldest first, optionally by status or placement."""
    tenant_key = await _tenant_key(request, tenant_id)
    query = parse_query(request, ExperimentListQuery)
    after = None
    if query.cursor is not None:
        after = experiment_store.decode_experiment_cursor(query.cursor)
        if after is None:
            raise ValidationFailed(
                "The cursor is not valid.", errors=[FieldError("cursor", "Not a valid cursor")]
            )
    page, next_cursor = await experiment_store.list_experiments(
        request.app.ctx.db,
        tenant_id=tenant_key,
        limit=query.limit,
        after=after,
        status=query.status,
        placement_id=query.placement_id,
    )
    return json({"data": page, "nextCursor": next_cursor})


@bp.get("/tenants/<tenant_id:str>/experiments/<experiment_id:str>")
@document(
    summary="An experiment",
    tags=["experiments"],
    responses={200: ExperimentRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def get_experiment(request: Request, tenant_id: str, experiment_id: str) -> HTTPResponse:
    """One experiment of the tenant."""
    tenant_key = await _tenant_key(request, tenant_id)
    found = await experiment_store.get_experiment(
        request.app.ctx.db, tenant_id=tenant_key, experiment_id=experiment_id
    )
    if found is None:
        raise _not_found()
    return json(found)


@bp.put("/tenants/<tenant_id:str>/experiments/<experiment_id:str>")
@document(
    summary="Replace a draft experiment's settings",
    errors={409: "The experiment has started; only drafts can be edited."},
    tags=["experiments"],
    body=ExperimentWrite,
    responses={200: ExperimentRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def replace_experiment(request: Request, tenant_id: str, experiment_id: str) -> HTTPResponse:
    """Edit a draft; 409 once it has started."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    body = parse_body(request, ExperimentWrite)
    updated = await experiment_store.replace_draft_experiment(
        request.app.ctx.db, tenant_id=tenant_key, experiment_id=experiment_id, fields=body.fields()
    )
    if updated is None:
        raise _not_found()
    return json(updated)


@bp.patch("/tenants/<tenant_id:str>/experiments/<experiment_id:str>")
@document(
    summary="Start, pause, resume or complete an experiment",
    errors={409: "Not an allowed transition, or another experiment already runs on the placement."},
    tags=["experiments"],
    body=ExperimentStatusChange,
    responses={200: ExperimentRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def change_status(request: Request, tenant_id: str, experiment_id: str) -> HTTPResponse:
    """Follow draft -> running -> paused <-> running -> completed; anything else is a 409."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    body = parse_body(request, ExperimentStatusChange)
    changed = await experiment_store.change_experiment_status(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        experiment_id=experiment_id,
        status=body.status,
    )
    if changed is None:
        raise _not_found()
    return json(changed)


@bp.delete("/tenants/<tenant_id:str>/experiments/<experiment_id:str>")
@document(
    summary="Delete a draft experiment",
    errors={409: "The experiment has started; its data belongs to its results."},
    tags=["experiments"],
    responses={204: None},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def delete_experiment(request: Request, tenant_id: str, experiment_id: str) -> HTTPResponse:
    """Delete a draft; 409 once it has started (its data belongs to its results)."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    deleted = await experiment_store.delete_draft_experiment(
        request.app.ctx.db, request.app.ctx.redis, tenant_id=tenant_key, experiment_id=experiment_id
    )
    if not deleted:
        raise _not_found()
    return empty(status=204)


@bp.get("/tenants/<tenant_id:str>/experiments/<experiment_id:str>/results")
@document(
    summary="Results of an experiment (frozen once completed)",
    tags=["experiments"],
    responses={200: ExperimentResultsRead},
    security="bearer|apiKey",
)
@require_admin_or_api_key(write=True)
async def experiment_results(request: Request, tenant_id: str, experiment_id: str) -> HTTPResponse:
    """Per-variant figures and user-level tests, computed now or frozen at completion."""
    tenant_key = await _tenant_key(request, tenant_id)
    results = await experiment_store.experiment_results(
        request.app.ctx.db, tenant_id=tenant_key, experiment_id=experiment_id
    )
    if results is None:
        raise _not_found()
    return json(results)
