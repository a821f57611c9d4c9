"""Password rules: what an admin may choose."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files

from domain.errors import FieldError, ValidationFailed

MIN_CHARACTERS = 8
# bcrypt only reads the first 72 bytes; a longer password would silently lose its tail.
MAX_BYTES = 72
# The 10,000 most common passwords, most common first: the head of the list Royce Williams
# compiled from leaked password sets, as Django ships it (BSD licence), lower case.
COMMON_PASSWORDS_FILE = "common_passwords.txt.gz"


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case)."""
    data = files("domain").joinpath(COMMON_PASSWORDS_FILE).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").split())


def check_password(password: str, *, field: str = "password", email: str | None = None) -> None:
    """Raise ValidationFailed unless `password` is 8+ characters, at most 72 UTF-8 bytes, not a
    common password and not the account's email."""
    folded = password.strip().lower()
    if len(password) < MIN_CHARACTERS:
        message = f"must be at least {MIN_CHARACTERS} characters"
    elif len(password.encode("utf-8")) > MAX_BYTES:
        message = f"must be at most {MAX_BYTES} bytes in UTF-8 (bcrypt's limit)"
    elif folded in common_passwords():
        message = "is one of the most common passwords; choose one that is harder to guess"
    elif email is not None and folded in {email.strip().lower(), email.split("@")[0].lower()}:
        message = "must not be the email address"
    else:
        return
    raise ValidationFailed("The password is not acceptable.", errors=[FieldError(field, message)])
