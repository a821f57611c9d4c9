"""HTTP routes of an admin's own account: profile name and signing out everywhere (the password
change is in the auth area)."""

from __future__ import annotations

from redis.exceptions import RedisError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from api.blueprints.auth import AdminRead, Name, _clear_session_cookies, _settings
from api.openapi import document
from api.security import require_admin
from api.validation import ApiModel, parse_body
from domain.errors import Unauthorized, Unavailable
from store.accounts import end_all_sessions, rename_admin
from store.admins import get_admin
from store.sessions import publish_session_version

bp = Blueprint("account", url_prefix="/api/v1")


class ProfileUpdate(ApiModel):
    """The admin's editable profile."""

    name: Name


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
    read = AdminRead(id=admin.id, email=admin.email, name=admin.name, is_operator=admin.is_operator)
    return json(read.model_dump(by_alias=True))


@bp.post("/auth/logout-all")
@document(
    summary="Sign out everywhere: revoke every refresh token and every access token of the admin",
    tags=["auth"],
    responses={204: None},
    security="bearer",
)
@require_admin
async def logout_everywhere(request: Request) -> HTTPResponse:
    """Revoke all of the admin's sessions and clear this browser's cookies."""
    admin_id = request.ctx.admin_id
    version = await end_all_sessions(request.app.ctx.db, admin_id=admin_id)
    try:
        # Every api process refuses the admin's older access tokens from now on.
        await publish_session_version(request.app.ctx.redis, admin_id=admin_id, version=version)
    except (RedisError, OSError) as exc:
        raise Unavailable("The sessions ended but could not be announced; retry.") from exc
    response = empty(status=204)
    _clear_session_cookies(response, _settings(request))
    return response
