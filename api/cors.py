"""CORS for the storefront routes, per tenant: only origins in the tenant's
`config.allowedOrigins` may read answers or send events from a browser."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty

from domain.storefront import (
    ALLOWED_HEADERS,
    ALLOWED_METHODS,
    EXPOSED_HEADERS,
    PREFLIGHT_MAX_AGE_SECONDS,
    allowed_origins,
    normalise_origin,
    origin_allowed,
)
from store.storefront import all_allowed_origins

# The routes a storefront calls from the browser; the admin api is not opened to other origins.
STOREFRONT_PATHS = (
    "/api/v1/recommendations",
    "/api/v1/widgets/",
    "/api/v1/storefront/",
    "/api/v1/users/merge",
    "/api/v1/events",
    "/api/v1/catalog",
)


def is_storefront_path(path: str) -> bool:
    """Whether CORS applies to this path."""
    return path.startswith(STOREFRONT_PATHS)


class OriginIndex:
    """The union of every active tenant's allowed origins, for preflights (which carry no key);
    read from PostgreSQL at most every few seconds."""

    REFRESH_SECONDS = 5.0

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._origins: frozenset[str] = frozenset()
        self._read_at = -1e9
        self._lock = asyncio.Lock()

    async def contains(self, origin: str) -> bool:
        """Whether some tenant allows `origin`."""
        if time.monotonic() - self._read_at > self.REFRESH_SECONDS:
            async with self._lock:
                if time.monotonic() - self._read_at > self.REFRESH_SECONDS:
                    found = await all_allowed_origins(self._pool)
                    self._origins = allowed_origins({"allowedOrigins": found})
                    self._read_at = time.monotonic()
        return origin_allowed(origin, self._origins)


async def preflight(request: Request, **_path: str) -> HTTPResponse:
    """204 with the allowed methods and headers for an origin some tenant allows; 204 without
    any CORS header otherwise (the browser then refuses the request)."""
    origin = request.headers.get("origin")
    index: OriginIndex = request.app.ctx.cors_origins
    if not origin or not await index.contains(origin):
        return empty(status=204, headers={"Vary": "Origin"})
    return empty(
        status=204,
        headers={
            "Access-Control-Allow-Origin": normalise_origin(origin) or origin,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
            "Vary": "Origin",
        },
    )


def origin_of_tenant_allowed(request: Request) -> bool:
    """Whether the request's Origin is one the key's tenant allows (False without an Origin)."""
    config = getattr(request.ctx, "tenant_config", None)
    return config is not None and origin_allowed(
        request.headers.get("origin"), allowed_origins(config)
    )


async def add_cors_headers(request: Request, response: HTTPResponse) -> None:
    """Response middleware: the tenant's origins may read storefront answers; no one else."""
    if request.method == "OPTIONS" or not is_storefront_path(request.path):
        return
    origin = request.headers.get("origin")
    if not origin:
        return
    vary = response.headers.get("Vary")
    response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    if origin_of_tenant_allowed(request):
        response.headers["Access-Control-Allow-Origin"] = normalise_origin(origin) or origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


def install(app: Sanic) -> None:
    """Register the CORS middleware and the origin index (built with the pools)."""

    @app.before_server_start
    async def build_origin_index(app: Sanic) -> None:
        app.ctx.cors_origins = OriginIndex(app.ctx.db)

    app.register_middleware(add_cors_headers, "response")  # type: ignore[arg-type]
