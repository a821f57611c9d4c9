"""Storefront rules: CORS origins, which events a public key may send, personalised strategies
and the server-side experiment variant of recommendation events."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from domain.experiments.assignment import assign_variant

# A public (read) key may report what a shopper saw and did; purchases carry revenue and need a
# read_write key (the merchant's backend).
PUBLIC_EVENT_TYPES = frozenset(
    {
        "recommendation_impressed",
        "recommendation_clicked",
        "product_viewed",
        "product_clicked",
        "add_to_cart",
        "remove_from_cart",
    }
)
RECOMMENDATION_EVENT_TYPES = frozenset({"recommendation_impressed", "recommendation_clicked"})
# Strategies that answer from nothing about the shopper: open to unsigned user ids.
UNPERSONALISED_STRATEGIES = frozenset({"trending"})
PREFLIGHT_MAX_AGE_SECONDS = 600
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "X-API-Key, Content-Type, X-User-Token, Authorization, X-Request-ID"
EXPOSED_HEADERS = "X-Request-ID, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After"
_BECAUSE = re.compile(rb',"because":\[(?:"(?:[^"\\]|\\.)*",?)*\]')


def normalise_origin(origin: str) -> str | None:
    """`scheme://host[:port]` lower-cased without a default port, or None for a non-origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def allowed_origins(config: Mapping[str, Any] | None) -> frozenset[str]:
    """The tenant's configured origins, normalised."""
    origins = (config or {}).get("allowedOrigins") or []
    normalised = (normalise_origin(o) for o in origins if isinstance(o, str))
    return frozenset(o for o in normalised if o)


def origin_allowed(origin: str | None, origins: Iterable[str]) -> bool:
    """Whether a browser's Origin header is one of `origins` (exact, after normalising)."""
    if not origin:
        return False
    normalised = normalise_origin(origin)
    return normalised is not None and normalised in set(origins)


def requires_signed_user(
    *, config: Mapping[str, Any] | None, strategy: str | None, product_id: str | None
) -> bool:
    """Whether a request must carry a valid user token: the tenant's requireUserToken applies to
    personalised answers only (trending and item-context ones stay open)."""
    if not (config or {}).get("requireUserToken"):
        return False
    return not product_id and strategy not in UNPERSONALISED_STRATEGIES


def strip_because(body: bytes) -> bytes:
    """An answer's JSON without `reason.because` (a shopper's history stays private)."""
    return _BECAUSE.sub(b"", body)


def server_variant(*, experiment: Mapping[str, Any], user_id: str) -> str:
    """The variant the server assigns the user in `experiment` ({experimentId, trafficSplit})."""
    return assign_variant(
        experiment_id=str(experiment["experimentId"]),
        user_id=user_id,
        traffic_split=int(experiment["trafficSplit"]),
    )
