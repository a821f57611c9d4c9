"""Every Redis key the platform uses; each one contains the tenant id."""

from __future__ import annotations

PREFIX = "reco"


def rate_limit(key_id: str, scope: str, window: int) -> str:
    """Counter of requests of one API key in one fixed window."""
    return f"{PREFIX}:ratelimit:{key_id}:{scope}:{window}"


def auth_throttle(kind: str, subject: str, window: int) -> str:
    """Counter of auth attempts (per account or per IP) in one window."""
    return f"{PREFIX}:authlimit:{kind}:{subject}:{window}"


def api_key_last_used(tenant_id: str) -> str:
    """Hash key id -> last-used unix time, flushed to PostgreSQL by a job."""
    return f"{PREFIX}:{tenant_id}:apikeys:lastused"


API_KEY_LAST_USED_TENANTS = f"{PREFIX}:apikeys:lastused:tenants"
AUTH_INVALIDATION_CHANNEL = f"{PREFIX}:auth:invalidate"
SCHEDULER_LOCK = f"{PREFIX}:scheduler:lock"


def auth_epoch(tenant_id: str) -> str:
    """Counter bumped whenever a key of the tenant is revoked or the tenant changes status."""
    return f"{PREFIX}:{tenant_id}:auth:epoch"


def catalog_available(tenant_id: str) -> str:
    """SET of the tenant's available product ids."""
    return f"{PREFIX}:{tenant_id}:catalog:available"


def catalog_cards(tenant_id: str) -> str:
    """HASH product id -> JSON card {name, price, currency, imageUrl, url, category, available}
    for every product of the tenant (also unavailable ones), to hydrate in one HMGET."""
    return f"{PREFIX}:{tenant_id}:catalog:cards"


def api_key_rate_limit(tenant_id: str, key_id: str, scope: str, window: int) -> str:
    """Sliding-window ZSET of one API key's requests of `scope` (read/write) in `window` s."""
    return f"{PREFIX}:{tenant_id}:ratelimit:{key_id}:{scope}:{window}"
