"""HTTP routes of the catalog area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("catalog", url_prefix="/api/v1")
