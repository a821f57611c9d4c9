"""Storefront rules without I/O: origins, user tokens, personalised strategies, the privacy of
`reason.because` and the server-side experiment variant."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from domain.experiments.assignment import assign_variant
from domain.storefront import (
    allowed_origins,
    normalise_origin,
    origin_allowed,
    requires_signed_user,
    server_variant,
    strip_because,
)
from domain.usertokens import derive_secret, sign_user, token_is_valid


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443", "https://shop.example"),
        ("http://localhost:3112", "http://localhost:3112"),
        ("http://localhost:3112/", "http://localhost:3112"),
        ("https://shop.example/path", None),
        ("javascript:alert(1)", None),
        ("null", None),
        ("http://user@shop.example", None),
    ],
)
def test_origins_are_compared_in_their_normal_form(raw: str, expected: str | None) -> None:
    assert normalise_origin(raw) == expected


def test_only_the_tenants_exact_origins_are_allowed() -> None:
    origins = allowed_origins({"allowedOrigins": ["https://shop.example", "http://localhost:3112"]})
    assert origin_allowed("https://SHOP.example", origins)
    assert origin_allowed("http://localhost:3112", origins)
    assert not origin_allowed("http://localhost:3113", origins)
    assert not origin_allowed("https://shop.example.evil.test", origins)
    assert not origin_allowed("http://shop.example", origins)  # another scheme
    assert not origin_allowed(None, origins)
    assert not origin_allowed("https://shop.example", allowed_origins({}))


def test_a_user_token_is_the_hex_hmac_sha256_of_the_user_id() -> None:
    secret = derive_secret(server_secret="server", tenant_id="t1", nonce="n1")
    expected = hmac.new(secret.encode(), b"user-7", hashlib.sha256).hexdigest()
    assert sign_user(secret=secret, user_id="user-7") == expected
    assert token_is_valid(secret=secret, user_id="user-7", token=expected)
    assert token_is_valid(secret=secret, user_id="user-7", token=expected.upper())


def test_a_token_for_another_user_secret_or_tenant_is_not_valid() -> None:
    secret = derive_secret(server_secret="server", tenant_id="t1", nonce="n1")
    token = sign_user(secret=secret, user_id="user-7")
    assert not token_is_valid(secret=secret, user_id="user-8", token=token)
    rotated = derive_secret(server_secret="server", tenant_id="t1", nonce="n2")
    assert not token_is_valid(secret=rotated, user_id="user-7", token=token)
    other_tenant = derive_secret(server_secret="server", tenant_id="t2", nonce="n1")
    assert not token_is_valid(secret=other_tenant, user_id="user-7", token=token)
    assert not token_is_valid(secret=None, user_id="user-7", token=token)
    assert not token_is_valid(secret=secret, user_id="user-7", token="not-hex")
    assert not token_is_valid(secret=secret, user_id="user-7", token=None)


def test_require_user_token_covers_personalised_answers_only() -> None:
    on = {"requireUserToken": True}
    assert requires_signed_user(config=on, strategy="collaborative", product_id=None)
    assert requires_signed_user(config=on, strategy="content_based", product_id=None)
    assert not requires_signed_user(config=on, strategy="trending", product_id=None)
    assert not requires_signed_user(config=on, strategy="collaborative", product_id="p1")
    assert not requires_signed_user(config={}, strategy="collaborative", product_id=None)


def test_strip_because_removes_only_the_shoppers_history() -> None:
    answer = {
        "data": [
            {
                "productId": 'p"]1',
                "reason": {"strategy": "collaborative", "because": ['a"],b', "c"]},
            },
            {"productId": "p2", "reason": {"strategy": "trending", "because": []}},
        ],
        "meta": {"strategy": "collaborative"},
    }
    stripped = json.loads(strip_because(json.dumps(answer, separators=(",", ":")).encode()))
    assert [item["reason"] for item in stripped["data"]] == [
        {"strategy": "collaborative"},
        {"strategy": "trending"},
    ]
    assert stripped["data"][0]["productId"] == 'p"]1'
    assert stripped["meta"] == answer["meta"]


def test_the_server_variant_is_the_experiment_assignment() -> None:
    experiment = {"experimentId": "e-1", "trafficSplit": 30}
    for user in ("a", "b", "c", "d"):
        expected = assign_variant(experiment_id="e-1", user_id=user, traffic_split=30)
        assert server_variant(experiment=experiment, user_id=user) == expected
