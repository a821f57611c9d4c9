"""HTTP routes of an admin's own account: profile, password change, sign out everywhere."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.blueprints.auth import AdminRead, Name, Password, _clear_session_cookies, _settings
from api.openapi import document
from api.security import require_admin
from api.validation import ApiModel, parse_body
from domain.errors import FieldError, Unauthorized, ValidationFailed
from domain.passwords import check_password
from store.accounts import change_password, password_hash_of, rename_admin, revoke_all_sessions
from store.admins import get_admin
from store.passwords import hash_password_async, verify_password_async

bp = Blueprint("account", url_prefix="/api/v1")


class ProfileUpdate(ApiModel):
    """The admin's editable profile."""

    name: Name


class PasswordChange(ApiModel):
    """The current password and the new one."""

    current_password: Password
    new_password: Password


@bp.patch("/auth/me")
@document(
    summary="Change the signed-in admin's name",
    tags=["auth"],
    body=ProfileUpdate,
    responses={200: AdminRead},
    security="bearer",
)
@require_admin
async def update_me(request: Request) -> HTTPResponse:
    """Rename the admin of the access token."""
    body = parse_body(request, ProfileUpdate)
    if not await rename_admin(request.app.ctx.db, admin_id=request.ctx.admin_id, name=body.name):
        raise Unauthorized("The account of this access token no longer exists.")
    admin = await get_admin(request.app.ctx.db, admin_id=request.ctx.admin_id)
    if admin is None:
        raise Unauthorized("The account of this access token no longer exists.")
    return json(AdminRead(id=admin.id, email=admin.email, name=admin.name).model_dump())


@bp.post("/auth/change-password")
@document(
    summary="Change the password (needs the current one); every session is signed out",
    tags=["auth"],
    body=PasswordChange,
    responses={204: None},
    security="bearer",
)
@require_admin
async def change_password_route(request: Request) -> HTTPResponse:
    """Check the current password, set the new one and revoke every refresh token."""
    settings = _settings(request)
    body = parse_body(request, PasswordChange)
    stored = await password_hash_of(request.app.ctx.db, admin_id=request.ctx.admin_id)
    if stored is None:
        raise Unauthorized("The account of this access token no longer exists.")
    if not await verify_password_async(body.current_password, stored):
        raise ValidationFailed(
            "The current password is not right.",
            errors=[FieldError("currentPassword", "is not your current password")],
        )
    check_password(body.new_password, field="newPassword")
    new_hash = await hash_password_async(body.new_password, rounds=settings.bcrypt_rounds)
    await change_password(request.app.ctx.db, admin_id=request.ctx.admin_id, password_hash=new_hash)
    response = empty(status=204)
    _clear_session_cookies(response, settings)
    return response


@bp.post("/auth/logout-all")
@document(
    summary="Sign out everywhere: revoke every refresh token of the admin",
    tags=["auth"],
    responses={204: None},
    security="bearer",
)
@require_admin
async def logout_everywhere(request: Request) -> HTTPResponse:
    """Revoke all of the admin's sessions and clear this browser's cookies."""
    await revoke_all_sessions(request.app.ctx.db, admin_id=request.ctx.admin_id)
    response = empty(status=204)
    _clear_session_cookies(response, _settings(request))
    return response
