"""Security headers on every answer, and NUL bytes in the URL refused before any route runs."""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import HTTPResponse

from api.problems import problem

# Pages may load their own scripts, styles, images and fonts and call this origin; nothing may
# frame them.
HTML_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Anything else is data: it may load nothing and be framed by nobody.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000; includeSubDomains"
_NUL_MARKS = (b"%00", b"\x00")


def refuse_nul_bytes(request: Request) -> HTTPResponse | None:
    """A NUL byte (`%00`) in the path or query is a 400 problem, as in a body: no text column or
    Redis key may hold one, and no route should have to check."""
    raw = request.raw_url
    if not any(mark in raw for mark in _NUL_MARKS):
        return None
    where = "query" if b"?" in raw and raw.index(b"?") < _first_nul(raw) else "path"
    return problem(
        request,
        status=400,
        detail="The URL contains a NUL byte (%00), which no parameter may hold.",
        errors_=[{"field": where, "message": "must not contain NUL bytes"}],
    )


def _first_nul(raw: bytes) -> int:
    return min(raw.find(mark) for mark in _NUL_MARKS if mark in raw)


def add_security_headers(request: Request, response: HTTPResponse) -> None:
    """CSP and framing for every answer, HSTS over TLS, no caching of authenticated JSON."""
    headers = response.headers
    content_type = (response.content_type or headers.get("content-type") or "").lower()
    if content_type.startswith("text/html"):
        headers.setdefault("Content-Security-Policy", HTML_POLICY)
    else:
        headers.setdefault("Content-Security-Policy", DATA_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    # request.scheme follows X-Forwarded-Proto only when SANIC_PROXIES_COUNT (or
    # SANIC_FORWARDED_SECRET / SANIC_REAL_IP_HEADER) says a proxy sets it.
    if request.scheme == "https":
        headers.setdefault("Strict-Transport-Security", HSTS)
    if getattr(request.ctx, "admin_id", None) is not None:
        # An admin's data (JSON, CSV...): never kept by a browser or a shared cache.
        headers["Cache-Control"] = "no-store"
    elif "json" in content_type and _authenticated(request):
        # API-key answers: a route that means to be cached (widget configs) says so.
        headers.setdefault("Cache-Control", "no-store")


def _authenticated(request: Request) -> bool:
    return bool(
        request.headers.get("authorization")
        or request.headers.get("x-api-key")
        or request.cookies.get("recomengine_refresh")
    )


def register(app: Sanic) -> None:
    """Install the NUL-byte guard and the header middleware on `app`."""
    app.register_middleware(refuse_nul_bytes, "request", priority=99)
    app.register_middleware(add_security_headers, "response", priority=99)  # type: ignore[arg-type]
