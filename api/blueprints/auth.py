"""HTTP routes of the auth area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("auth", url_prefix="/api/v1")
