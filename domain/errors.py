"""Domain errors: what went wrong, in words a client can act on. The api maps them to HTTP."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where (dotted path) and why."""

    field: str
    message: str


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    title = "Request failed"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class ValidationFailed(DomainError):
    """Input broke a rule."""

    title = "Validation failed"


class NotFound(DomainError):
    """No such thing for this caller (also: it belongs to someone else)."""

    title = "Not found"


class Conflict(DomainError):
    """The request conflicts with the current state."""

    title = "Conflict"


class Forbidden(DomainError):
    """Valid credentials without the right to do this."""

    title = "Forbidden"


class Unauthorized(DomainError):
    """No or invalid credentials."""

    title = "Unauthorized"


class RateLimited(DomainError):
    """Too many requests in the current window."""

    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, limit: int, reset: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.limit = limit
        self.reset = reset


class QuotaExceeded(DomainError):
    """The plan's monthly allowance is used up and the plan accrues no overage."""

    title = "Quota exceeded"
    code = "quota_exceeded"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency is down; try again later."""

    title = "Service unavailable"
