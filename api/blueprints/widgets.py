"""HTTP routes of the widgets area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("widgets", url_prefix="/api/v1")
