"""HTTP routes of the events area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("events", url_prefix="/api/v1")
