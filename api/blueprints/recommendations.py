"""HTTP routes of the recommendations area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("recommendations", url_prefix="/api/v1")
