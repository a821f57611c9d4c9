"""Authentication guards: admin JWTs and tenant API keys, with rate limits."""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

import jwt
from redis.exceptions import RedisError
from sanic import Request
from sanic.response import HTTPResponse

from domain import apikeys
from domain.errors import (
    Forbidden,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from domain.usage import EVENTS, plan_for, write_quota
from store import keys
from store.api_keys import KeyRecord, find_key_by_hash
from store.ratelimit import NO_TOUCH, RateDecision, Touch, Window
from store.sessions import cached_session_version
from store.settings import Settings
from store.usage import meter_for, unmeter

ALLOWED_JWT_ALGORITHMS = ["HS256"]
log = logging.getLogger("recomengine.security")
Handler = Callable[..., Awaitable[HTTPResponse]]
R = TypeVar("R")
# Given the key: the follow-up keys and arguments of the rate-limit call.
FollowUp = Callable[[KeyRecord], tuple[list[str], list[str]] | None]


def issue_access_token(
    *, admin_id: str, settings: Settings, session_version: int = 0
) -> tuple[str, int]:
    """A signed access token for the admin's current session version, and its lifetime."""
    now = int(time.time())
    claims = {
        "sub": admin_id,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + settings.access_token_ttl_seconds,
        "jti": uuid.uuid4().hex,
        "sv": session_version,
    }
    token = jwt.encode(claims, settings.jwt_secret, algorithm=ALLOWED_JWT_ALGORITHMS[0])
    return token, settings.access_token_ttl_seconds


def verify_access_token(token: str, *, settings: Settings) -> tuple[str, int]:
    """The admin id and session version of a valid access token; Unauthorized otherwise."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=ALLOWED_JWT_ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "typ", "sv"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The access token has expired.") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The access token is invalid.") from exc
    version = claims.get("sv")
    if claims.get("typ") != "access" or type(version) is not int:
        raise Unauthorized("The access token is invalid.")
    try:
        return str(uuid.UUID(str(claims["sub"]))), version
    except ValueError as exc:
        raise Unauthorized("The access token is invalid.") from exc


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def require_admin(handler: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Route decorator: a valid admin access token; sets `request.ctx.admin_id`."""

    @wraps(handler)
    async def guarded(request: Request, *args: Any, **kwargs: Any) -> R:
        token = _bearer(request)
        if token is None or token.startswith("rk_"):
            raise Unauthorized("An admin access token is required (Authorization: Bearer).")
        admin_id, version = verify_access_token(token, settings=request.app.ctx.settings)
        # Logout, a reset or a password change bumps the version: older tokens end at once.
        current = await cached_session_version(
            request.app.ctx.redis, request.app.ctx.db, admin_id=admin_id
        )
        if current is None or current != version:
            raise Unauthorized("The session has ended; sign in again.")
        request.ctx.admin_id = admin_id
        return await handler(request, *args, **kwargs)

    return guarded


@dataclass
class _CachedKey:
    record: KeyRecord
    # The tenant's auth epoch read BEFORE the row was loaded; None until one is known.
    epoch: str | None
    fetched_at: float


@dataclass(frozen=True)
class Admission:
    """An API key resolved from the cache whose request the route counts itself."""

    key_hash: bytes
    cached: _CachedKey
    write: bool
    window: Window
    touch: Touch  # the key's last-used mark, when one is due

    @property
    def group(self) -> tuple[Window, str]:
        """What requests counted in one call must share: their window and epoch."""
        return self.window, self.epoch

    @property
    def record(self) -> KeyRecord:
        """The key as cached."""
        return self.cached.record

    @property
    def epoch(self) -> str:
        """The tenant's auth epoch the cached key is valid under."""
        return self.cached.epoch or ""


class ApiKeyAuthenticator:
    """Resolves API keys with an in-process cache that a Redis epoch invalidates at once.

    Every request runs one Lua call that counts the rate limit, reads the tenant's auth epoch
    and marks the key used. Revoking a key or changing a tenant's status bumps the epoch after
    the PostgreSQL commit, so every api worker reloads the key on its very next request
    instead of waiting for a TTL.
    """

    CACHE_SECONDS = 300.0
    DEGRADED_CACHE_SECONDS = 5.0
    MAX_CACHED_KEYS = 10_000
    # A key's last-used time is marked at most this often per process: a list shows it to the
    # minute, and two Redis writes saved on every request are worth more than the precision.
    LAST_USED_EVERY_SECONDS = 10.0

    def __init__(self, *, settings: Settings, pool: Any, limiter: Any) -> None:
        self._settings = settings
        self._pool = pool
        self._limiter = limiter
        self._cache: OrderedDict[bytes, _CachedKey] = OrderedDict()
        self._last_marked: dict[str, float] = {}

    async def _load(self, key_hash: bytes, now: float, *, epoch: str | None) -> _CachedKey | None:
        """Read the key from PostgreSQL and cache it; unknown keys are not cached, so that
        well-formed guesses cannot fill the memory of the process."""
        record = await find_key_by_hash(self._pool, key_hash=key_hash)
        if record is None:
            self._cache.pop(key_hash, None)
            return None
        cached = _CachedKey(record, epoch=epoch, fetched_at=now)
        self._cache[key_hash] = cached
        self._cache.move_to_end(key_hash)
        while len(self._cache) > self.MAX_CACHED_KEYS:
            self._cache.popitem(last=False)
        return cached

    async def _resolve(self, raw_key: str) -> tuple[bytes, _CachedKey]:
        """The key's hash and cache entry (loaded when absent or old); 401 when unknown."""
        parsed = apikeys.parse_key(raw_key)
        if parsed is None:
            raise Unauthorized("The API key is malformed.")
        key_hash = apikeys.hash_key(parsed.raw, secret=self._settings.api_key_secret)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is None or now - cached.fetched_at > self.CACHE_SECONDS:
            cached = await self._load(key_hash, now, epoch=None)
        if cached is None:
            raise Unauthorized("The API key is not valid.")
        return key_hash, cached

    def _window(
        self, record: KeyRecord, *, write: bool, quota: bool = False
    ) -> tuple[Window, Touch]:
        """The rate-limit window of one request of the key (with the tenant's auth epoch and,
        for a write of events (`quota`), the plan's events quota as its gate), and the key's
        last-used mark when one is due."""
        now = time.monotonic()
        last_marked = self._last_marked.get(record.key_id)
        touch = NO_TOUCH
        if last_marked is None or now - last_marked >= self.LAST_USED_EVERY_SECONDS:
            if len(self._last_marked) >= self.MAX_CACHED_KEYS:
                self._last_marked.clear()
            self._last_marked[record.key_id] = now
            touch = (record.key_id, datetime.now(UTC).isoformat())
        scope = "write" if write else "read"
        window = Window(
            key=keys.api_key_rate_limit(record.tenant_id, record.key_id, scope, 60),
            limit=self._limit(record, write=write),
            epoch_key=keys.auth_epoch(record.tenant_id),
            touch_hash=keys.api_key_last_used(record.tenant_id),
            touch_index=keys.API_KEY_LAST_USED_TENANTS,
            touch_member=record.tenant_id,
            # Every key of the tenant (of one environment) writes against one shared budget.
            shared_key=keys.tenant_rate_limit(record.tenant_id, record.environment, scope, 60),
            shared_limit=self._tenant_limit(record) if write else 0,
        )
        if quota:
            window = self._gated(window, record)
        return window, touch

    @staticmethod
    def _gated(window: Window, record: KeyRecord) -> Window:
        """`window` refusing every request once the month's metered events reach the quota of
        the key's plan (plans without overage only)."""
        plan = plan_for(tenant_plan=record.tenant_plan, environment=record.environment)
        limit = write_quota(plan)
        if limit is None:
            return window
        meter = meter_for(
            tenant_id=record.tenant_id,
            environment=record.environment,
            metric=EVENTS,
            now=datetime.now(UTC),
        )
        return replace(window, gate_key=meter.key, gate_field=meter.total, gate_limit=limit)

    def _tenant_limit(self, record: KeyRecord) -> int:
        """Writes per minute the tenant's keys share: its plan's (Sandbox for test keys)."""
        plan = plan_for(tenant_plan=record.tenant_plan, environment=record.environment)
        return self._settings.tenant_write_limit(plan.name.value)

    async def authenticate(
        self,
        raw_key: str,
        *,
        write: bool,
        follow_up: FollowUp | None = None,
        counted: Callable[[bool], None] | None = None,
        quota: bool = False,
    ) -> tuple[KeyRecord, RateDecision]:
        """The key's record and rate-limit decision; raises on any refusal.

        `follow_up` names the keys and arguments of the limiter's follow-up script for this
        key (or None): its reply comes back as the decision's `extra`. `counted(ran)` is told
        whether the follow-up ran, before any refusal is raised. `quota`: a write of events,
        refused past the plan's events quota.
        """
        key_hash, cached = await self._resolve(raw_key)
        lookup = follow_up(cached.record) if follow_up else None
        window, touch = self._window(cached.record, write=write, quota=quota)
        try:
            if lookup:
                counted_call = await self._limiter.count(
                    window,
                    requests=1,
                    touch=touch,
                    follow_up_keys=lookup[0],
                    follow_up_args=lookup[1],
                )
                decision = counted_call.decision(0)
                if counted is not None:
                    counted(decision.allowed)
            else:
                decision = await self._limiter.hit(window, touch=touch)
        except (RedisError, OSError) as exc:
            # Redis down: writes fail closed; reads go on unmetered with a short-lived cache.
            if write:
                raise Unavailable("Rate limiting is unavailable; retry shortly.") from exc
            now = time.monotonic()
            if now - cached.fetched_at > self.DEGRADED_CACHE_SECONDS:
                reloaded = await self._load(key_hash, now, epoch=None)
                if reloaded is None:
                    raise Unauthorized("The API key is not valid.") from exc
                cached = reloaded
            unmetered = RateDecision(
                allowed=True, limit=0, remaining=0, reset_seconds=0, epoch="", metered=False
            )
            return self._check(cached.record, write=write), unmetered
        return await self.settle(Admission(key_hash, cached, write, window, touch), decision)

    async def admit(self, raw_key: str, *, write: bool, quota: bool = False) -> Admission | None:
        """The key as cached, for a route that counts the request in a Redis call of its own
        (with the admission's `window`), then calls `settle` unless the count allowed it
        under the cached epoch.

        None when the cache cannot vouch for the key (no epoch known yet, or a cached refusal
        that a change since may have lifted): authenticate it instead.
        """
        key_hash, cached = await self._resolve(raw_key)
        if cached.epoch is None:
            return None
        try:
            self._check(cached.record, write=write)
        except (Unauthorized, Forbidden):
            return None
        return Admission(
            key_hash, cached, write, *self._window(cached.record, write=write, quota=quota)
        )

    async def settle(
        self, admission: Admission, decision: RateDecision
    ) -> tuple[KeyRecord, RateDecision]:
        """The key's record and the decision once the count is known; raises on any refusal."""
        cached, write = admission.cached, admission.write
        if cached.epoch != decision.epoch:
            # Either the tenant's keys, status or config changed since this key was cached, or
            # the row was read before any epoch was known (and may predate a change whose bump
            # the script has just seen): reload it, now that the epoch was read before the row.
            reloaded = await self._load(admission.key_hash, time.monotonic(), epoch=decision.epoch)
            if reloaded is None:
                raise Unauthorized("The API key is not valid.")
            cached = reloaded
            decision = decision.with_limit(self._limit(cached.record, write=write))
        record = self._check(cached.record, write=write)
        if decision.gated:
            raise _quota_exceeded(record)
        if not decision.allowed:
            scope = "write" if write else "read"
            if decision.shared_binds:
                raise RateLimited(
                    f"The tenant's budget of {decision.shared_limit} {scope} requests per "
                    "minute, shared by all of its keys, is used up.",
                    retry_after=decision.shared_reset_seconds,
                    limit=decision.shared_limit,
                    reset=decision.shared_reset_seconds,
                )
            raise RateLimited(
                f"Rate limit of {decision.limit} {scope} requests per minute exceeded.",
                retry_after=decision.reset_seconds,
                limit=decision.limit,
                reset=decision.reset_seconds,
            )
        return record, decision

    def _limit(self, record: KeyRecord, *, write: bool) -> int:
        limits = record.tenant_config.get("rateLimits") or {}
        if write:
            return int(limits.get("writesPerMinute") or self._settings.write_limit_per_minute)
        return int(limits.get("readsPerMinute") or self._settings.read_limit_per_minute)

    @staticmethod
    def _check(record: KeyRecord, *, write: bool) -> KeyRecord:
        if record.revoked or record.tenant_deleted:
            raise Unauthorized("The API key is not valid.")
        if record.tenant_status != "active":
            raise Forbidden("The tenant is suspended.")
        if write and record.permission != "read_write":
            raise Forbidden("This API key may only read; writing needs a read_write key.")
        return record


def _quota_exceeded(record: KeyRecord) -> QuotaExceeded:
    """The refusal of an events write past the quota of the key's plan, until next month."""
    plan = plan_for(tenant_plan=record.tenant_plan, environment=record.environment)
    now = datetime.now(UTC)
    following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    keys_kind = "test keys run" if record.environment == "test" else "tenant is"
    return QuotaExceeded(
        f"The {keys_kind} on the {plan.title} plan, whose {plan.events_included:,} events this "
        "month are used up: event writes are refused until next month (UTC) or a plan change; "
        "recommendations keep working.",
        retry_after=max(1, int((following - now).total_seconds())),
    )


def _api_key_from(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    token = _bearer(request)
    if token and token.startswith("rk_"):
        return token
    return None


def _required_api_key(request: Request) -> str:
    raw = _api_key_from(request)
    if raw is None:
        raise Unauthorized("An API key is required (X-API-Key header).")
    return raw


def _key_context(request: Request, record: KeyRecord) -> None:
    request.ctx.tenant_id = record.tenant_id
    request.ctx.api_key_id = record.key_id
    request.ctx.tenant_config = record.tenant_config
    request.ctx.api_key = record


def require_api_key(
    *,
    write: bool,
    follow_up: Callable[[Request], FollowUp | None] | None = None,
    quota: bool = False,
) -> Callable[[Handler], Handler]:
    """Route decorator: a tenant API key (read_write when `write`); sets request.ctx.tenant_id.

    `follow_up(request)` may add a follow-up to the rate-limit call; its reply is left in
    `request.ctx.follow_up_reply` (None when none ran). `quota`: the route writes events,
    refused (429 quota_exceeded) past the plan's events quota, checked in the same call.
    """

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            raw = _required_api_key(request)
            authenticator: ApiKeyAuthenticator = request.app.ctx.api_keys
            request.ctx.meter, request.ctx.metered = None, False

            def counted(ran: bool) -> None:
                request.ctx.metered = ran and request.ctx.meter is not None

            try:
                record, decision = await authenticator.authenticate(
                    raw,
                    write=write,
                    follow_up=follow_up(request) if follow_up else None,
                    counted=counted,
                    quota=quota,
                )
                _key_context(request, record)
                request.ctx.follow_up_reply = decision.extra
                response = await handler(request, *args, **kwargs)
            except Exception:
                await _unmeter(request)
                raise
            if response is None:  # streamed: its headers went out with the first chunk
                return response
            if response.status != 200:
                await _unmeter(request)
            response.headers.update(decision.headers)
            return response

        return guarded

    return decorate


async def _unmeter(request: Request) -> None:
    """Take back the request the follow-up metered: it was not answered with a 200."""
    if not request.ctx.metered:
        return
    request.ctx.metered = False
    try:
        await unmeter(request.app.ctx.redis, request.ctx.meter)
    except (RedisError, OSError):
        # One request too many on the meter: never worth failing the answer over.
        log.warning("a metered request could not be taken back", exc_info=True)


def admit_api_key(*, write: bool, quota: bool = False) -> Callable[[Handler], Handler]:
    """Route decorator for a route that counts the rate limit in a Redis call of its own (single
    events: with their pre-check and enqueue), like require_api_key otherwise.

    A key the cache vouches for goes on uncounted as `request.ctx.admission`; the handler
    counts it, then leaves the decision in `request.ctx.rate_decision`. Any other key is
    authenticated and counted at once (`admission` None). A handler that fails before counting
    (a bad body) has its request counted then, so that 401, 403 and 429 come first as on every
    other route.
    """

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            raw = _required_api_key(request)
            authenticator: ApiKeyAuthenticator = request.app.ctx.api_keys
            admission = await authenticator.admit(raw, write=write, quota=quota)
            decision: RateDecision | None = None
            if admission is None:
                record, decision = await authenticator.authenticate(raw, write=write, quota=quota)
            else:
                record = admission.record
            _key_context(request, record)
            request.ctx.admission = admission
            request.ctx.rate_decision = decision
            try:
                response = await handler(request, *args, **kwargs)
            except Exception:
                if request.ctx.rate_decision is None:
                    await authenticator.authenticate(raw, write=write, quota=quota)
                raise
            response.headers.update(request.ctx.rate_decision.headers)
            return response

        return guarded

    return decorate


def require_admin_or_api_key(
    *, write: bool
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Route decorator for the admin routes a merchant's backend may call too: an admin access
    token, or a tenant API key (read_write when `write`) that then only reaches its own tenant
    (see owned_tenant), rate-limited like every key."""

    def decorate(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        as_admin = require_admin(handler)
        as_key = require_api_key(write=write)(handler)

        @wraps(handler)
        async def guarded(request: Request, *args: Any, **kwargs: Any) -> Any:
            if _api_key_from(request) is not None:
                request.ctx.admin_id = None
                return await as_key(request, *args, **kwargs)
            return await as_admin(request, *args, **kwargs)

        return guarded

    return decorate


async def owned_tenant(request: Request, tenant_id: str, *, write: bool = False) -> Any:
    """The caller's tenant `tenant_id` (the admin's, or an API key's own): 404 when absent or
    someone else's; 403 for a write to a suspended tenant's data (reads still work)."""
    from store.tenants import get_tenant_by_id, get_tenant_for_owner

    record: KeyRecord | None = getattr(request.ctx, "api_key", None)
    if record is not None:
        # A merchant backend's key reaches its own tenant only, like an admin their own.
        tenant = (
            await get_tenant_by_id(request.app.ctx.db, tenant_id=tenant_id)
            if tenant_id == record.tenant_id
            else None
        )
    else:
        tenant = await get_tenant_for_owner(
            request.app.ctx.db, owner_id=request.ctx.admin_id, tenant_id=tenant_id
        )
    if tenant is None:
        raise NotFound("No such tenant.")
    if write and tenant["status"] != "active":
        raise Forbidden("The tenant is suspended; reactivate it to change its data.")
    return tenant
