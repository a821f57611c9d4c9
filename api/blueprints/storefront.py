"""Storefront routes: the SDK bundle, CORS preflights, browser events with a public key,
merging an anonymous shopper into a known one, and the tenant's user-token secret."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import brotli
from pydantic import Field, model_validator
from redis.exceptions import RedisError
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, empty, json, raw

from api.cors import install as install_cors
from api.cors import origin_of_tenant_allowed, preflight
from api.ingestion import IngestService
from api.openapi import document
from api.security import owned_tenant, require_admin, require_api_key
from api.user_tokens import secret_of, user_is_signed
from api.validation import ApiModel, parse_body, read_json
from domain.errors import FieldError, Forbidden, NotFound, Unavailable
from domain.events import Event, batch_items
from domain.storefront import PUBLIC_EVENT_TYPES, RECOMMENDATION_EVENT_TYPES, server_variant
from store import storefront as storefront_store
from store.experiments import read_running_experiment
from store.tenants import bump_auth_epoch

bp = Blueprint("storefront")
log = logging.getLogger("recomengine.storefront")

SDK_DIST = Path(
    os.environ.get("RECOMENGINE_SDK_DIST") or Path(__file__).parents[2] / "sdk" / "dist"
)
BUNDLE_NAME = "recomengine.js"
_HASHED = re.compile(r"^recomengine\.([0-9a-f]{12})\.js$")
LATEST_CACHE_CONTROL = "public, max-age=300"
HASHED_CACHE_CONTROL = "public, max-age=31536000, immutable"


class ConsentRequired(Forbidden):
    """The tenant tracks shoppers only after their consent, and none was given."""

    title = "Consent required"


@dataclass(frozen=True)
class Bundle:
    """The built SDK, its content hash and its compressed forms."""

    mtime_ns: int
    body: bytes
    digest: str
    gzipped: bytes
    brotlied: bytes

    @property
    def etag(self) -> str:
        """Strong ETag of the content (the same for every encoding, which Vary tells apart)."""
        return f'"{self.digest}"'


@lru_cache(maxsize=4)
def _compress(path: str, mtime_ns: int) -> Bundle:
    body = Path(path).read_bytes()
    return Bundle(
        mtime_ns=mtime_ns,
        body=body,
        digest=hashlib.sha256(body).hexdigest()[:12],
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        brotlied=brotli.compress(body, quality=11),
    )


def load_bundle(dist: Path = SDK_DIST) -> Bundle | None:
    """The built bundle (compressed once per build), or None when the SDK is not built."""
    path = dist / BUNDLE_NAME
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return None
    return _compress(str(path), mtime_ns)


def _encoding(accept: str) -> str | None:
    """The best encoding the client accepts: br, then gzip, else none."""
    offered = {}
    for part in accept.lower().split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        offered[name.strip()] = quality
    for name in ("br", "gzip"):
        if offered.get(name, offered.get("*", 0.0)) > 0:
            return name
    return None


@bp.get("/v1/<filename:str>")
@document(
    summary="The storefront SDK (latest: cached 5 min; content-hashed name: immutable)",
    tags=["storefront"],
    responses={200: None, 304: None},
    errors={503: "The SDK is not built on this server (npm ci && npm run build in sdk/)."},
    content_type="application/javascript",
)
async def sdk_bundle(request: Request, filename: str) -> HTTPResponse:
    """The SDK bundle with ETag, gzip and brotli."""
    bundle = load_bundle()
    hashed = _HASHED.match(filename)
    if filename != BUNDLE_NAME and not hashed:
        raise NotFound("No such file.")
    if bundle is None:
        raise Unavailable("The SDK is not built yet (npm ci && npm run build in sdk/).")
    if hashed and hashed.group(1) != bundle.digest:
        raise NotFound("No SDK build has this hash; use /v1/recomengine.js.")
    headers = {
        "Cache-Control": HASHED_CACHE_CONTROL if hashed else LATEST_CACHE_CONTROL,
        "ETag": bundle.etag,
        "Vary": "Accept-Encoding",
        # A script tag needs no CORS; this lets a page pin the file with Subresource Integrity.
        "Access-Control-Allow-Origin": "*",
        "X-Content-Hash-Name": f"recomengine.{bundle.digest}.js",
    }
    if bundle.etag in (request.headers.get("if-none-match") or ""):
        return empty(status=304, headers=headers)
    body = bundle.body
    encoding = _encoding(request.headers.get("accept-encoding") or "")
    if encoding == "br":
        body, headers["Content-Encoding"] = bundle.brotlied, "br"
    elif encoding == "gzip":
        body, headers["Content-Encoding"] = bundle.gzipped, "gzip"
    return raw(body, content_type="application/javascript; charset=utf-8", headers=headers)


# Preflights of the storefront routes (a browser sends them before any request with X-API-Key).
for _path in (
    "/api/v1/recommendations",
    "/api/v1/widgets/<placement_id:str>",
    "/api/v1/storefront/events",
    "/api/v1/users/merge",
    "/api/v1/events",
    "/api/v1/events/batch",
    "/api/v1/catalog",
    "/api/v1/catalog/<product_id:str>",
):
    bp.add_route(preflight, _path, methods=["OPTIONS"], name=f"preflight{_path}")


def _refuse_foreign_origin(request: Request) -> None:
    """A browser write from an origin the tenant does not allow has no effect."""
    if request.headers.get("origin") and not origin_of_tenant_allowed(request):
        raise Forbidden("This origin is not in the tenant's allowedOrigins.")


class StorefrontEventBatch(ApiModel):
    """Events a storefront sends (batched by the SDK) and the shopper's consent, if known."""

    events: list[dict[str, Any]] = Field(min_length=1, max_length=100)
    consent: bool | None = None


class StorefrontEventResult(ApiModel):
    """What happened to the batch (the shape of POST /events/batch)."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[dict[str, Any]]
    variant_corrections: int


async def _experiment(
    request: Request, tenant_id: str, experiment_id: str, placement_id: str | None
) -> dict[str, Any] | None:
    """{experimentId, trafficSplit} of the tenant's experiment: the running projection of the
    placement when it is that experiment, else PostgreSQL (a paused or completed one)."""
    if placement_id:
        try:
            running = await read_running_experiment(
                request.app.ctx.redis, tenant_id=tenant_id, placement_id=placement_id
            )
        except (RedisError, OSError):
            running = None
        if running and str(running.get("experimentId")) == experiment_id:
            return running
    return await storefront_store.experiment_split(
        request.app.ctx.db, tenant_id=tenant_id, experiment_id=experiment_id
    )


async def apply_server_variants(request: Request, items: list[Any]) -> int:
    """Set the variant of each recommendation event that names an experiment to the one the
    server assigns (the hash of experimentId:userId); an unknown experiment is dropped. Returns
    how many client-sent variants disagreed, which are counted for operators."""
    tenant_id = request.ctx.tenant_id
    splits: dict[str, dict[str, Any] | None] = {}
    mismatches = 0
    for item in items:
        # Not yet validated: an eventType that is no string (a JSON object, say) is no
        # recommendation event, and validation refuses it later.
        if not isinstance(item, dict) or not isinstance(item.get("eventType"), str):
            continue
        if item["eventType"] not in RECOMMENDATION_EVENT_TYPES:
            continue
        metadata = item.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("experimentId"):
            continue
        experiment_id = str(metadata["experimentId"])
        if experiment_id not in splits:
            placement = metadata.get("placementId")
            splits[experiment_id] = await _experiment(
                request, tenant_id, experiment_id, placement if isinstance(placement, str) else None
            )
        experiment = splits[experiment_id]
        user_id = item.get("userId")
        if experiment is None or not isinstance(user_id, str) or not user_id:
            metadata.pop("experimentId", None)
            metadata.pop("variant", None)
            continue
        variant = server_variant(experiment=experiment, user_id=user_id)
        if metadata.get("variant") not in (None, variant):
            mismatches += 1
        metadata["variant"] = variant
    if mismatches:
        try:
            await storefront_store.count_variant_mismatches(
                request.app.ctx.redis, tenant_id=tenant_id, count=mismatches
            )
        except (RedisError, OSError):
            log.warning("variant mismatches could not be counted", exc_info=True)
    return mismatches


@bp.post("/api/v1/storefront/events")
@document(
    summary="Storefront events (impressions, clicks, views, cart) with a public read key",
    tags=["storefront"],
    body=StorefrontEventBatch,
    responses={202: StorefrontEventResult},
    security="apiKey",
)
@require_api_key(write=False, quota=True)
async def storefront_events(request: Request) -> HTTPResponse:
    """Validate and queue a storefront's events; purchases need a read_write key."""
    _refuse_foreign_origin(request)
    body = read_json(request)
    consent = body.pop("consent", None) if isinstance(body, dict) else None
    if (request.ctx.tenant_config or {}).get("requireConsent") and consent is not True:
        raise ConsentRequired("This shop tracks shoppers only after their consent.")
    items = batch_items(body)
    corrections = await apply_server_variants(request, items)
    return await _ingest(request, items, corrections)


async def _ingest(request: Request, items: list[Any], corrections: int) -> HTTPResponse:
    writer = request.ctx.api_key.permission == "read_write"

    def refuse(event: Event) -> FieldError | None:
        if not writer and event.event_type not in PUBLIC_EVENT_TYPES:
            return FieldError("eventType", "Needs a read_write key")
        return None

    ingest: IngestService = request.app.ctx.ingest
    answer = await ingest.accept_batch(
        tenant_id=request.ctx.tenant_id,
        items=items,
        refuse=refuse,
        test=request.ctx.api_key.environment == "test",
    )
    return json({**answer, "variantCorrections": corrections}, status=202)


class UserMerge(ApiModel):
    """Body of POST /users/merge."""

    from_user_id: str = Field(min_length=1, max_length=256)
    to_user_id: str = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _different(self) -> UserMerge:
        if self.from_user_id == self.to_user_id:
            raise ValueError("fromUserId and toUserId must differ")
        return self


class UserMergeRead(ApiModel):
    """What a merge moved."""

    from_user_id: str
    to_user_id: str
    moved_events: int


@bp.post("/api/v1/users/merge")
@document(
    summary="Merge an anonymous shopper's history into a known user",
    tags=["storefront"],
    body=UserMerge,
    responses={200: UserMergeRead},
    security="apiKey",
)
@require_api_key(write=False)
async def merge_users(request: Request) -> HTTPResponse:
    """read_write key, or a read key with a valid user token for toUserId."""
    _refuse_foreign_origin(request)
    body = parse_body(request, UserMerge)
    if not user_is_signed(request, body.to_user_id):
        raise Forbidden("Merging needs a read_write key or a valid X-User-Token for toUserId.")
    moved = await storefront_store.merge_users(
        request.app.ctx.db,
        request.app.ctx.redis,
        tenant_id=request.ctx.tenant_id,
        from_user_id=body.from_user_id,
        to_user_id=body.to_user_id,
    )
    return json(
        {"fromUserId": body.from_user_id, "toUserId": body.to_user_id, "movedEvents": moved}
    )


class UserTokenSecretRead(ApiModel):
    """The tenant's new user-token secret, shown only in this answer."""

    secret: str
    algorithm: str


@bp.post("/api/v1/tenants/<tenant_id:str>/user-token-secret")
@document(
    summary="Create or rotate the tenant's storefront user-token secret (shown once)",
    tags=["storefront"],
    responses={201: UserTokenSecretRead},
    security="bearer",
)
@require_admin
async def rotate_user_token_secret(request: Request, tenant_id: str) -> HTTPResponse:
    """A new secret; tokens signed with the previous one stop working at once."""
    tenant = await owned_tenant(request, tenant_id, write=True)
    tenant_id = str(tenant["id"])
    nonce = await storefront_store.rotate_user_token_nonce(request.app.ctx.db, tenant_id=tenant_id)
    try:
        await bump_auth_epoch(request.app.ctx.redis, tenant_id=tenant_id)
    except (RedisError, OSError) as exc:
        raise Unavailable("The new secret was saved but not announced; rotate again.") from exc
    secret = secret_of(request.app.ctx.settings.api_key_secret, tenant_id, nonce)
    return json(
        {"secret": secret, "algorithm": "hex(HMAC-SHA256(secret, userId))"},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


@bp.get("/metrics/storefront")
@document(
    summary="Storefront counters (Prometheus text format)",
    errors={503: "The counters cannot be read (Redis unavailable)."},
    tags=["operations"],
    responses={200: None},
    content_type="text/plain",
)
async def storefront_metrics(request: Request) -> HTTPResponse:
    """Client-sent experiment variants the server overruled, per tenant."""
    try:
        counts = await storefront_store.variant_mismatches(request.app.ctx.redis)
    except (RedisError, OSError) as exc:
        raise Unavailable("The counters cannot be read.") from exc
    name = "recomengine_experiment_variant_mismatches_total"
    lines = [
        f"# HELP {name} Client-sent experiment variants that disagreed with the server's.",
        f"# TYPE {name} counter",
        *(f'{name}{{tenant="{tenant}"}} {count}' for tenant, count in sorted(counts.items())),
    ]
    return raw(("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")


def install(app: Sanic) -> None:
    """Register the storefront routes and CORS on the app."""
    install_cors(app)
    app.blueprint(bp)
