"""API key format, checksum and hashing."""

from __future__ import annotations

from domain import apikeys


def test_generated_keys_parse_back_with_their_environment() -> None:
    for environment in ("live", "test"):
        key = apikeys.generate_key(environment=environment)
        assert key.raw.startswith(f"rk_{environment}_")
        parsed = apikeys.parse_key(key.raw)
        assert parsed is not None and parsed.environment == environment


def test_a_single_changed_character_breaks_the_checksum() -> None:
    key = apikeys.generate_key(environment="live").raw
    position = len("rk_live_") + 5
    replacement = "a" if key[position] != "a" else "b"
    assert apikeys.parse_key(key[:position] + replacement + key[position + 1 :]) is None


def test_wrong_prefix_length_or_alphabet_is_malformed() -> None:
    key = apikeys.generate_key(environment="test").raw
    assert apikeys.parse_key("rk_prod_" + key[8:]) is None
    assert apikeys.parse_key(key[:-1]) is None
    assert apikeys.parse_key(key[:-2] + "!!") is None
    assert apikeys.parse_key("") is None


def test_hash_depends_on_the_server_secret() -> None:
    key = apikeys.generate_key(environment="live").raw
    assert apikeys.hash_key(key, secret="a") != apikeys.hash_key(key, secret="b")
    assert len(apikeys.hash_key(key, secret="a")) == 32


def test_display_prefix_is_short_and_not_the_key() -> None:
    key = apikeys.generate_key(environment="live")
    assert key.raw.startswith(key.display_prefix)
    assert len(key.display_prefix) == len("rk_live_") + 6
