"""Storefront user tokens on a request: whether it may see a shopper's personal data."""

from __future__ import annotations

from functools import lru_cache

from sanic import Request

from domain.usertokens import derive_secret, token_is_valid


@lru_cache(maxsize=4096)
def secret_of(server_secret: str, tenant_id: str, nonce: str) -> str:
    """The tenant's user-token secret for its nonce (derived once per process)."""
    return derive_secret(server_secret=server_secret, tenant_id=tenant_id, nonce=nonce)


def user_is_signed(request: Request, user_id: str) -> bool:
    """Whether the request may see `user_id`'s personal data: a read_write key, or a valid
    X-User-Token for that user under the tenant's current secret."""
    record = getattr(request.ctx, "api_key", None)
    if record is None:
        return False
    if record.permission == "read_write":
        return True
    if not record.user_token_nonce:
        return False
    secret = secret_of(
        request.app.ctx.settings.api_key_secret, record.tenant_id, record.user_token_nonce
    )
    return token_is_valid(secret=secret, user_id=user_id, token=request.headers.get("x-user-token"))
