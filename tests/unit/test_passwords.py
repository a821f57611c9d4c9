"""Password rules and bcrypt hashing, without any server."""

from __future__ import annotations

import asyncio

import pytest

from domain.errors import ValidationFailed
from domain.passwords import MAX_BYTES, MIN_CHARACTERS, check_password
from store.passwords import (
    dummy_hash,
    hash_password,
    hash_password_async,
    verify_password,
    verify_password_async,
)


def field_of(password: str) -> str:
    with pytest.raises(ValidationFailed) as raised:
        check_password(password)
    return raised.value.errors[0].field


def test_a_password_of_eight_characters_is_accepted() -> None:
    check_password("qz7!" * (MIN_CHARACTERS // 4))


def test_a_password_of_seven_characters_is_refused_on_the_password_field() -> None:
    assert field_of("x" * (MIN_CHARACTERS - 1)) == "password"


def test_a_password_of_exactly_72_bytes_is_accepted() -> None:
    check_password("x" * MAX_BYTES)


def test_a_password_of_73_ascii_bytes_is_refused() -> None:
    assert field_of("x" * (MAX_BYTES + 1)) == "password"


def test_the_byte_limit_counts_utf8_bytes_not_characters() -> None:
    # 19 characters, 76 bytes: short in characters, too long for bcrypt.
    assert field_of("😀" * 19) == "password"
    check_password("😀" * 18)


def test_the_error_names_the_field_the_caller_asked_for() -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_password("short", field="newPassword")
    assert raised.value.errors[0].field == "newPassword"


def test_a_hash_verifies_its_password_and_nothing_else() -> None:
    hashed = hash_password("a good password", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert verify_password("a good password", hashed)
    assert not verify_password("a good passwore", hashed)


def test_two_hashes_of_one_password_differ_by_salt() -> None:
    assert hash_password("a good password", rounds=4) != hash_password("a good password", rounds=4)


def test_hashing_refuses_a_password_over_72_bytes_instead_of_truncating() -> None:
    with pytest.raises(ValueError):
        hash_password("x" * 73, rounds=4)


def test_verification_never_raises_on_long_passwords_or_broken_hashes() -> None:
    hashed = hash_password("x" * 72, rounds=4)
    # Without the byte check bcrypt would compare only the first 72 bytes and say yes.
    assert not verify_password("x" * 73, hashed)
    assert not verify_password("a good password", "not-a-bcrypt-hash")


def test_the_dummy_hash_has_the_configured_cost_and_matches_no_real_password() -> None:
    assert dummy_hash(5).startswith("$2b$05$")
    assert dummy_hash(5) == dummy_hash(5)
    assert not verify_password("a good password", dummy_hash(5))


def test_the_async_variants_agree_with_the_sync_ones() -> None:
    async def round_trip() -> tuple[bool, bool]:
        hashed = await hash_password_async("a good password", rounds=4)
        return (
            await verify_password_async("a good password", hashed),
            await verify_password_async("another password", hashed),
        )

    assert asyncio.run(round_trip()) == (True, False)
