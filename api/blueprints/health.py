"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from api.openapi import build_document, document
from api.validation import ApiModel

bp = Blueprint("health")


class HealthRead(ApiModel):
    """Liveness answer."""

    status: str


class ReadinessRead(ApiModel):
    """Readiness answer with one check per dependency."""

    status: str
    checks: dict[str, str]


@bp.get("/health")
@document(summary="Liveness", tags=["health"], responses={200: HealthRead})
async def health(request: Request) -> HTTPResponse:
    """The process is up."""
    return json({"status": "ok"})


async def _check(name: str, probe: object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, timeout=2)  # type: ignore[arg-type]
        return name, "ok"
    except Exception:  # any failure means "not ready"; the reason is logged by the client
        return name, "unavailable"


@bp.get("/ready")
@document(summary="Readiness", tags=["health"], responses={200: ReadinessRead, 503: ReadinessRead})
async def ready(request: Request) -> HTTPResponse:
    """PostgreSQL, Redis and the broker answer."""
    ctx = request.app.ctx
    results = await asyncio.gather(
        _check("postgres", ctx.db.fetchval("SELECT 1")),
        _check("redis", ctx.redis.ping()),
        _check("broker", ctx.broker_redis.ping()),
    )
    checks = dict(results)
    ok = all(value == "ok" for value in checks.values())
    return json(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


@bp.get("/api/v1/openapi.json")
@document(summary="This OpenAPI document", tags=["health"], responses={200: None})
async def openapi_document(request: Request) -> HTTPResponse:
    """The OpenAPI 3.1 description of this api."""
    return json(build_document(request.app, version=request.app.ctx.version))
