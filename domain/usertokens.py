"""Storefront user tokens: the merchant's backend signs a shopper's id so that a public read key
may see that shopper's personal data (reason.because, merging an anonymous history)."""

from __future__ import annotations

import hashlib
import hmac
import re

_TOKEN = re.compile(r"^[0-9a-f]{64}$")


def derive_secret(*, server_secret: str, tenant_id: str, nonce: str) -> str:
    """The tenant's user-token secret (64 hex digits) for its current nonce."""
    message = f"user-token:{tenant_id}:{nonce}".encode()
    return hmac.new(server_secret.encode(), message, hashlib.sha256).hexdigest()


def sign_user(*, secret: str, user_id: str) -> str:
    """hex(HMAC-SHA256(secret, userId)): what the merchant's backend puts in X-User-Token."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def token_is_valid(*, secret: str | None, user_id: str, token: str | None) -> bool:
    """Whether `token` signs `user_id` with `secret` (compared in constant time)."""
    if not secret or not token or not user_id:
        return False
    token = token.strip().lower()
    if not _TOKEN.match(token):
        return False
    return hmac.compare_digest(sign_user(secret=secret, user_id=user_id), token)
