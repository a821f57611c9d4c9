"""HTTP routes of the catalog area: tenant API-key CRUD, batch upload, search, admin browser."""

from __future__ import annotations

import logging
from typing import Any, Literal
from urllib.parse import unquote

from dramatiq.errors import DramatiqError
from pydantic import Field
from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.openapi import document, linked
from api.security import owned_tenant, require_admin, require_api_key
from api.validation import ApiModel, parse_query, read_json, validate
from domain import catalog as rules
from domain.errors import FieldError, NotFound, Unavailable
from store import catalog as catalog_store
from workers.actors.catalog import apply_catalog_batch, queue_content_refresh

bp = Blueprint("catalog", url_prefix="/api/v1")
log = logging.getLogger("recomengine.catalog")


class CatalogItemWrite(ApiModel):
    """A product as a merchant sends it (POST /catalog, batch items)."""

    product_id: str = Field(
        min_length=1,
        max_length=rules.MAX_PRODUCT_ID_CHARS,
        json_schema_extra={"pattern": rules.PRODUCT_ID_PATTERN},
    )
    name: str = Field(
        min_length=1,
        max_length=rules.MAX_NAME_CHARS,
        json_schema_extra={"pattern": rules.NAME_PATTERN},
    )
    category: str | None = Field(
        default=None,
        max_length=rules.MAX_CATEGORY_CHARS,
        json_schema_extra={"pattern": rules.NO_NUL_PATTERN},
    )
    price: float = Field(ge=0, le=float(rules.MAX_PRICE), description="at most 4 decimals")
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217; default: the tenant's"
    )
    image_url: str | None = Field(
        default=None,
        max_length=rules.MAX_URL_CHARS,
        description="absolute http(s) URL",
        json_schema_extra={"pattern": rules.HTTP_URL_PATTERN},
    )
    url: str | None = Field(
        default=None,
        max_length=rules.MAX_URL_CHARS,
        description="absolute http(s) URL",
        json_schema_extra={"pattern": rules.HTTP_URL_PATTERN},
    )
    description: str | None = Field(default=None, description="at most 10 KB")
    attributes: dict[str, Any] | None = Field(default=None, description="at most 8 KB as JSON")
    available: bool | None = Field(default=True, description="null: true")


class CatalogItemReplace(CatalogItemWrite):
    """A full replacement of a product (PUT); productId, if sent, must equal the path's."""

    product_id: str | None = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        max_length=rules.MAX_PRODUCT_ID_CHARS,
        json_schema_extra={"pattern": rules.PRODUCT_ID_PATTERN},
    )


class CatalogItemRead(ApiModel):
    """A product as the api answers it."""

    product_id: str
    name: str
    category: str
    price: float
    currency: str
    image_url: str | None
    url: str | None
    description: str | None
    attributes: dict[str, Any]
    available: bool
    created_at: str
    updated_at: str


class CatalogBatchWrite(ApiModel):
    """Up to 1,000 products, validated one by one."""

    # Each item is checked by domain.catalog on its own (a bad one is rejected, not the batch);
    # the document still states what an item is.
    items: list[Any] = Field(
        min_length=1,
        max_length=rules.MAX_BATCH_ITEMS,
        json_schema_extra={"items": {"$ref": "#/components/schemas/CatalogItemWrite"}},
    )


class FieldErrorRead(ApiModel):
    """One broken rule of one field."""

    field: str
    message: str


class CatalogBatchResult(ApiModel):
    """What became of one item of a batch."""

    index: int
    status: Literal["accepted", "rejected"]
    errors: list[FieldErrorRead] | None = None


class CatalogBatchAccepted(ApiModel):
    """Counts and per-item results; accepted items are applied by a worker shortly after."""

    accepted: int
    rejected: int
    results: list[CatalogBatchResult]


class CatalogQuery(ApiModel):
    """Filters and paging of a catalog listing."""

    q: str | None = Field(default=None, min_length=1, max_length=200, description="full text")
    category: str | None = Field(default=None, max_length=rules.MAX_CATEGORY_CHARS)
    available: bool | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


class CatalogPage(ApiModel):
    """One page of products in productId order."""

    data: list[CatalogItemRead]
    next_cursor: str | None


class InteractionCounts(ApiModel):
    """Events about a product in the last 30 days."""

    views: int
    clicks: int
    purchases: int


class AdminCatalogItemRead(CatalogItemRead):
    """A product with its recent interaction counts."""

    interactions: InteractionCounts


class AdminCatalogPage(ApiModel):
    """One page of the admin catalog browser."""

    data: list[AdminCatalogItemRead]
    next_cursor: str | None


def _path_id(raw: str) -> str:
    # Sanic hands path parameters over still percent-encoded (its `unquote=True` is not applied
    # to every route shape), so decode here, exactly once: "a%2Fb" is the product "a/b".
    return unquote(raw)


def _default_currency(request: Request) -> str:
    return rules.tenant_currency(request.ctx.tenant_config)


async def _after_change(request: Request, tenant_id: str) -> None:
    # The product is already saved and projected: a broker or Redis hiccup here only delays the
    # content model until the next change, so it must not turn the answer into an error.
    try:
        await queue_content_refresh(request.app.ctx.redis, tenant_id=tenant_id)
    except (RedisError, OSError, DramatiqError):
        log.warning(
            "content-model refresh not queued",
            extra={"tenant_id": tenant_id, "request_id": getattr(request.ctx, "request_id", None)},
            exc_info=True,
        )


async def _page(request: Request, tenant_id: str) -> tuple[list[dict[str, Any]], str | None]:
    query = parse_query(request, CatalogQuery)
    after = rules.decode_cursor(query.cursor) if query.cursor else None
    page, next_after = await catalog_store.list_items(
        request.app.ctx.db,
        tenant_id=tenant_id,
        q=query.q,
        category=query.category,
        available=query.available,
        limit=query.limit,
        after=after,
    )
    return page, rules.encode_cursor(next_after) if next_after else None


@bp.post("/catalog")
@document(
    summary="Create or update a product",
    tags=["catalog"],
    body=CatalogItemWrite,
    responses={201: CatalogItemRead, 200: CatalogItemRead},
    security="apiKey",
    links=linked(
        [f"{method} /api/v1/catalog/{{product_id}}" for method in ("GET", "PUT", "DELETE")],
        product_id="$response.body#/productId",
    ),
)
@require_api_key(write=True)
async def upsert_product(request: Request) -> HTTPResponse:
    """Upsert one product: 201 when new, 200 when it replaced an existing one."""
    item = rules.parse_item(read_json(request), default_currency=_default_currency(request))
    tenant_id = request.ctx.tenant_id
    body, created = await catalog_store.upsert_item(
        request.app.ctx.db, request.app.ctx.redis, tenant_id=tenant_id, item=item
    )
    await _after_change(request, tenant_id)
    return json(body, status=201 if created else 200)


@bp.post("/catalog/batch")
@document(
    summary="Upload up to 1,000 products",
    tags=["catalog"],
    body=CatalogBatchWrite,
    responses={202: CatalogBatchAccepted},
    security="apiKey",
)
@require_api_key(write=True)
async def upsert_products_batch(request: Request) -> HTTPResponse:
    """Validate every item, queue the valid ones in one message, report each item's fate."""
    batch = validate(read_json(request), CatalogBatchWrite)
    currency = _default_currency(request)
    results: list[dict[str, Any]] = []
    accepted: list[dict[str, Any]] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(batch.items):
        item, errors = rules.item_errors(raw, default_currency=currency)
        if item is not None and item.product_id in first_index:
            # One statement cannot update a row twice, and "which one wins" would be a guess.
            errors = [
                FieldError(
                    field="productId",
                    message=f"repeats the productId of item {first_index[item.product_id]}",
                )
            ]
            item = None
        if item is None:
            results.append(
                {
                    "index": index,
                    "status": "rejected",
                    "errors": [{"field": e.field, "message": e.message} for e in errors],
                }
            )
            continue
        first_index[item.product_id] = index
        accepted.append(rules.to_message(item))
        results.append({"index": index, "status": "accepted"})
    if accepted:
        try:
            apply_catalog_batch.send(request.ctx.tenant_id, accepted)
        except (RedisError, OSError, DramatiqError) as exc:
            # Nothing is acknowledged before it is queued: the client retries the whole batch.
            raise Unavailable("The catalog queue is unavailable; retry shortly.") from exc
    return json(
        {"accepted": len(accepted), "rejected": len(results) - len(accepted), "results": results},
        status=202,
    )


@bp.get("/catalog")
@document(
    summary="List and search products",
    tags=["catalog"],
    query=CatalogQuery,
    responses={200: CatalogPage},
    security="apiKey",
)
@require_api_key(write=False)
async def list_products(request: Request) -> HTTPResponse:
    """A page of the tenant's products, filtered by text, category and availability."""
    page, next_cursor = await _page(request, request.ctx.tenant_id)
    return json({"data": page, "nextCursor": next_cursor})


@bp.get("/catalog/<product_id:str>")
@document(
    summary="Read a product", tags=["catalog"], responses={200: CatalogItemRead}, security="apiKey"
)
@require_api_key(write=False)
async def read_product(request: Request, product_id: str) -> HTTPResponse:
    """One product of the tenant."""
    product_id = _path_id(product_id)
    body = await catalog_store.get_item(
        request.app.ctx.db, tenant_id=request.ctx.tenant_id, product_id=product_id
    )
    if body is None:
        raise NotFound("No such product.")
    return json(body)


@bp.put("/catalog/<product_id:str>")
@document(
    summary="Replace a product",
    tags=["catalog"],
    body=CatalogItemReplace,
    responses={200: CatalogItemRead},
    security="apiKey",
)
@require_api_key(write=True)
async def replace_product(request: Request, product_id: str) -> HTTPResponse:
    """Replace every field of an existing product; omitted fields take their defaults."""
    product_id = _path_id(product_id)
    item = rules.parse_item(
        read_json(request), default_currency=_default_currency(request), product_id=product_id
    )
    tenant_id = request.ctx.tenant_id
    body = await catalog_store.replace_item(
        request.app.ctx.db, request.app.ctx.redis, tenant_id=tenant_id, item=item
    )
    if body is None:
        raise NotFound("No such product.")
    await _after_change(request, tenant_id)
    return json(body)


@bp.delete("/catalog/<product_id:str>")
@document(summary="Delete a product", tags=["catalog"], responses={204: None}, security="apiKey")
@require_api_key(write=True)
async def delete_product(request: Request, product_id: str) -> HTTPResponse:
    """Delete a product, its card, its availability and cached recommendations holding it."""
    product_id = _path_id(product_id)
    tenant_id = request.ctx.tenant_id
    deleted = await catalog_store.delete_item(
        request.app.ctx.db, request.app.ctx.redis, tenant_id=tenant_id, product_id=product_id
    )
    if not deleted:
        raise NotFound("No such product.")
    await _after_change(request, tenant_id)
    return empty(status=204)


@bp.get("/tenants/<tenant_id:str>/catalog")
@document(
    summary="Browse a tenant's catalog with 30-day interaction counts",
    tags=["catalog"],
    query=CatalogQuery,
    responses={200: AdminCatalogPage},
    security="bearer",
)
@require_admin
async def browse_tenant_catalog(request: Request, tenant_id: str) -> HTTPResponse:
    """The admin's view of one of their tenants' products, with views, clicks and purchases."""
    tenant = await owned_tenant(request, tenant_id)
    tenant_key = str(tenant["id"])
    page, next_cursor = await _page(request, tenant_key)
    counts = await catalog_store.interaction_counts(
        request.app.ctx.db, tenant_id=tenant_key, product_ids=[p["productId"] for p in page]
    )
    data = [{**product, "interactions": counts[product["productId"]]} for product in page]
    return json({"data": data, "nextCursor": next_cursor})
