"""The Sanic app factory: blueprints, start-up hooks that build the pools, error handling."""

from __future__ import annotations

import gc
import logging
import os
import re
import time
from importlib.metadata import PackageNotFoundError, version

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from api import headers, metrics, problems
from api.blueprints import ALL_BLUEPRINTS, storefront
from api.blueprints.console import CONSOLE_BLUEPRINTS
from api.security import ApiKeyAuthenticator
from store.answers import ANSWER_LOOKUP, AnswerProjector
from store.db import create_pool
from store.logs import configure_logging
from store.models import ServingReader
from store.ratelimit import RateLimiter
from store.redis import create_redis
from store.settings import Settings, get_settings

access_log = logging.getLogger("recomengine.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")

try:
    APP_VERSION = version("recomengine")
except PackageNotFoundError:  # running from a source tree without installing
    APP_VERSION = "0.0.0"


def create_app(settings: Settings | None = None, *, name: str = "recomengine") -> Sanic:
    """A configured api app; pools are built when the server starts, not here."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = Sanic(name, configure_logging=False)
    app.config.REQUEST_MAX_SIZE = settings.request_max_bytes
    # Sanic's largest: a query string at the lengths the document allows (GET
    # /recommendations' exclude takes 10,000 characters) fits, not only 8 KB of it.
    app.config.REQUEST_MAX_HEADER_SIZE = 16_384
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.ACCESS_LOG = False
    app.ctx.settings = settings
    app.ctx.version = APP_VERSION

    app.error_handler.add(Exception, problems.handle_exception)

    @app.before_server_start
    async def build_pools(app: Sanic) -> None:
        app.ctx.db = await create_pool(settings)
        app.ctx.redis = create_redis(settings)
        app.ctx.broker_redis = create_redis(settings, settings.broker_url)
        app.ctx.limiter = RateLimiter(app.ctx.redis, follow_up=ANSWER_LOOKUP)
        app.ctx.serving_reader = ServingReader(app.ctx.redis)
        app.ctx.answer_projector = AnswerProjector(app.ctx.redis, app.ctx.serving_reader)
        app.ctx.api_keys = ApiKeyAuthenticator(
            settings=settings, pool=app.ctx.db, limiter=app.ctx.limiter
        )

    # After the pools' listener: the blueprints' start-up listeners run after it and use them.
    for blueprint in [*ALL_BLUEPRINTS, *CONSOLE_BLUEPRINTS]:
        app.blueprint(blueprint)
    storefront.install(app)  # the SDK bundle, storefront routes and per-tenant CORS

    @app.after_server_start
    async def freeze_startup_objects(app: Sanic) -> None:
        # Modules, routes and pools live as long as the process: moving them out of the
        # collector's generations keeps full collections, and their pauses, short.
        gc.freeze()

    @app.after_server_stop
    async def close_pools(app: Sanic) -> None:
        await app.ctx.db.close()
        await app.ctx.redis.aclose()
        await app.ctx.broker_redis.aclose()

    async def assign_request_id(request: Request) -> None:
        incoming = request.headers.get("x-request-id")
        request.ctx.request_id = (
            incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()
        )
        request.ctx.started = time.perf_counter()

    async def log_and_tag(request: Request, response: HTTPResponse) -> None:
        request_id = getattr(request.ctx, "request_id", None)
        if request_id:
            response.headers["X-Request-ID"] = request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not access_log.isEnabledFor(logging.INFO):
            return
        started = getattr(request.ctx, "started", None)
        access_log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2)
                if started
                else None,
            },
        )

    app.register_middleware(assign_request_id, "request", priority=100)
    app.register_middleware(log_and_tag, "response", priority=100)  # type: ignore[arg-type]
    headers.register(app)
    metrics.register(app)
    return app
