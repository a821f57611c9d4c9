"""JSON structured logs, one object per line, for every process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SECRET_WORDS = ("password", "token", "secret", "authorization", "api_key", "apikey", "cookie")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; extra fields are kept, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD or name.startswith("_"):
                continue
            if any(word in name.lower() for word in _SECRET_WORDS):
                value = "***"
            payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "dramatiq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
