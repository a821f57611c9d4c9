"""Password rules: what an admin may choose."""

from __future__ import annotations

from domain.errors import FieldError, ValidationFailed

MIN_CHARACTERS = 8
# bcrypt only reads the first 72 bytes; a longer password would silently lose its tail.
MAX_BYTES = 72


def check_password(password: str, *, field: str = "password") -> None:
    """Raise ValidationFailed unless `password` is 8+ characters and at most 72 UTF-8 bytes."""
    if len(password) < MIN_CHARACTERS:
        message = f"must be at least {MIN_CHARACTERS} characters"
    elif len(password.encode("utf-8")) > MAX_BYTES:
        message = f"must be at most {MAX_BYTES} bytes in UTF-8 (bcrypt's limit)"
    else:
        return
    raise ValidationFailed("The password is not acceptable.", errors=[FieldError(field, message)])
