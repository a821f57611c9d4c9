"""HTTP routes of the auth area: admin sign-up, sessions, password resets."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
from typing import Annotated

import asyncpg
from pydantic import AfterValidator, EmailStr, Field, StringConstraints
from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.openapi import CSRF_CHECKED, THROTTLED_BY_ADDRESS, document
from api.security import issue_access_token, require_admin
from api.validation import ApiModel, parse_body
from domain import passwords
from domain.errors import (
    FieldError,
    Forbidden,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from domain.passwords import check_password
from store import keys
from store.admins import (
    AdminRecord,
    create_admin,
    find_admin_credentials,
    get_admin,
    get_admin_password_hash,
)
from store.auth_tokens import (
    RotationOutcome,
    end_other_sessions,
    issue_refresh_token,
    request_password_reset,
    reset_password,
    reset_token_email,
    revoke_refresh_family,
    rotate_refresh_token,
)
from store.passwords import dummy_hash, hash_password_async, verify_password_async
from store.ratelimit import Window
from store.sessions import (
    clear_login_failures,
    login_wait_seconds,
    pair_subject,
    publish_session_version,
    record_login_failure,
)
from store.settings import Settings
from workers.actors.mail import send_mail

bp = Blueprint("auth", url_prefix="/api/v1")
log = logging.getLogger("recomengine.auth")

REFRESH_COOKIE = "recomengine_refresh"
CSRF_COOKIE = "recomengine_csrf"
CSRF_HEADER = "X-CSRF-Token"
REFRESH_COOKIE_PATH = "/api/v1/auth"
IP_WINDOW_SECONDS = 60

Email = Annotated[EmailStr, AfterValidator(str.lower)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# Login and reset bodies take any string: the rules are checked by domain.passwords where they
# apply, and an absurdly long value is still cut off before it reaches bcrypt.
Password = Annotated[str, StringConstraints(max_length=1024)]
ResetToken = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# A password being chosen: the document states its length (domain.passwords checks it, with the
# list of common passwords no schema can hold).
NewPassword = Annotated[
    Password,
    Field(
        json_schema_extra={
            "minLength": passwords.MIN_CHARACTERS,
            "maxLength": passwords.MAX_BYTES,
            "description": f"{passwords.MIN_CHARACTERS} characters or more, at most "
            f"{passwords.MAX_BYTES} bytes in UTF-8, not a common password nor the email",
        }
    ),
]


class SignupBody(ApiModel):
    """A new admin account."""

    email: Email
    password: NewPassword
    name: Name


class LoginBody(ApiModel):
    """Credentials of an admin."""

    email: Email
    password: Password


class ForgotPasswordBody(ApiModel):
    """Who forgot the password."""

    email: Email


class ResetPasswordBody(ApiModel):
    """The token of a reset mail and the new password."""

    token: ResetToken
    password: NewPassword


class ChangePasswordBody(ApiModel):
    """The current password and the new one."""

    current_password: Password
    new_password: NewPassword


class AdminRead(ApiModel):
    """An admin account."""

    id: str
    email: str
    name: str
    is_operator: bool = Field(
        default=False, description="Whether the account may use the operators' console (/ops)."
    )


class SessionRead(ApiModel):
    """A signed-in admin: the account and a short-lived access token (the refresh token is a
    cookie)."""

    admin: AdminRead
    access_token: str
    expires_in: int


class AccessTokenRead(ApiModel):
    """A fresh access token."""

    access_token: str
    expires_in: int


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.ctx.settings
    return settings


def _csrf_token(refresh_token: str, settings: Settings) -> str:
    # Derived from the refresh token, so a cookie planted by a sibling site cannot be paired
    # with a header of the attacker's choosing (signed double submit).
    digest = hmac.new(
        settings.jwt_secret.encode(), b"csrf:" + refresh_token.encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _set_session_cookies(response: HTTPResponse, refresh_token: str, settings: Settings) -> None:
    max_age = settings.refresh_token_ttl_seconds
    response.add_cookie(
        REFRESH_COOKIE,
        refresh_token,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="Strict",
        max_age=max_age,
    )
    # Readable by the dashboard's script, which echoes it in the CSRF header.
    response.add_cookie(
        CSRF_COOKIE,
        _csrf_token(refresh_token, settings),
        path="/",
        httponly=False,
        secure=settings.secure_cookies,
        samesite="Strict",
        max_age=max_age,
    )
    response.headers["Cache-Control"] = "no-store"


def _clear_session_cookies(response: HTTPResponse, settings: Settings) -> None:
    for name, path, httponly in (
        (REFRESH_COOKIE, REFRESH_COOKIE_PATH, True),
        (CSRF_COOKIE, "/", False),
    ):
        response.add_cookie(
            name,
            "",
            path=path,
            httponly=httponly,
            secure=settings.secure_cookies,
            samesite="Strict",
            max_age=0,
        )


def _check_csrf(request: Request, refresh_token: str) -> None:
    header = request.headers.get(CSRF_HEADER.lower(), "")
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    expected = _csrf_token(refresh_token, _settings(request))
    if not (
        header and hmac.compare_digest(header, cookie) and hmac.compare_digest(header, expected)
    ):
        raise Forbidden(f"The {CSRF_HEADER} header must equal the {CSRF_COOKIE} cookie.")


def _refresh_cookie(request: Request) -> str | None:
    value = request.cookies.get(REFRESH_COOKIE)
    return value or None


async def _throttle_ip(request: Request) -> None:
    """Count one auth call of the client's address; 429 past the per-minute budget."""
    settings = _settings(request)
    try:
        decision = await request.app.ctx.limiter.hit(
            Window(
                key=keys.auth_throttle("ip", request.client_ip or "unknown", IP_WINDOW_SECONDS),
                limit=settings.auth_limit_per_minute,
                seconds=IP_WINDOW_SECONDS,
            )
        )
    except (RedisError, OSError) as exc:
        # Unmetered auth would invite password guessing: fail closed.
        raise Unavailable("Sign-in throttling is unavailable; retry shortly.") from exc
    if not decision.allowed:
        raise RateLimited(
            "Too many sign-in requests from this address; retry later.",
            retry_after=decision.reset_seconds,
            limit=decision.limit,
            reset=decision.reset_seconds,
        )


def _session_response(
    admin: AdminRecord, refresh_token: str, settings: Settings, *, status: int
) -> HTTPResponse:
    access_token, expires_in = issue_access_token(
        admin_id=admin.id, settings=settings, session_version=admin.session_version
    )
    session = SessionRead(
        admin=AdminRead(
            id=admin.id, email=admin.email, name=admin.name, is_operator=admin.is_operator
        ),
        access_token=access_token,
        expires_in=expires_in,
    )
    response = json(session.model_dump(by_alias=True), status=status)
    _set_session_cookies(response, refresh_token, settings)
    return response


@bp.post("/auth/signup")
@document(
    summary="Create an admin account and sign in (sets the refresh and CSRF cookies)",
    errors={**THROTTLED_BY_ADDRESS, 409: "An account with this email already exists."},
    tags=["auth"],
    body=SignupBody,
    responses={201: SessionRead},
)
async def signup(request: Request) -> HTTPResponse:
    """A new admin account, signed in."""
    await _throttle_ip(request)
    settings = _settings(request)
    body = parse_body(request, SignupBody)
    check_password(body.password, email=body.email)
    password_hash = await hash_password_async(body.password, rounds=settings.bcrypt_rounds)
    admin = await create_admin(
        request.app.ctx.db, email=body.email, name=body.name, password_hash=password_hash
    )
    refresh_token = await issue_refresh_token(
        request.app.ctx.db, admin_id=admin.id, ttl_seconds=settings.refresh_token_ttl_seconds
    )
    return _session_response(admin, refresh_token, settings, status=201)


@bp.post("/auth/login")
@document(
    summary="Sign in with email and password (sets the refresh and CSRF cookies)",
    errors={**THROTTLED_BY_ADDRESS, 401: "The email or the password is wrong."},
    tags=["auth"],
    body=LoginBody,
    responses={200: SessionRead},
)
async def login(request: Request) -> HTTPResponse:
    """A session for the right credentials; the same 401 for any wrong ones."""
    await _throttle_ip(request)
    settings = _settings(request)
    body = parse_body(request, LoginBody)
    # Failures slow down one account from one address only: guesses from elsewhere cannot lock
    # the account's owner out, and the per-address budget above bounds how fast anyone guesses.
    subject = pair_subject(body.email, request.client_ip or "unknown")
    redis = request.app.ctx.redis
    try:
        wait = await login_wait_seconds(
            redis,
            subject=subject,
            free=settings.login_free_failures,
            cap_seconds=settings.login_max_delay_seconds,
        )
    except (RedisError, OSError) as exc:
        raise Unavailable("Sign-in throttling is unavailable; retry shortly.") from exc
    if wait is not None:
        raise RateLimited(
            "Too many failed sign-ins for this account from this address; retry later.",
            retry_after=wait,
            limit=settings.login_free_failures,
            reset=wait,
        )
    found = await find_admin_credentials(request.app.ctx.db, email=body.email)
    # An unknown email is checked against a dummy hash so both failures take as long.
    stored_hash = found[1] if found else await asyncio.to_thread(dummy_hash, settings.bcrypt_rounds)
    verified = await verify_password_async(body.password, stored_hash)
    if found is None or not verified:
        await record_login_failure(redis, subject=subject)
        raise Unauthorized("The email or the password is wrong.")
    await clear_login_failures(redis, subject=subject)
    admin = found[0]
    refresh_token = await issue_refresh_token(
        request.app.ctx.db, admin_id=admin.id, ttl_seconds=settings.refresh_token_ttl_seconds
    )
    return _session_response(admin, refresh_token, settings, status=200)


@bp.post("/auth/refresh")
@document(
    summary="New access token for the refresh cookie (rotates it; needs the X-CSRF-Token header)",
    errors=CSRF_CHECKED,
    tags=["auth"],
    responses={200: AccessTokenRead},
)
async def refresh(request: Request) -> HTTPResponse:
    """Rotate the refresh cookie and answer a new access token."""
    settings = _settings(request)
    token = _refresh_cookie(request)
    if token is None:
        raise Unauthorized("No session: the refresh cookie is missing.")
    _check_csrf(request, token)
    rotation = await rotate_refresh_token(
        request.app.ctx.db, token=token, ttl_seconds=settings.refresh_token_ttl_seconds
    )
    if rotation.outcome is RotationOutcome.REPLAYED:
        log.warning(
            "rotated refresh token replayed; its family is revoked",
            extra={"request_id": getattr(request.ctx, "request_id", None)},
        )
    if rotation.admin_id is None or rotation.token is None:
        raise Unauthorized("The session has ended; sign in again.")
    access_token, expires_in = issue_access_token(
        admin_id=rotation.admin_id, settings=settings, session_version=rotation.session_version
    )
    answer = AccessTokenRead(access_token=access_token, expires_in=expires_in)
    response = json(answer.model_dump(by_alias=True))
    _set_session_cookies(response, rotation.token, settings)
    return response


@bp.post("/auth/logout")
@document(
    summary="End the session of the refresh cookie (needs the X-CSRF-Token header)",
    errors={403: CSRF_CHECKED[403]},
    tags=["auth"],
    responses={204: None},
)
async def logout(request: Request) -> HTTPResponse:
    """Revoke the refresh cookie's session and clear the cookies."""
    settings = _settings(request)
    token = _refresh_cookie(request)
    if token is not None:
        _check_csrf(request, token)
        ended = await revoke_refresh_family(request.app.ctx.db, token=token)
        if ended is not None:
            await _publish_version(request, *ended, fail=True)
    response = empty(status=204)
    _clear_session_cookies(response, settings)
    return response


@bp.post("/auth/forgot-password")
@document(
    summary="Mail a password-reset link (202 whether or not the account exists)",
    errors=THROTTLED_BY_ADDRESS,
    tags=["auth"],
    body=ForgotPasswordBody,
    responses={202: None},
)
async def forgot_password(request: Request) -> HTTPResponse:
    """Queue a reset mail for an existing account; the answer never tells which."""
    await _throttle_ip(request)
    settings = _settings(request)
    body = parse_body(request, ForgotPasswordBody)
    # The lookup and the mail happen after the answer, so known and unknown emails answer
    # alike and as fast: the timing tells nothing about which accounts exist.
    request.app.add_task(_mail_reset_link(request.app.ctx.db, settings, body.email))
    return empty(status=202)


async def _mail_reset_link(pool: asyncpg.Pool, settings: Settings, email: str) -> None:
    try:
        mail_id = await request_password_reset(
            pool,
            email=email,
            ttl_seconds=settings.password_reset_ttl_seconds,
            dashboard_url=settings.dashboard_url,
            secret=settings.jwt_secret,
        )
    except Exception:
        log.exception("could not prepare a password-reset mail")
        return
    if mail_id is None:
        return
    try:
        await asyncio.to_thread(send_mail.send, mail_id)
    except Exception:  # the mail is safe in the outbox; the periodic sweep sends it
        log.warning(
            "could not enqueue a mail; the outbox sweep will send it",
            extra={"mail_id": mail_id},
            exc_info=True,
        )


async def _publish_version(request: Request, admin_id: str, version: int, *, fail: bool) -> None:
    """Make every api process refuse the admin's older access tokens at once."""
    try:
        await publish_session_version(request.app.ctx.redis, admin_id=admin_id, version=version)
    except (RedisError, OSError) as exc:
        log.warning("could not publish a session version", extra={"admin_id": admin_id})
        if fail:
            raise Unavailable("The sessions ended but could not be announced; retry.") from exc


@bp.post("/auth/reset-password")
@document(
    summary="Set a new password with the token of a reset mail (single use; ends all sessions)",
    errors=THROTTLED_BY_ADDRESS,
    tags=["auth"],
    body=ResetPasswordBody,
    responses={204: None},
)
async def reset_password_route(request: Request) -> HTTPResponse:
    """Consume the reset token and set the new password."""
    await _throttle_ip(request)
    settings = _settings(request)
    body = parse_body(request, ResetPasswordBody)
    email = await reset_token_email(request.app.ctx.db, token=body.token)
    check_password(body.password, email=email)
    password_hash = await hash_password_async(body.password, rounds=settings.bcrypt_rounds)
    reset = await reset_password(request.app.ctx.db, token=body.token, password_hash=password_hash)
    if reset is None:
        raise ValidationFailed(
            "The reset link is invalid, already used or expired; ask for a new one.",
            errors=[FieldError("token", "is invalid, already used or expired")],
        )
    # The token is spent: a failed announcement is logged, not answered (a retry would 422).
    await _publish_version(request, *reset, fail=False)
    response = empty(status=204)
    _clear_session_cookies(response, settings)
    return response


@bp.get("/auth/me")
@document(
    summary="The signed-in admin", tags=["auth"], responses={200: AdminRead}, security="bearer"
)
@require_admin
async def me(request: Request) -> HTTPResponse:
    """The admin of the access token."""
    admin = await get_admin(request.app.ctx.db, admin_id=request.ctx.admin_id)
    if admin is None:
        raise Unauthorized("The account of this access token no longer exists.")
    return json(
        AdminRead(
            id=admin.id, email=admin.email, name=admin.name, is_operator=admin.is_operator
        ).model_dump(by_alias=True)
    )


@bp.post("/auth/change-password")
@document(
    summary="Change the password (ends every other session; answers a new session)",
    errors=THROTTLED_BY_ADDRESS,
    tags=["auth"],
    body=ChangePasswordBody,
    responses={200: SessionRead},
    security="bearer",
)
@require_admin
async def change_password(request: Request) -> HTTPResponse:
    """Check the current password, set the new one and end every session but a fresh one."""
    await _throttle_ip(request)
    settings = _settings(request)
    body = parse_body(request, ChangePasswordBody)
    pool = request.app.ctx.db
    admin = await get_admin(pool, admin_id=request.ctx.admin_id)
    stored_hash = await get_admin_password_hash(pool, admin_id=request.ctx.admin_id)
    if admin is None or stored_hash is None:
        raise Unauthorized("The account of this access token no longer exists.")
    if not await verify_password_async(body.current_password, stored_hash):
        raise ValidationFailed(
            "The current password is wrong.",
            errors=[FieldError("currentPassword", "is wrong")],
        )
    check_password(body.new_password, field="newPassword", email=admin.email)
    password_hash = await hash_password_async(body.new_password, rounds=settings.bcrypt_rounds)
    async with pool.acquire() as connection, connection.transaction():
        version = await end_other_sessions(
            connection, admin_id=admin.id, password_hash=password_hash
        )
        refresh_token = await issue_refresh_token(
            connection, admin_id=admin.id, ttl_seconds=settings.refresh_token_ttl_seconds
        )
    await _publish_version(request, admin.id, version, fail=True)
    fresh = dataclasses.replace(admin, session_version=version)
    return _session_response(fresh, refresh_token, settings, status=200)
