"""The ceiling of the read path: a bare Sanic app whose one endpoint returns one Redis GET.

    python -m bench.read_path.ceiling --port PORT --redis-url URL --key KEY

Same server settings as `recomengine api` (one process, no access log) and the same Redis
client options as the api's projections client, so the only difference is the work per request.
"""

from __future__ import annotations

import argparse

from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from store.redis import create_redis
from store.settings import Settings


def create_app(*, redis_url: str, key: str) -> Sanic:
    """The bare app: GET /value answers the stored value as JSON."""
    app = Sanic("read_path_ceiling")
    settings = Settings(environment="development", redis_url=redis_url)

    @app.before_server_start
    async def connect(app: Sanic) -> None:
        app.ctx.redis = create_redis(settings)

    @app.after_server_stop
    async def disconnect(app: Sanic) -> None:
        await app.ctx.redis.aclose()

    @app.get("/value")
    async def value(request: Request) -> HTTPResponse:
        body = await request.app.ctx.redis.get(key)
        return raw(body or b"null", content_type="application/json")

    return app


def main() -> None:
    """Serve the ceiling app until stopped."""
    parser = argparse.ArgumentParser(prog="python -m bench.read_path.ceiling")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    app = create_app(redis_url=args.redis_url, key=args.key)
    app.prepare(host="127.0.0.1", port=args.port, single_process=True, access_log=False, motd=False)
    Sanic.serve_single(primary=app)


if __name__ == "__main__":
    main()
