"""Text that every store downstream (PostgreSQL, Redis, the queue) can encode."""

from __future__ import annotations


def is_unicode_text(value: str) -> bool:
    """Whether `value` encodes to UTF-8: JSON's escapes can smuggle in a lone UTF-16 surrogate
    ("\\ud800"), which Python decodes but no encoder accepts."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
