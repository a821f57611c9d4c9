"""RFC 9457 problem responses for every error the api answers."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sanic import Request
from sanic.exceptions import MethodNotAllowed, SanicException
from sanic.response import HTTPResponse, json

from domain import errors

log = logging.getLogger("recomengine.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://docs.recomengine.dev/problems/"

_DOMAIN_STATUS: dict[type[errors.DomainError], int] = {
    errors.ValidationFailed: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Forbidden: 403,
    errors.Unauthorized: 401,
    errors.RateLimited: 429,
    errors.QuotaExceeded: 429,
    errors.Unavailable: 503,
}

# PostgreSQL or Redis down or restarting: the same request may well succeed a moment later, so
# the answer is a 503 with Retry-After (clients and the SDK retry it), never a 500.
_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)
OUTAGE_RETRY_AFTER_SECONDS = 1

_STATUS_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def problem(
    request: Request | None,
    *,
    status: int,
    detail: str,
    title: str | None = None,
    errors_: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> HTTPResponse:
    """A problem+json response; `instance` is the request path and the request id is included."""
    title = title or _STATUS_TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": TYPE_BASE + _slug(title),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path if request is not None else None,
    }
    if request is not None and getattr(request.ctx, "request_id", None):
        body["requestId"] = request.ctx.request_id
    if errors_ is not None:
        body["errors"] = errors_
    if extra:
        body.update(extra)
    return json(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def from_domain_error(request: Request, error: errors.DomainError) -> HTTPResponse:
    """Map a domain error to its problem response."""
    status = next((code for kind, code in _DOMAIN_STATUS.items() if isinstance(error, kind)), 400)
    headers: dict[str, str] = {}
    if isinstance(error, errors.RateLimited):
        headers = {
            "Retry-After": str(error.retry_after),
            "RateLimit-Limit": str(error.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(error.reset),
        }
    elif isinstance(error, errors.QuotaExceeded):
        # Until the allowance starts again: the first of the next month (UTC).
        headers = {"Retry-After": str(error.retry_after)}
    elif isinstance(error, errors.Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="recomengine"'}
    elif isinstance(error, errors.Unavailable):
        headers = {"Retry-After": "5"}
    field_errors = (
        [{"field": e.field, "message": e.message} for e in error.errors]
        if error.errors or isinstance(error, errors.ValidationFailed)
        else None
    )
    return problem(
        request,
        status=status,
        title=error.title,
        detail=error.detail,
        errors_=field_errors,
        headers=headers,
        extra={"code": error.code} if isinstance(error, errors.QuotaExceeded) else None,
    )


async def handle_exception(request: Request, exception: Exception) -> HTTPResponse:
    """The one error handler of the app: domain errors, Sanic's own, and the unexpected."""
    if isinstance(exception, errors.DomainError):
        return from_domain_error(request, exception)
    if isinstance(exception, SanicException):
        status = int(getattr(exception, "status_code", 500) or 500)
        if status >= 500:
            log.exception("request failed", extra={"request_id": _request_id(request)})
            return problem(request, status=status, detail="The server could not answer.")
        detail = str(exception) or _STATUS_TITLES.get(status, "Error")
        if status == 400 and "json" in detail.lower():
            detail = "The body is not valid JSON."
        headers = dict(getattr(exception, "headers", {}) or {})
        if isinstance(exception, MethodNotAllowed) and "Allow" not in headers:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem(request, status=status, detail=detail, headers=headers)
    if isinstance(exception, _OUTAGES):
        log.warning(
            "a dependency is unavailable",
            extra={"request_id": _request_id(request)},
            exc_info=exception,
        )
        return problem(
            request,
            status=503,
            detail="A service the platform depends on is restarting; retry in a moment.",
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_SECONDS)},
        )
    log.exception(
        "unexpected error", extra={"request_id": _request_id(request)}, exc_info=exception
    )
    return problem(
        request,
        status=500,
        detail="An unexpected error occurred; quote the request id when reporting it.",
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """The methods the request's path answers (RFC 9110 wants them in a 405's Allow); Sanic's
    router leaves them out when several routes share the path's shape."""
    allowed = []
    for method in _METHODS:
        try:
            request.app.router.get(request.path, method, request.headers.get("host"))
        except SanicException:
            continue
        allowed.append(method)
    return allowed


def _request_id(request: Request) -> str | None:
    return getattr(request.ctx, "request_id", None)
