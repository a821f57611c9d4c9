"""HTTP routes of the widgets area: per-placement widget configs (admin) and the public read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.openapi import document, linked
from api.security import owned_tenant, require_admin, require_api_key
from api.validation import ApiModel, parse_body, parse_query
from domain import widgets as rules
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.strategies.registry import STRATEGY_NAMES
from store import widgets as widget_store

bp = Blueprint("widgets", url_prefix="/api/v1")

Layout = Literal["grid", "carousel", "list"]
Strategy = Literal[STRATEGY_NAMES]  # type: ignore[valid-type]
PUBLIC_CACHE_CONTROL = "public, max-age=60"
PLACEMENT = "/api/v1/tenants/{tenant_id}/widgets/{placement_id}"


class WidgetTheme(ApiModel):
    """Colours and font of the widget; fontFamily null inherits the host page's font."""

    primary_color: str = Field(
        default=rules.DEFAULT_PRIMARY_COLOR,
        description="#RRGGBB",
        json_schema_extra={"pattern": rules.PRIMARY_COLOR_PATTERN},
    )
    font_family: str | None = Field(
        default=None,
        description="CSS font list, e.g. '\"Open Sans\", Arial, sans-serif'",
        json_schema_extra={
            "maxLength": rules.FONT_FAMILY_MAX_CHARS,
            "pattern": rules.FONT_FAMILY_PATTERN,
        },
    )

    @field_validator("primary_color")
    @classmethod
    def _hex_colour(cls, value: str) -> str:
        return rules.check_primary_color(value)

    @field_validator("font_family")
    @classmethod
    def _safe_font_list(cls, value: str | None) -> str | None:
        return None if value is None else rules.check_font_family(value)


class WidgetFields(ApiModel):
    """The configurable fields of a placement; every one left out takes the spec's default."""

    layout: Layout = rules.DEFAULT_LAYOUT
    columns: int = Field(
        default=rules.DEFAULT_COLUMNS, ge=rules.MIN_COLUMNS, le=rules.MAX_COLUMNS, strict=True
    )
    show_price: bool = Field(default=rules.DEFAULT_SHOW_PRICE, strict=True)
    show_rating: bool = Field(default=rules.DEFAULT_SHOW_RATING, strict=True)
    cta_text: str = Field(default=rules.DEFAULT_CTA_TEXT, description="1-40 characters, plain")
    max_items: int = Field(
        default=rules.DEFAULT_MAX_ITEMS, ge=rules.MIN_ITEMS, le=rules.MAX_ITEMS, strict=True
    )
    theme: WidgetTheme = Field(default_factory=WidgetTheme)
    strategy: Strategy | None = None

    @field_validator("cta_text")
    @classmethod
    def _plain_cta(cls, value: str) -> str:
        return rules.check_cta_text(value)

    def config(self, *, placement_id: str) -> dict[str, Any]:
        """The complete config in the API's camelCase shape."""
        fields = self.model_dump(by_alias=True, exclude={"placement_id"})
        return {**fields, "placementId": placement_id}


class WidgetCreate(WidgetFields):
    """Body of POST /tenants/{id}/widgets."""

    placement_id: str = Field(
        max_length=rules.PLACEMENT_ID_MAX_CHARS,
        json_schema_extra={"pattern": rules.PLACEMENT_ID_PATTERN},
    )

    @field_validator("placement_id")
    @classmethod
    def _plain_placement(cls, value: str) -> str:
        return rules.check_placement_id(value)


class WidgetReplace(WidgetFields):
    """Body of PUT .../widgets/{placementId}: the whole config; placementId, if sent, must be
    the path's."""

    placement_id: str | None = Field(
        default=None,
        max_length=rules.PLACEMENT_ID_MAX_CHARS,
        json_schema_extra={"pattern": rules.PLACEMENT_ID_PATTERN},
    )


class WidgetThemeRead(ApiModel):
    """A stored theme."""

    primary_color: str
    font_family: str | None


class WidgetRead(ApiModel):
    """A placement's config as answered."""

    placement_id: str
    layout: Layout
    columns: int
    show_price: bool
    show_rating: bool
    cta_text: str
    max_items: int
    theme: WidgetThemeRead
    strategy: Strategy | None
    created_at: str
    updated_at: str


class WidgetList(ApiModel):
    """One page of a tenant's widget configs, by placement id."""

    data: list[WidgetRead]
    next_cursor: str | None


class WidgetListQuery(ApiModel):
    """Paging of the widget list."""

    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=512)


def _placement(placement_id: str) -> str:
    # A path that could never name a stored placement is simply not found.
    try:
        return rules.check_placement_id(placement_id)
    except ValueError:
        raise NotFound("No widget config for this placement.") from None


async def _tenant_key(request: Request, tenant_id: str, *, write: bool = False) -> str:
    tenant = await owned_tenant(request, tenant_id, write=write)
    return str(tenant["id"])


@bp.get("/tenants/<tenant_id:str>/widgets")
@document(
    summary="List a tenant's widget configs",
    tags=["widgets"],
    query=WidgetListQuery,
    responses={200: WidgetList},
    security="bearer",
)
@require_admin
async def list_widgets(request: Request, tenant_id: str) -> HTTPResponse:
    """The tenant's widget configs, a page at a time."""
    tenant_key = await _tenant_key(request, tenant_id)
    query = parse_query(request, WidgetListQuery)
    after = None
    if query.cursor is not None:
        after = widget_store.decode_widget_cursor(query.cursor)
        if after is None:
            raise ValidationFailed(
                "The cursor is not valid.", errors=[FieldError("cursor", "Not a valid cursor")]
            )
    page, next_cursor = await widget_store.list_widgets(
        request.app.ctx.db, tenant_id=tenant_key, limit=query.limit, after=after
    )
    return json({"data": page, "nextCursor": next_cursor})


@bp.post("/tenants/<tenant_id:str>/widgets")
@document(
    summary="Configure the widget of a new placement",
    errors={409: "The placement already has a widget config."},
    tags=["widgets"],
    body=WidgetCreate,
    responses={201: WidgetRead},
    security="bearer",
    links=linked(
        [
            f"GET {PLACEMENT}",
            f"PUT {PLACEMENT}",
            f"DELETE {PLACEMENT}",
            "GET /api/v1/widgets/{placement_id}",
        ],
        placement_id="$response.body#/placementId",
    ),
)
@require_admin
async def create_widget(request: Request, tenant_id: str) -> HTTPResponse:
    """A new placement config (defaults for omitted fields); 409 if the placement has one."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    body = parse_body(request, WidgetCreate)
    stored = await widget_store.create_widget(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        config=body.config(placement_id=body.placement_id),
    )
    return json(stored, status=201)


@bp.get("/tenants/<tenant_id:str>/widgets/<placement_id:str>")
@document(
    summary="A placement's widget config",
    tags=["widgets"],
    responses={200: WidgetRead},
    security="bearer",
)
@require_admin
async def get_widget(request: Request, tenant_id: str, placement_id: str) -> HTTPResponse:
    """One placement's config from PostgreSQL."""
    tenant_key = await _tenant_key(request, tenant_id)
    stored = await widget_store.get_widget(
        request.app.ctx.db, tenant_id=tenant_key, placement_id=_placement(placement_id)
    )
    if stored is None:
        raise NotFound("No widget config for this placement.")
    return json(stored)


@bp.put("/tenants/<tenant_id:str>/widgets/<placement_id:str>")
@document(
    summary="Replace a placement's widget config",
    tags=["widgets"],
    body=WidgetReplace,
    responses={200: WidgetRead},
    security="bearer",
)
@require_admin
async def replace_widget(request: Request, tenant_id: str, placement_id: str) -> HTTPResponse:
    """Replace the whole config (omitted fields return to their defaults)."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    placement = _placement(placement_id)
    body = parse_body(request, WidgetReplace)
    if body.placement_id is not None and body.placement_id != placement:
        raise ValidationFailed(
            "placementId must match the path.",
            errors=[FieldError("placementId", "must equal the placement id of the path")],
        )
    stored = await widget_store.replace_widget(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        config=body.config(placement_id=placement),
    )
    if stored is None:
        raise NotFound("No widget config for this placement.")
    return json(stored)


@bp.delete("/tenants/<tenant_id:str>/widgets/<placement_id:str>")
@document(
    summary="Delete a placement's widget config",
    tags=["widgets"],
    responses={204: None},
    security="bearer",
)
@require_admin
async def delete_widget(request: Request, tenant_id: str, placement_id: str) -> HTTPResponse:
    """Remove the config; the placement falls back to the defaults."""
    tenant_key = await _tenant_key(request, tenant_id, write=True)
    deleted = await widget_store.delete_widget(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=tenant_key,
        placement_id=_placement(placement_id),
    )
    if not deleted:
        raise NotFound("No widget config for this placement.")
    return empty(status=204)


@bp.get("/widgets/<placement_id:str>")
@document(
    summary="A placement's widget config for the SDK (cacheable 60 s, ETag)",
    tags=["widgets"],
    responses={200: WidgetRead, 304: None},
    security="apiKey",
)
@require_api_key(write=False)
async def public_widget(request: Request, placement_id: str) -> HTTPResponse:
    """The config from the Redis projection; 304 when the client's ETag still matches."""
    config = await widget_store.load_public_widget(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=request.ctx.tenant_id,
        placement_id=_placement(placement_id),
    )
    if config is None:
        raise NotFound("No widget config for this placement.")
    etag = rules.config_etag(config)
    headers = {
        "Cache-Control": PUBLIC_CACHE_CONTROL,
        "ETag": etag,
        # One URL answers per tenant, chosen by the key: shared caches must keep them apart.
        "Vary": "X-API-Key, Authorization",
    }
    if rules.etag_matches(if_none_match=request.headers.get("if-none-match"), etag=etag):
        return empty(status=304, headers=headers)
    return json(config, headers=headers)
