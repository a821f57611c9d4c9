"""The web server's Sanic app: static files with the right caching, SPA fallback, api proxy."""

from __future__ import annotations

import asyncio
import gzip
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import httpx
from sanic import Request, Sanic
from sanic.compat import Header
from sanic.response import HTTPResponse, file, raw, text

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
# Headers that describe one hop, not the message (RFC 9110 7.6.1), plus those httpx recomputes.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class WebConfig:
    """Where the web server finds its files and the api."""

    dist_dir: Path
    shop_dir: Path
    api_url: str
    # The built public pages and docs (web/site_build.py); absent: the dashboard answers.
    site_dir: Path | None = None
    request_max_bytes: int = 16 * 1024 * 1024


def _inside(root: Path, relative: str) -> Path | None:
    """`root/relative` when it is a file inside `root` (no traversal), else None."""
    try:
        root = root.resolve()
        candidate = (root / relative).resolve()
    except (OSError, ValueError):
        return None
    if candidate != root and root not in candidate.parents:
        return None
    return candidate if candidate.is_file() else None


def _is_hashed_asset(relative: str) -> bool:
    # Vite writes content-hashed names only under assets/ (name-<hash>.ext).
    return relative.startswith("assets/")


_COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".json", ".txt", ".map", ".xml")
# Compressed files by (path, size, mtime): the built files are few and small, and a rebuild
# changes their names or their mtime.
_gzipped: dict[tuple[str, int, float], bytes] = {}


def _gzip_of(path: Path) -> bytes:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    found = _gzipped.get(key)
    if found is None:
        found = gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)
        _gzipped[key] = found
    return found


async def _send(request: Request, path: Path, cache_control: str) -> HTTPResponse:
    mime, _ = mimetypes.guess_type(path.name)
    content_type = mime or "application/octet-stream"
    if path.suffix in _COMPRESSIBLE:
        headers = {"cache-control": cache_control, "vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = await asyncio.to_thread(_gzip_of, path)
            headers["content-encoding"] = "gzip"
            return raw(body, content_type=content_type, headers=headers)
        return raw(
            await asyncio.to_thread(path.read_bytes), content_type=content_type, headers=headers
        )
    return await file(path, mime_type=content_type, headers={"cache-control": cache_control})


def create_web_app(config: WebConfig, *, name: str = "recomengine_web") -> Sanic:
    """The web app; the proxy's HTTP client is built when the server starts."""
    app = Sanic(name, configure_logging=False)
    app.config.REQUEST_MAX_SIZE = config.request_max_bytes
    app.config.RESPONSE_TIMEOUT = 3600  # the event stream is a long response
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.ACCESS_LOG = False
    app.ctx.config = config

    @app.before_server_start
    async def build_client(app: Sanic) -> None:
        app.ctx.http = httpx.AsyncClient(
            base_url=config.api_url.rstrip("/"),
            timeout=httpx.Timeout(60.0, read=None),
            follow_redirects=False,
        )

    @app.after_server_stop
    async def close_client(app: Sanic) -> None:
        await app.ctx.http.aclose()

    async def proxy(request: Request, upstream_path: str) -> HTTPResponse | None:
        """Forward the call to the api, streaming its answer (so the event stream flows)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        forwarded = request.headers.get("x-forwarded-for")
        client = request.client_ip or ""
        headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
        outgoing = request.app.ctx.http.build_request(
            request.method,
            upstream_path,
            params=request.query_string or None,
            headers=headers,
            content=request.body or None,
        )
        try:
            upstream = await request.app.ctx.http.send(outgoing, stream=True)
        except httpx.HTTPError:
            return HTTPResponse(
                body=b'{"type":"about:blank","title":"Bad Gateway","status":502,'
                b'"detail":"The api cannot be reached; retry shortly."}',
                status=502,
                content_type="application/problem+json",
            )
        try:
            response = await request.respond(
                status=upstream.status_code,
                headers=Header(
                    [
                        (k, v)
                        for k, v in upstream.headers.multi_items()
                        if k.lower() not in _HOP_BY_HOP
                    ]
                ),
                content_type=upstream.headers.get("content-type"),
            )
            # Raw bytes with the api's own Content-Encoding: passed through as they came.
            async for chunk in upstream.aiter_raw():
                await response.send(chunk)
            await response.eof()
        finally:
            await upstream.aclose()
        return None

    @app.route("/api/<path:path>", methods=_PROXY_METHODS, name="proxy_api")
    async def proxy_api(request: Request, path: str) -> HTTPResponse | None:
        """The api, same-origin: the refresh cookie and the CSRF header stay first-party."""
        return await proxy(request, "/api/" + path)

    @app.get("/v1/<path:path>", name="proxy_sdk")
    async def proxy_sdk(request: Request, path: str) -> HTTPResponse | None:
        """The storefront SDK bundle the api serves (the widget preview runs it)."""
        return await proxy(request, "/v1/" + path)

    @app.route(
        "/preview/<revision:str>/<area:api|v1>/<path:path>",
        methods=_PROXY_METHODS,
        name="proxy_preview",
    )
    async def proxy_preview(
        request: Request, revision: str, area: str, path: str
    ) -> HTTPResponse | None:
        """The api under a per-revision base for the widget preview: each saved config gets
        new URLs, so the browser never answers the SDK from a config it cached earlier."""
        return await proxy(request, f"/{area}/{path}")

    async def serve_shop(request: Request, path: str) -> HTTPResponse:
        relative = path if path and not path.endswith("/") else path + "index.html"
        found = _inside(config.shop_dir, relative)
        if found is None:
            return text("Not found", status=404)
        return await _send(request, found, NO_CACHE)

    def site_file(path: str) -> Path | None:
        """The public page or site file of `path`, if the site is built and has one."""
        if config.site_dir is None:
            return None
        clean = path.strip("/")
        if not clean:
            return _inside(config.site_dir, "index.html")
        return _inside(config.site_dir, clean) or _inside(config.site_dir, clean + "/index.html")

    async def serve_dashboard(request: Request, path: str) -> HTTPResponse:
        page = site_file(path)
        if page is not None:
            hashed = path.startswith("site-assets/")
            return await _send(request, page, IMMUTABLE if hashed else NO_CACHE)
        found = _inside(config.dist_dir, path) if path else None
        if found is not None and found.name != "index.html":
            return await _send(request, found, IMMUTABLE if _is_hashed_asset(path) else NO_CACHE)
        if _is_hashed_asset(path):
            # A missing hashed file is a stale reference, not an app route.
            return text("Not found", status=404)
        index = _inside(config.dist_dir, "index.html")
        if index is None:
            return text(
                "The dashboard is not built; run scripts/bootstrap.sh (npm ci && vite build).",
                status=503,
            )
        return await _send(request, index, NO_CACHE)

    @app.get("/shop", name="shop_root")
    async def shop_root(request: Request) -> HTTPResponse:
        """The shop's index, like a static host would answer a folder."""
        return await serve_shop(request, "")

    @app.get("/shop/<path:path>", name="shop_file")
    async def shop_file(request: Request, path: str) -> HTTPResponse:
        """A file of the demo shop folder, when the demo wrote one."""
        return await serve_shop(request, path)

    @app.get("/<path:path>", name="dashboard_file")
    async def dashboard_file(request: Request, path: str) -> HTTPResponse:
        """A public page, a built file, or the app's index for any other route (the app's
        router decides there)."""
        return await serve_dashboard(request, path)

    @app.get("/", name="dashboard_root")
    async def dashboard_root(request: Request) -> HTTPResponse:
        """The landing page (the app's index when the public pages are not built)."""
        return await serve_dashboard(request, "")

    return app
