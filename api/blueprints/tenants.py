"""HTTP routes of the tenants area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("tenants", url_prefix="/api/v1")
