"""HTTP routes of the experiments area."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("experiments", url_prefix="/api/v1")
