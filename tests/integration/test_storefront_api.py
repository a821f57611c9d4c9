"""Storefront server parts over real HTTP: the SDK bundle, per-tenant CORS, user tokens and
the privacy of `reason.because`, requireUserToken, requireConsent, public-key events, the
server-side experiment variant and merging an anonymous shopper."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import brotli
import httpx
import pytest
from conftest import ROOT, Process, TenantContext
from redis.asyncio import Redis
from storefront_support import KNOWN_USER, Shop, make_shop

from domain.experiments.assignment import assign_variant
from domain.usertokens import sign_user
from store.settings import Settings

SHOP = "http://shop.example:8080"
STRANGER = "http://evil.example"
BUNDLE = ROOT / "sdk" / "dist" / "recomengine.js"
MAX_GZIPPED_BYTES = 10 * 1024


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture
async def shop(db: asyncpg.Pool, redis: Redis, migrated: Settings, api_url: str) -> Shop:
    return await make_shop(db, redis, migrated, api_url, origin=SHOP)


async def _configure(http: httpx.AsyncClient, ctx: TenantContext, config: dict[str, Any]) -> None:
    response = await http.patch(
        f"/api/v1/tenants/{ctx.tenant_id}", json={"config": config}, headers=ctx.admin_headers
    )
    assert response.status_code == 200, response.text


async def _secret(http: httpx.AsyncClient, ctx: TenantContext) -> str:
    response = await http.post(
        f"/api/v1/tenants/{ctx.tenant_id}/user-token-secret", headers=ctx.admin_headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


# --- the bundle ---------------------------------------------------------------------------


def test_the_built_bundle_is_at_most_10_kb_gzipped() -> None:
    assert BUNDLE.exists(), "build the SDK first: cd sdk && npm ci && npm run build"
    size = len(gzip.compress(BUNDLE.read_bytes(), compresslevel=9))
    assert size <= MAX_GZIPPED_BYTES, f"the SDK is {size} bytes gzipped"


async def test_the_bundle_is_served_cached_five_minutes_with_an_etag(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/v1/recomengine.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == BUNDLE.read_bytes()
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["content-type"].startswith("application/javascript")
    etag = response.headers["etag"]
    again = await http.get("/v1/recomengine.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


async def test_the_bundle_is_served_gzipped_and_brotli_compressed(
    http: httpx.AsyncClient,
) -> None:
    original = BUNDLE.read_bytes()
    for encoding, decode in (("br", brotli.decompress), ("gzip", gzip.decompress)):
        async with http.stream(
            "GET", "/v1/recomengine.js", headers={"Accept-Encoding": encoding}
        ) as response:
            assert response.headers["content-encoding"] == encoding
            assert response.headers["vary"] == "Accept-Encoding"
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        assert decode(body) == original


async def test_the_content_hashed_bundle_is_immutable_and_a_wrong_hash_is_not_found(
    http: httpx.AsyncClient,
) -> None:
    digest = hashlib.sha256(BUNDLE.read_bytes()).hexdigest()[:12]
    response = await http.get(f"/v1/recomengine.{digest}.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (await http.get("/v1/recomengine.000000000000.js")).status_code == 404
    missing = await http.get("/v1/other.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


# --- CORS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/recommendations",
        "/api/v1/widgets/home",
        "/api/v1/storefront/events",
        "/api/v1/users/merge",
    ],
)
async def test_a_preflight_from_an_allowed_origin_gets_the_methods_headers_and_max_age(
    path: str, http: httpx.AsyncClient, shop: Shop
) -> None:
    response = await http.options(
        path,
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"x-api-key", "content-type", "x-user-token"} <= allowed
    assert response.headers["access-control-max-age"] == "600"


async def test_a_preflight_from_a_disallowed_origin_gets_no_cors_headers(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    response = await http.options(
        "/api/v1/storefront/events",
        headers={"Origin": STRANGER, "Access-Control-Request-Method": "POST"},
    )
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_answers_carry_cors_headers_only_for_the_tenants_own_origins(
    http: httpx.AsyncClient, shop: Shop, other_tenant: TenantContext
) -> None:
    params = {"userId": "visitor", "strategy": "trending"}
    allowed = await http.get(
        "/api/v1/recommendations", params=params, headers={**shop.ctx.read_headers, "Origin": SHOP}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert "Origin" in allowed.headers["vary"]
    stranger = await http.get(
        "/api/v1/recommendations",
        params=params,
        headers={**shop.ctx.read_headers, "Origin": STRANGER},
    )
    assert "access-control-allow-origin" not in stranger.headers
    # The shop's origin is nothing to another tenant that does not list it.
    foreign = await http.get(
        "/api/v1/recommendations",
        params=params,
        headers={**other_tenant.read_headers, "Origin": SHOP},
    )
    assert "access-control-allow-origin" not in foreign.headers


async def test_a_browser_write_from_an_origin_the_tenant_does_not_allow_is_refused(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    event = {"eventType": "product_viewed", "userId": "u", "productId": "p1"}
    response = await http.post(
        "/api/v1/storefront/events",
        json={"events": [event]},
        headers={**shop.ctx.read_headers, "Origin": STRANGER},
    )
    assert response.status_code == 403


# --- user tokens and privacy ---------------------------------------------------------------


def _becauses(answer: dict[str, Any]) -> list[Any]:
    return [item["reason"].get("because") for item in answer["data"]]


async def test_a_read_key_never_sees_reason_because_without_a_valid_user_token(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    params = {"userId": KNOWN_USER, "strategy": "collaborative"}
    for _ in range(2):  # the second answer comes from the answer cache
        answer = await http.get(
            "/api/v1/recommendations", params=params, headers=shop.ctx.read_headers
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"], "the known user gets recommendations"
        assert all("because" not in item["reason"] for item in answer.json()["data"])
    wrong = await http.get(
        "/api/v1/recommendations",
        params=params,
        headers={
            **shop.ctx.read_headers,
            "X-User-Token": sign_user(secret="guess", user_id=KNOWN_USER),
        },
    )
    assert all("because" not in item["reason"] for item in wrong.json()["data"])


async def test_a_valid_user_token_or_a_read_write_key_reveals_reason_because(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    secret = await _secret(http, shop.ctx)
    params = {"userId": KNOWN_USER, "strategy": "collaborative"}
    token = sign_user(secret=secret, user_id=KNOWN_USER)
    signed = await http.get(
        "/api/v1/recommendations",
        params=params,
        headers={**shop.ctx.read_headers, "X-User-Token": token},
    )
    assert set(map(tuple, _becauses(signed.json()))) == {("p11",)}
    writer = await http.get(
        "/api/v1/recommendations", params=params, headers=shop.ctx.write_headers
    )
    assert set(map(tuple, _becauses(writer.json()))) == {("p11",)}
    # A token for another user proves nothing about this one.
    other = sign_user(secret=secret, user_id="someone-else")
    borrowed = await http.get(
        "/api/v1/recommendations",
        params=params,
        headers={**shop.ctx.read_headers, "X-User-Token": other},
    )
    assert all("because" not in item["reason"] for item in borrowed.json()["data"])


async def test_rotating_the_secret_invalidates_old_tokens_and_only_the_owner_may_rotate(
    http: httpx.AsyncClient, shop: Shop, other_tenant: TenantContext
) -> None:
    old = await _secret(http, shop.ctx)
    new = await _secret(http, shop.ctx)
    assert old != new and len(new) == 64
    params = {"userId": KNOWN_USER, "strategy": "collaborative"}
    stale = await http.get(
        "/api/v1/recommendations",
        params=params,
        headers={
            **shop.ctx.read_headers,
            "X-User-Token": sign_user(secret=old, user_id=KNOWN_USER),
        },
    )
    assert all("because" not in item["reason"] for item in stale.json()["data"])
    foreign = await http.post(
        f"/api/v1/tenants/{shop.ctx.tenant_id}/user-token-secret",
        headers=other_tenant.admin_headers,
    )
    assert foreign.status_code == 404


async def test_require_user_token_refuses_personalised_answers_to_unsigned_users_only(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    await _configure(http, shop.ctx, {"allowedOrigins": [SHOP], "requireUserToken": True})
    secret = await _secret(http, shop.ctx)
    read = shop.ctx.read_headers
    personal = {"userId": KNOWN_USER, "strategy": "collaborative"}
    refused = await http.get("/api/v1/recommendations", params=personal, headers=read)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    trending = await http.get(
        "/api/v1/recommendations",
        params={"userId": KNOWN_USER, "strategy": "trending"},
        headers=read,
    )
    assert trending.status_code == 200
    item_context = await http.get(
        "/api/v1/recommendations",
        params={"userId": KNOWN_USER, "productId": "p1", "strategy": "collaborative"},
        headers=read,
    )
    assert item_context.status_code == 200
    token = sign_user(secret=secret, user_id=KNOWN_USER)
    signed = await http.get(
        "/api/v1/recommendations", params=personal, headers={**read, "X-User-Token": token}
    )
    assert signed.status_code == 200


async def test_the_storefront_options_are_validated_with_the_tenant_config(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    for bad in ({"requireUserToken": "yes"}, {"requireConsent": 1}):
        response = await http.patch(
            f"/api/v1/tenants/{shop.ctx.tenant_id}",
            json={"config": bad},
            headers=shop.ctx.admin_headers,
        )
        assert response.status_code == 422, response.text


# --- storefront events ---------------------------------------------------------------------


async def _event_rows(db: asyncpg.Pool, tenant_id: str, expected: int) -> list[asyncpg.Record]:
    deadline = time.monotonic() + 15
    while True:
        rows = await db.fetch(
            "SELECT event_type, user_id, product_id, metadata FROM events WHERE tenant_id = $1",
            tenant_id,
        )
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_a_public_key_may_send_impressions_and_clicks_but_not_purchases(
    http: httpx.AsyncClient, shop: Shop, worker_process: Process, db: asyncpg.Pool
) -> None:
    meta = {"placementId": "home", "recommendationId": "r1", "position": 1, "strategy": "trending"}
    events = [
        {
            "eventType": "recommendation_impressed",
            "userId": "anon-1",
            "productId": "p1",
            "metadata": meta,
        },
        {
            "eventType": "recommendation_clicked",
            "userId": "anon-1",
            "productId": "p1",
            "metadata": meta,
        },
        {"eventType": "purchase", "userId": "anon-1", "productId": "p1", "metadata": {"price": 5}},
    ]
    response = await http.post(
        "/api/v1/storefront/events",
        json={"events": events, "consent": None},
        headers={**shop.ctx.read_headers, "Origin": SHOP},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["results"][2]["errors"][0]["field"] == "eventType"
    assert response.headers["access-control-allow-origin"] == SHOP
    rows = await _event_rows(db, shop.ctx.tenant_id, 2)
    assert sorted(r["event_type"] for r in rows) == [
        "recommendation_clicked",
        "recommendation_impressed",
    ]


async def test_require_consent_refuses_events_sent_without_consent(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    await _configure(http, shop.ctx, {"allowedOrigins": [SHOP], "requireConsent": True})
    event = {"eventType": "product_viewed", "userId": "u", "productId": "p1"}
    for consent in (None, False):
        refused = await http.post(
            "/api/v1/storefront/events",
            json={"events": [event], "consent": consent},
            headers={**shop.ctx.read_headers, "Origin": SHOP},
        )
        assert refused.status_code == 403
        assert "consent" in refused.json()["type"]
        # The SDK must be able to read why, to stop tracking.
        assert refused.headers["access-control-allow-origin"] == SHOP
    granted = await http.post(
        "/api/v1/storefront/events",
        json={"events": [event], "consent": True},
        headers=shop.ctx.read_headers,
    )
    assert granted.status_code == 202


async def _start_experiment(http: httpx.AsyncClient, ctx: TenantContext, split: int) -> str:
    created = await http.post(
        f"/api/v1/tenants/{ctx.tenant_id}/experiments",
        json={
            "name": "Home test",
            "placementId": "home",
            "controlStrategy": "trending",
            "variantStrategy": "collaborative",
            "trafficSplit": split,
            "metric": "ctr",
        },
        headers=ctx.admin_headers,
    )
    assert created.status_code == 201, created.text
    experiment_id = str(created.json()["id"])
    started = await http.patch(
        f"/api/v1/tenants/{ctx.tenant_id}/experiments/{experiment_id}",
        json={"status": "running"},
        headers=ctx.admin_headers,
    )
    assert started.status_code == 200, started.text
    return experiment_id


async def test_experiment_events_count_under_the_server_computed_variant(
    http: httpx.AsyncClient, shop: Shop, worker_process: Process, db: asyncpg.Pool
) -> None:
    experiment_id = await _start_experiment(http, shop.ctx, 50)
    users = [f"shopper-{i}" for i in range(6)]
    truth = {
        u: assign_variant(experiment_id=experiment_id, user_id=u, traffic_split=50) for u in users
    }
    flip = {"control": "variant", "variant": "control"}
    events = [
        {
            "eventType": "recommendation_impressed",
            "userId": user,
            "productId": "p1",
            "metadata": {
                "placementId": "home",
                "recommendationId": "r",
                "position": 1,
                "strategy": "trending",
                "experimentId": experiment_id,
                "variant": flip[truth[user]],  # every client lies
            },
        }
        for user in users
    ]
    before = await http.get("/metrics/storefront")
    response = await http.post(
        "/api/v1/storefront/events", json={"events": events}, headers=shop.ctx.read_headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["variantCorrections"] == len(users)
    rows = await _event_rows(db, shop.ctx.tenant_id, len(users))
    assert {r["user_id"]: _metadata(r)["variant"] for r in rows} == truth
    results = await http.get(
        f"/api/v1/tenants/{shop.ctx.tenant_id}/experiments/{experiment_id}/results",
        headers=shop.ctx.admin_headers,
    )
    variants = results.json()["variants"]
    expected = {arm: sum(1 for v in truth.values() if v == arm) for arm in ("control", "variant")}
    assert {arm: variants[arm]["impressions"] for arm in expected} == expected
    after = await http.get("/metrics/storefront")
    assert _mismatches(after.text, shop.ctx.tenant_id) - _mismatches(
        before.text, shop.ctx.tenant_id
    ) == len(users)


def _metadata(row: asyncpg.Record) -> dict[str, Any]:
    import json

    value = row["metadata"]
    return dict(json.loads(value) if isinstance(value, str) else value)


def _mismatches(text: str, tenant_id: str) -> int:
    for line in text.splitlines():
        if line.startswith("recomengine_experiment_variant_mismatches_total") and tenant_id in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


# --- merging an anonymous shopper --------------------------------------------------------


async def test_merging_moves_the_anonymous_history_to_the_user_with_a_token_only(
    http: httpx.AsyncClient, shop: Shop, worker_process: Process, db: asyncpg.Pool, redis: Redis
) -> None:
    anon = "anon-merge-1"
    views = [{"eventType": "product_viewed", "userId": anon, "productId": f"p{i}"} for i in (2, 3)]
    posted = await http.post(
        "/api/v1/storefront/events", json={"events": views}, headers=shop.ctx.read_headers
    )
    assert posted.status_code == 202
    await _event_rows(db, shop.ctx.tenant_id, 2)
    body = {"fromUserId": anon, "toUserId": "member-7"}
    unsigned = await http.post("/api/v1/users/merge", json=body, headers=shop.ctx.read_headers)
    assert unsigned.status_code == 403
    secret = await _secret(http, shop.ctx)
    token = sign_user(secret=secret, user_id="member-7")
    merged = await http.post(
        "/api/v1/users/merge", json=body, headers={**shop.ctx.read_headers, "X-User-Token": token}
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["movedEvents"] == 2
    owners = await db.fetch(
        "SELECT DISTINCT user_id FROM events WHERE tenant_id = $1", shop.ctx.tenant_id
    )
    assert [r["user_id"] for r in owners] == ["member-7"]
    history: list[Any] = await redis.zrange(f"reco:{shop.ctx.tenant_id}:history:member-7", 0, -1)
    assert {h.decode() for h in history} == {"product_viewed|p2", "product_viewed|p3"}
    assert not await redis.exists(f"reco:{shop.ctx.tenant_id}:history:{anon}")
    again = await http.post("/api/v1/users/merge", json=body, headers=shop.ctx.write_headers)
    assert again.json()["movedEvents"] == 0
    same = await http.post(
        "/api/v1/users/merge",
        json={"fromUserId": "a", "toUserId": "a"},
        headers=shop.ctx.write_headers,
    )
    assert same.status_code == 422


async def test_a_merchant_backend_event_also_counts_under_the_server_variant(
    http: httpx.AsyncClient, shop: Shop, worker_process: Process, db: asyncpg.Pool
) -> None:
    experiment_id = await _start_experiment(http, shop.ctx, 50)
    truth = assign_variant(experiment_id=experiment_id, user_id="backend-user", traffic_split=50)
    event = {
        "eventType": "recommendation_clicked",
        "userId": "backend-user",
        "productId": "p2",
        "metadata": {
            "placementId": "home",
            "experimentId": experiment_id,
            "variant": {"control": "variant", "variant": "control"}[truth],
        },
    }
    posted = await http.post("/api/v1/events", json=event, headers=shop.ctx.write_headers)
    assert posted.status_code == 202, posted.text
    rows = await _event_rows(db, shop.ctx.tenant_id, 1)
    assert [_metadata(r)["variant"] for r in rows] == [truth]


async def test_the_storefront_routes_are_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/api/v1/openapi.json")).json()["paths"]
    assert "post" in paths["/api/v1/storefront/events"]
    assert "post" in paths["/api/v1/users/merge"]
    assert "post" in paths["/api/v1/tenants/{tenant_id}/user-token-secret"]
    assert "get" in paths["/v1/{filename}"]
