"""HTTP routes of the analytics area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("analytics", url_prefix="/api/v1")
