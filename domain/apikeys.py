"""API key format: `rk_<env>_` + 32 random base62 characters + a 6-character checksum.

The checksum lets a malformed or mistyped key be refused without a database look-up; the key
itself is only ever stored as an HMAC-SHA256 under a server secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ENVIRONMENTS = ("live", "test")
PERMISSIONS = ("read", "read_write")
MAX_ACTIVE_KEYS = 10
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
DISPLAY_PREFIX_LENGTH = 6


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


@dataclass(frozen=True)
class ParsedKey:
    """A key that is well formed; whether it exists is for the store to say."""

    raw: str
    environment: str

    @property
    def display_prefix(self) -> str:
        """The part shown in lists so an admin can tell keys apart."""
        return self.raw[: len(f"rk_{self.environment}_") + DISPLAY_PREFIX_LENGTH]


def generate_key(*, environment: str) -> ParsedKey:
    """A new random key for `environment` ("live" or "test")."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {environment!r}")
    body = f"rk_{environment}_" + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return ParsedKey(raw=body + _checksum(body), environment=environment)


def parse_key(raw: str) -> ParsedKey | None:
    """The key if it is well formed and its checksum matches, else None."""
    for environment in ENVIRONMENTS:
        head = f"rk_{environment}_"
        if raw.startswith(head):
            tail = raw[len(head) :]
            if len(tail) != RANDOM_LENGTH + CHECKSUM_LENGTH or any(c not in BASE62 for c in tail):
                return None
            body, checksum = raw[:-CHECKSUM_LENGTH], raw[-CHECKSUM_LENGTH:]
            if not hmac.compare_digest(_checksum(body), checksum):
                return None
            return ParsedKey(raw=raw, environment=environment)
    return None


def hash_key(raw: str, *, secret: str) -> bytes:
    """HMAC-SHA256 of the key under the server secret: the only form that is stored."""
    return hmac.new(secret.encode(), raw.encode(), hashlib.sha256).digest()
