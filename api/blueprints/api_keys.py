"""HTTP routes of the api keys area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("api_keys", url_prefix="/api/v1")
