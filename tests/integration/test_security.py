"""Production-safe by default: secrets, sessions, NUL bytes, headers, passwords, sign-in delay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from conftest import ROOT, Process, Services, TenantContext, settings_env, wait_for
from pydantic import ValidationError
from redis.asyncio import Redis
from sanic.response import html, json

from api.headers import add_security_headers
from cli.localservices import free_port
from store import keys
from store.settings import DEVELOPMENT_SECRET, Settings

AUTH = "/api/v1/auth"
PASSWORD = "a perfectly fine password"
STRONG = "Q8v-2mLk_x9TzR4pW7nB1cYd6hJs0fGe3aU5"


def new_email() -> str:
    return f"sec-{uuid.uuid4().hex[:12]}@example.com"


def signup(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post(
        f"{AUTH}/signup", json={"email": email, "password": password, "name": "Sec Admin"}
    )


def login(
    http: httpx.Client, email: str, password: str = PASSWORD, *, ip: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": ip} if ip else {}
    return http.post(f"{AUTH}/login", json={"email": email, "password": password}, headers=headers)


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"{AUTH}/{path}", json=body)


def me(http: httpx.Client, token: str) -> httpx.Response:
    return http.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {token}"})


def cookie_call(http: httpx.Client, path: str, response: httpx.Response) -> httpx.Response:
    """POST with the session cookies of `response` and the CSRF header, as the dashboard does."""
    refresh = response.cookies["recomengine_refresh"]
    csrf = response.cookies["recomengine_csrf"]
    http.cookies.clear()
    return http.post(
        f"{AUTH}/{path}",
        headers={
            "Cookie": f"recomengine_refresh={refresh}; recomengine_csrf={csrf}",
            "X-CSRF-Token": csrf,
        },
    )


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


# --- 1. secrets fail closed -----------------------------------------------------------------


@pytest.mark.parametrize("environment", [None, "prod", "Production", "staging", "production"])
def test_settings_without_secrets_are_refused_unless_in_development(
    environment: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Away from a checkout where `make up` left its env file, which these settings would read.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECOMENGINE_ENVIRONMENT")
    environ = {} if environment is None else {"RECOMENGINE_ENVIRONMENT": environment}
    with pytest.raises(ValidationError, match="RECOMENGINE_JWT_SECRET"):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    "secret",
    [DEVELOPMENT_SECRET, "too-short-secret", "a" * 64, "changeme" * 8],
    ids=["built-in", "short", "one-character", "repeated-word"],
)
def test_weak_secrets_are_refused_outside_development(secret: str) -> None:
    with pytest.raises(ValidationError, match="RECOMENGINE_API_KEY_SECRET"):
        Settings(environment="production", jwt_secret=STRONG, api_key_secret=secret)


def test_development_mode_is_explicit_and_keeps_cookies_plain() -> None:
    development = Settings.from_env({"RECOMENGINE_ENVIRONMENT": "development"})
    assert development.is_development and not development.secure_cookies
    production = Settings(environment="staging", jwt_secret=STRONG, api_key_secret=STRONG[::-1])
    assert not production.is_development and production.secure_cookies


def test_the_api_refuses_to_start_without_real_secrets_and_says_so_in_one_line(
    migrated: Settings,
) -> None:
    env = {k: v for k, v in settings_env(migrated).items() if "SECRET" not in k}
    env.pop("RECOMENGINE_ENVIRONMENT")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "api"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "RECOMENGINE_JWT_SECRET" in lines[0] and "32 random bytes" in lines[0]


@pytest.fixture(scope="module")
def production_api(migrated: Settings, services: Services) -> Iterator[str]:
    """An api in production mode (real secrets) behind one trusted proxy."""
    settings = migrated.model_copy(update={"environment": "production", "api_port": free_port()})
    env = {**settings_env(settings), "SANIC_PROXIES_COUNT": "1"}
    env.pop("RECOMENGINE_COOKIE_SECURE", None)
    process = Process(["api"], env, services.workdir / "api-production.log").start()
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        wait_for(f"{url}/ready", timeout=60, process=process)
        yield url
    finally:
        process.stop()


def test_a_token_signed_with_the_development_secret_is_refused_in_production(
    production_api: str, migrated: Settings
) -> None:
    with httpx.Client(base_url=production_api, timeout=30) as http:
        created = signup(http, new_email())
        assert created.status_code == 201, created.text
        admin_id = created.json()["admin"]["id"]
        now = int(time.time())
        forged = jwt.encode(
            {
                "sub": admin_id,
                "aud": migrated.jwt_audience,
                "iss": migrated.jwt_issuer,
                "typ": "access",
                "iat": now,
                "nbf": now,
                "exp": now + 600,
                "sv": 0,
            },
            DEVELOPMENT_SECRET,
            algorithm="HS256",
        )
        problem_of(me(http, forged), 401)
        assert me(http, created.json()["accessToken"]).status_code == 200


def test_session_cookies_are_secure_outside_development(production_api: str) -> None:
    with httpx.Client(base_url=production_api, timeout=30) as http:
        created = signup(http, new_email())
        cookies = created.headers.get_list("set-cookie")
        assert len(cookies) == 2
        assert all("secure" in cookie.lower() for cookie in cookies)


# --- 2. sessions end when they should --------------------------------------------------------


def test_an_access_token_is_dead_after_logout(client: httpx.Client) -> None:
    created = signup(client, new_email())
    token = created.json()["accessToken"]
    assert me(client, token).status_code == 200
    assert cookie_call(client, "logout", created).status_code == 204
    problem_of(me(client, token), 401)


async def test_an_access_token_is_dead_after_a_password_reset(
    client: httpx.Client, db: asyncpg.Pool, settings: Settings
) -> None:
    from store.auth_tokens import reset_link_token

    email = new_email()
    token = signup(client, email).json()["accessToken"]
    assert post(client, "forgot-password", {"email": email}).status_code == 202
    reset_id = None
    for _ in range(200):
        reset_id = await db.fetchval(
            "SELECT password_reset_id FROM mail_outbox WHERE to_address = $1", email
        )
        if reset_id is not None:
            break
        await asyncio.sleep(0.05)
    assert reset_id is not None
    link_token = reset_link_token(str(reset_id), secret=settings.jwt_secret)
    same_as_email = post(client, "reset-password", {"token": link_token, "password": email})
    assert problem_of(same_as_email, 422)["errors"][0]["field"] == "password"
    done = post(client, "reset-password", {"token": link_token, "password": "another fine pw!"})
    assert done.status_code == 204, done.text
    problem_of(me(client, token), 401)
    fresh = login(client, email, "another fine pw!")
    assert me(client, fresh.json()["accessToken"]).status_code == 200


def test_a_password_change_ends_other_sessions_and_answers_a_fresh_one(
    client: httpx.Client,
) -> None:
    email = new_email()
    first = signup(client, email).json()["accessToken"]
    second = login(client, email).json()["accessToken"]
    changed = client.post(
        f"{AUTH}/change-password",
        json={"currentPassword": PASSWORD, "newPassword": "a changed fine password"},
        headers={"Authorization": f"Bearer {first}"},
    )
    assert changed.status_code == 200, changed.text
    problem_of(me(client, first), 401)
    problem_of(me(client, second), 401)
    assert me(client, changed.json()["accessToken"]).status_code == 200
    problem_of(login(client, email), 401)


def test_a_password_change_with_a_wrong_current_password_is_a_422(client: httpx.Client) -> None:
    token = signup(client, new_email()).json()["accessToken"]
    refused = client.post(
        f"{AUTH}/change-password",
        json={"currentPassword": "not the password", "newPassword": "a changed fine password"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert problem_of(refused, 422)["errors"][0]["field"] == "currentPassword"
    assert me(client, token).status_code == 200


async def test_the_session_version_is_read_from_one_cached_redis_key(
    client: httpx.Client, redis: Redis
) -> None:
    created = signup(client, new_email()).json()
    key = keys.admin_session_version(created["admin"]["id"])
    await redis.delete(key)
    assert me(client, created["accessToken"]).status_code == 200
    assert await redis.get(key) == b"0"
    assert 0 < await redis.ttl(key) <= 600


# --- 3. NUL bytes ---------------------------------------------------------------------------


def test_nul_bytes_in_query_or_path_parameters_are_400_problems(
    client: httpx.Client, tenant: TenantContext
) -> None:
    t = tenant.tenant_id
    key_calls = [
        "/api/v1/catalog?q=shoe%00",
        "/api/v1/catalog?category=a%00b",
        "/api/v1/catalog/p%001",
        "/api/v1/recommendations?userId=u%001",
        "/api/v1/recommendations?userId=u1&productId=p%00",
        "/api/v1/recommendations?userId=u1&placementId=home%00",
    ]
    admin_calls = [
        f"/api/v1/tenants/{t}/events?userId=u%001",
        f"/api/v1/tenants/{t}/events?productId=p%001",
        f"/api/v1/tenants/{t}/experiments?placementId=home%00",
        f"/api/v1/tenants/{t}/analytics/overview?placementId=home%00",
        f"/api/v1/tenants/{t}/catalog?q=%00",
    ]
    for path, headers in [(p, tenant.read_headers) for p in key_calls] + [
        (p, tenant.admin_headers) for p in admin_calls
    ]:
        body = problem_of(client.get(path, headers=headers), 400)
        assert "NUL" in body["detail"], path
    deleted = client.delete("/api/v1/catalog/p%00", headers=tenant.write_headers)
    problem_of(deleted, 400)


# --- 4. headers -----------------------------------------------------------------------------


def test_every_answer_forbids_framing_and_authenticated_json_is_not_stored(
    client: httpx.Client, tenant: TenantContext
) -> None:
    health = client.get("/health")
    assert "frame-ancestors 'none'" in health.headers["content-security-policy"]
    assert "strict-transport-security" not in health.headers
    admin = client.get("/api/v1/tenants", headers=tenant.admin_headers)
    assert admin.status_code == 200
    assert admin.headers["cache-control"] == "no-store"
    keyed = client.get("/api/v1/catalog", headers=tenant.read_headers)
    assert keyed.status_code == 200
    assert keyed.headers["cache-control"] == "no-store"
    refused = client.get("/api/v1/tenants", headers={"Authorization": "Bearer nope"})
    assert refused.headers["cache-control"] == "no-store"


def test_a_405_names_the_allowed_methods(client: httpx.Client, tenant: TenantContext) -> None:
    refused = client.patch("/api/v1/catalog", headers=tenant.write_headers)
    problem_of(refused, 405)
    allowed = {m.strip() for m in refused.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


def test_html_gets_a_content_security_policy_with_frame_ancestors() -> None:
    request = SimpleNamespace(
        scheme="http", headers={}, cookies={}, ctx=SimpleNamespace(), app=None
    )
    page = html("<p>hi</p>")
    add_security_headers(request, page)  # type: ignore[arg-type]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    data = json({})
    add_security_headers(request, data)  # type: ignore[arg-type]
    assert data.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_hsts_is_sent_when_the_trusted_proxy_says_tls(production_api: str) -> None:
    with httpx.Client(base_url=production_api, timeout=30) as http:
        proxied = {"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https"}
        over_tls = http.get("/health", headers=proxied)
        assert over_tls.headers["strict-transport-security"].startswith("max-age=")
        plain = http.get("/health")
        assert "strict-transport-security" not in plain.headers


# --- 5. passwords and accounts --------------------------------------------------------------


@pytest.mark.parametrize("password", ["password1", "iloveyou", "Qwertyuiop", "1q2w3e4r5t"])
def test_a_common_password_is_refused(client: httpx.Client, password: str) -> None:
    refused = signup(client, new_email(), password)
    error = problem_of(refused, 422)["errors"][0]
    assert error["field"] == "password" and "common" in error["message"]


def test_a_password_equal_to_the_email_is_refused(client: httpx.Client) -> None:
    email = new_email()
    error = problem_of(signup(client, email, email.upper()), 422)["errors"][0]
    assert error["field"] == "password" and "email" in error["message"]


async def test_forgot_password_answers_before_touching_the_account(
    client: httpx.Client, db: asyncpg.Pool
) -> None:
    email = new_email()
    assert signup(client, email).status_code == 201
    # With the reset tables locked, an answer that waited for the account's lookup and its
    # mail would hang; both answers come at once, known or unknown.
    async with db.acquire() as connection, connection.transaction():
        await connection.execute("LOCK TABLE password_resets IN ACCESS EXCLUSIVE MODE")
        timings = {}
        for who in (email, new_email()):
            started = time.perf_counter()
            answer = await asyncio.to_thread(
                client.post, f"{AUTH}/forgot-password", json={"email": who}
            )
            timings[who] = time.perf_counter() - started
            assert answer.status_code == 202
    assert max(timings.values()) < 1.0, timings


def test_guesses_from_one_address_do_not_lock_the_owner_out_elsewhere(
    production_api: str,
) -> None:
    with httpx.Client(base_url=production_api, timeout=30) as http:
        email = new_email()
        assert signup(http, email).status_code == 201
        attacker, owner = "203.0.113.7", "198.51.100.20"
        statuses = [login(http, email, "wrong guess!", ip=attacker).status_code for _ in range(10)]
        # The first five are checked; then each further try of that pair waits longer.
        assert statuses[:5] == [401] * 5 and 429 in statuses[5:]
        waiting = login(http, email, ip=attacker)
        assert waiting.status_code == 429
        assert 1 <= int(waiting.headers["retry-after"]) <= 900
        assert login(http, email, ip=owner).status_code == 200


# --- 6. least privilege ---------------------------------------------------------------------


def test_the_local_redis_refuses_anonymous_clients(services: Services) -> None:
    from redis import Redis as SyncRedis
    from redis.exceptions import AuthenticationError, ResponseError

    anonymous = SyncRedis(host="127.0.0.1", port=services.redis.port)
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            anonymous.ping()
    finally:
        anonymous.close()
    signed_in = SyncRedis.from_url(services.redis.url(0))
    try:
        assert signed_in.ping() is True
    finally:
        signed_in.close()
    assert (services.redis.data_dir / "password").stat().st_mode & 0o077 == 0


async def test_the_platform_role_may_change_rows_but_not_the_schema(
    app_db: asyncpg.Pool, migrated: Settings
) -> None:
    role = await app_db.fetchrow(
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
        "WHERE rolname = current_user"
    )
    assert role is not None and not (role["rolsuper"] or role["rolcreatedb"])
    assert not role["rolcreaterole"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_db.execute("CREATE TABLE intruder (id int)")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_db.execute("ALTER TABLE admins ADD COLUMN intruder int")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_db.execute("TRUNCATE events")
    owner = await asyncpg.connect(migrated.migration_database_url)
    try:
        assert (
            await owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            is False
        )
        tables_not_owned = await owner.fetchval(
            "SELECT count(*) FROM pg_tables "
            "WHERE schemaname = 'public' AND tableowner <> current_user"
        )
    finally:
        await owner.close()
    assert tables_not_owned == 0
    # Partitions are still made ahead by the platform role, through the owner's function.
    assert await app_db.fetchval("SELECT ensure_event_partitions('2031-01-01'::date, 1)") in (0, 1)
    assert await app_db.fetchval("SELECT to_regclass('events_2031_01') IS NOT NULL")
    await app_db.execute("SELECT drop_event_partition('events_2031_01')")
    with pytest.raises(asyncpg.RaiseError):
        await app_db.execute("SELECT drop_event_partition('admins')")
