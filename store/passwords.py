"""bcrypt hashing, run off the event loop by async callers."""

from __future__ import annotations

import asyncio

import bcrypt

from domain.passwords import MAX_BYTES


def hash_password(password: str, *, rounds: int) -> str:
    """bcrypt hash of a password already checked by domain.passwords."""
    encoded = password.encode("utf-8")
    if len(encoded) > MAX_BYTES:
        raise ValueError("password longer than bcrypt's 72 bytes")
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds=rounds)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """True when `password` matches; False for anything unverifiable (never raises)."""
    encoded = password.encode("utf-8")
    if len(encoded) > MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode())
    except ValueError:
        return False


# A hash to check against when the account does not exist, so that timing does not tell.
_DUMMY_HASHES: dict[int, str] = {}


def dummy_hash(rounds: int) -> str:
    """A fixed hash of the configured cost, for constant-time failures."""
    if rounds not in _DUMMY_HASHES:
        _DUMMY_HASHES[rounds] = hash_password("not-a-real-password", rounds=rounds)
    return _DUMMY_HASHES[rounds]


async def hash_password_async(password: str, *, rounds: int) -> str:
    """hash_password in a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(hash_password, password, rounds=rounds)


async def verify_password_async(password: str, password_hash: str) -> bool:
    """verify_password in a worker thread."""
    return await asyncio.to_thread(verify_password, password, password_hash)
