"""Admin identity over real HTTP: sign-up, sessions, JWT checks, rotation, resets, throttling."""

from __future__ import annotations

import asyncio
import re
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from conftest import Process, Services, settings_env, wait_for

from cli.localservices import free_port
from store.auth_tokens import reset_link_token
from store.mail import OutboxMail, claim_mail, send_smtp
from store.settings import Settings

AUTH = "/api/v1/auth"
PASSWORD = "a perfectly fine password"
REFRESH_COOKIE = "recomengine_refresh"
CSRF_COOKIE = "recomengine_csrf"
TOKEN_IN_LINK = re.compile(r"/reset-password\?token=([A-Za-z0-9_-]+)")


def new_email() -> str:
    return f"Admin-{uuid.uuid4().hex[:12]}@Example.com"


def signup(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post(
        f"{AUTH}/signup", json={"email": email, "password": password, "name": "Ada Admin"}
    )


def login(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post(f"{AUTH}/login", json={"email": email, "password": password})


def session_cookies(response: httpx.Response) -> tuple[str, str]:
    """The refresh token and CSRF token a session response set."""
    return response.cookies[REFRESH_COOKIE], response.cookies[CSRF_COOKIE]


def cookie_call(
    client: httpx.Client,
    path: str,
    refresh: str,
    csrf: str,
    *,
    csrf_header: str | None = "same",
) -> httpx.Response:
    """POST with exactly these cookies (not the client's jar), like a browser would send them."""
    client.cookies.clear()
    headers = {"Cookie": f"{REFRESH_COOKIE}={refresh}; {CSRF_COOKIE}={csrf}"}
    if csrf_header is not None:
        headers["X-CSRF-Token"] = csrf if csrf_header == "same" else csrf_header
    return client.post(f"{AUTH}/{path}", headers=headers)


def forgot(client: httpx.Client, email: str) -> httpx.Response:
    return client.post(f"{AUTH}/forgot-password", json={"email": email})


def reset(client: httpx.Client, token: str, password: str) -> httpx.Response:
    return client.post(f"{AUTH}/reset-password", json={"token": token, "password": password})


def me(client: httpx.Client, token: str) -> httpx.Response:
    return client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {token}"})


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def claims(settings: Settings, admin_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": admin_id,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "sv": 0,
    }
    base.update(changes)
    return base


def set_cookie_headers(response: httpx.Response, name: str) -> str:
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}="))


async def reset_mail_row(db: asyncpg.Pool, email: str) -> asyncpg.Record:
    """The newest reset mail of `email` (the api writes it just after answering)."""
    deadline = time.monotonic() + 10
    while True:
        row = await db.fetchrow(
            "SELECT id, body, password_reset_id, sent_at FROM mail_outbox WHERE to_address = $1 "
            "ORDER BY id DESC LIMIT 1",
            email.lower(),
        )
        if row is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert row is not None, "no reset mail in the outbox"
    return row


async def reset_token_from_outbox(db: asyncpg.Pool, email: str, settings: Settings) -> str:
    """The link's token as the outgoing mail carries it (the outbox holds none)."""
    row = await reset_mail_row(db, email)
    assert row["password_reset_id"] is not None
    return reset_link_token(str(row["password_reset_id"]), secret=settings.jwt_secret)


# --- sign-up, login, me ---------------------------------------------------------------------


def test_an_admin_signs_up_logs_in_and_reads_itself(client: httpx.Client) -> None:
    email = new_email()
    created = signup(client, email)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["admin"]["email"] == email.lower()
    assert body["admin"]["name"] == "Ada Admin"
    assert body["expiresIn"] == 3600
    assert me(client, body["accessToken"]).json() == body["admin"]

    logged_in = login(client, email.upper())
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["admin"] == body["admin"]
    assert me(client, logged_in.json()["accessToken"]).status_code == 200


def test_session_cookies_are_httponly_strict_and_scoped_to_auth(client: httpx.Client) -> None:
    response = signup(client, new_email())
    refresh = set_cookie_headers(response, REFRESH_COOKIE).lower()
    assert "httponly" in refresh
    assert "samesite=strict" in refresh
    assert "path=/api/v1/auth" in refresh
    assert "max-age=604800" in refresh
    csrf = set_cookie_headers(response, CSRF_COOKIE).lower()
    assert "httponly" not in csrf and "samesite=strict" in csrf
    assert response.headers["cache-control"] == "no-store"


def test_a_second_signup_with_the_same_email_in_other_case_is_a_409(
    client: httpx.Client,
) -> None:
    email = new_email()
    assert signup(client, email).status_code == 201
    assert_problem(signup(client, email.swapcase()), 409)


def test_a_73_byte_password_is_a_422_on_the_password_field(client: httpx.Client) -> None:
    # 37 characters but 73 bytes: the limit is bcrypt's, counted in UTF-8 bytes.
    body = assert_problem(signup(client, new_email(), password="é" * 36 + "x"), 422)
    assert [e["field"] for e in body["errors"]] == ["password"]


async def test_a_rejected_signup_creates_no_account(client: httpx.Client, db: asyncpg.Pool) -> None:
    email = new_email()
    body = assert_problem(signup(client, email, password="x" * 73), 422)
    assert body["errors"][0]["field"] == "password"
    assert await db.fetchval("SELECT count(*) FROM admins WHERE email = $1", email.lower()) == 0


def test_a_7_character_password_is_a_422(client: httpx.Client) -> None:
    body = assert_problem(signup(client, new_email(), password="seven77"), 422)
    assert body["errors"][0]["field"] == "password"


def test_a_bad_email_or_empty_name_is_a_422_naming_the_field(client: httpx.Client) -> None:
    bad_email = client.post(
        f"{AUTH}/signup", json={"email": "not-an-email", "password": PASSWORD, "name": "A"}
    )
    assert assert_problem(bad_email, 422)["errors"][0]["field"] == "email"
    no_name = client.post(
        f"{AUTH}/signup", json={"email": new_email(), "password": PASSWORD, "name": "  "}
    )
    assert assert_problem(no_name, 422)["errors"][0]["field"] == "name"


def test_unknown_email_and_wrong_password_get_the_same_401(client: httpx.Client) -> None:
    email = new_email()
    signup(client, email)
    wrong_password = assert_problem(login(client, email, "not the password"), 401)
    unknown = assert_problem(login(client, new_email()), 401)
    assert wrong_password["detail"] == unknown["detail"]


# --- access tokens --------------------------------------------------------------------------


@pytest.fixture
def admin_session(client: httpx.Client) -> dict[str, Any]:
    """A signed-up admin: its id, access token and session cookies."""
    response = signup(client, new_email())
    assert response.status_code == 201, response.text
    refresh, csrf = session_cookies(response)
    body = response.json()
    return {
        "id": body["admin"]["id"],
        "email": body["admin"]["email"],
        "access": body["accessToken"],
        "refresh": refresh,
        "csrf": csrf,
    }


def test_me_without_a_token_is_a_401(client: httpx.Client) -> None:
    assert_problem(client.get(f"{AUTH}/me"), 401)


def test_a_token_with_alg_none_is_a_401(
    client: httpx.Client, settings: Settings, admin_session: dict[str, Any]
) -> None:
    token = jwt.encode(claims(settings, admin_session["id"]), None, algorithm="none")
    assert_problem(me(client, token), 401)


def test_a_token_with_a_wrong_signature_is_a_401(
    client: httpx.Client, settings: Settings, admin_session: dict[str, Any]
) -> None:
    forged = jwt.encode(claims(settings, admin_session["id"]), "a" * 48, algorithm="HS256")
    assert_problem(me(client, forged), 401)
    # The right secret with an algorithm outside the allow-list is refused too.
    other_alg = jwt.encode(
        claims(settings, admin_session["id"]), settings.jwt_secret, algorithm="HS384"
    )
    assert_problem(me(client, other_alg), 401)
    # The control: the same claims signed as the server signs them pass.
    good = jwt.encode(claims(settings, admin_session["id"]), settings.jwt_secret, algorithm="HS256")
    assert me(client, good).status_code == 200


def test_an_expired_token_is_a_401(
    client: httpx.Client, settings: Settings, admin_session: dict[str, Any]
) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(
        claims(settings, admin_session["id"], iat=past - 60, nbf=past - 60, exp=past),
        settings.jwt_secret,
        algorithm="HS256",
    )
    assert_problem(me(client, token), 401)


def test_a_token_for_another_audience_is_a_401(
    client: httpx.Client, settings: Settings, admin_session: dict[str, Any]
) -> None:
    token = jwt.encode(
        claims(settings, admin_session["id"], aud="some-other-service"),
        settings.jwt_secret,
        algorithm="HS256",
    )
    assert_problem(me(client, token), 401)


def test_a_refresh_token_used_as_access_token_is_a_401(
    client: httpx.Client, settings: Settings, admin_session: dict[str, Any]
) -> None:
    typed_refresh = jwt.encode(
        claims(settings, admin_session["id"], typ="refresh"),
        settings.jwt_secret,
        algorithm="HS256",
    )
    assert_problem(me(client, typed_refresh), 401)
    assert_problem(me(client, admin_session["refresh"]), 401)


# --- refresh, rotation, CSRF, logout --------------------------------------------------------


def test_refresh_answers_a_new_access_token_and_rotates_the_cookie(
    client: httpx.Client, admin_session: dict[str, Any]
) -> None:
    response = cookie_call(client, "refresh", admin_session["refresh"], admin_session["csrf"])
    assert response.status_code == 200, response.text
    assert me(client, response.json()["accessToken"]).json()["id"] == admin_session["id"]
    new_refresh, new_csrf = session_cookies(response)
    assert new_refresh != admin_session["refresh"]
    assert new_csrf != admin_session["csrf"]
    assert cookie_call(client, "refresh", new_refresh, new_csrf).status_code == 200


async def test_a_replayed_rotated_refresh_token_is_a_401_and_revokes_the_family(
    client: httpx.Client, db: asyncpg.Pool, admin_session: dict[str, Any]
) -> None:
    old_refresh, old_csrf = admin_session["refresh"], admin_session["csrf"]
    rotated = cookie_call(client, "refresh", old_refresh, old_csrf)
    assert rotated.status_code == 200
    newest_refresh, newest_csrf = session_cookies(rotated)

    assert_problem(cookie_call(client, "refresh", old_refresh, old_csrf), 401)
    # The legitimate newest token of that family is dead too: the thief's copy cannot live on.
    assert_problem(cookie_call(client, "refresh", newest_refresh, newest_csrf), 401)
    live = await db.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE admin_id = $1 AND revoked_at IS NULL",
        uuid.UUID(admin_session["id"]),
    )
    assert live == 0


async def test_a_replay_leaves_other_sessions_of_the_admin_alone(
    client: httpx.Client, admin_session: dict[str, Any]
) -> None:
    other = login(client, admin_session["email"])
    other_refresh, other_csrf = session_cookies(other)
    cookie_call(client, "refresh", admin_session["refresh"], admin_session["csrf"])
    cookie_call(client, "refresh", admin_session["refresh"], admin_session["csrf"])
    assert cookie_call(client, "refresh", other_refresh, other_csrf).status_code == 200


def test_refresh_without_the_csrf_header_is_a_403_and_rotates_nothing(
    client: httpx.Client, admin_session: dict[str, Any]
) -> None:
    refresh, csrf = admin_session["refresh"], admin_session["csrf"]
    assert_problem(cookie_call(client, "refresh", refresh, csrf, csrf_header=None), 403)
    assert_problem(cookie_call(client, "refresh", refresh, csrf, csrf_header="forged"), 403)
    # A cookie and header pair that match each other but not the session is refused as well.
    client.cookies.clear()
    pair = client.post(
        f"{AUTH}/refresh",
        headers={
            "Cookie": f"{REFRESH_COOKIE}={refresh}; {CSRF_COOKIE}=chosen",
            "X-CSRF-Token": "chosen",
        },
    )
    assert_problem(pair, 403)
    assert cookie_call(client, "refresh", refresh, csrf).status_code == 200


def test_refresh_without_a_cookie_is_a_401(client: httpx.Client) -> None:
    client.cookies.clear()
    assert_problem(client.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": "x"}), 401)


def test_logout_revokes_the_refresh_token_and_clears_the_cookies(
    client: httpx.Client, admin_session: dict[str, Any]
) -> None:
    refresh, csrf = admin_session["refresh"], admin_session["csrf"]
    assert_problem(cookie_call(client, "logout", refresh, csrf, csrf_header=None), 403)
    response = cookie_call(client, "logout", refresh, csrf)
    assert response.status_code == 204
    cleared = set_cookie_headers(response, REFRESH_COOKIE).lower()
    assert "max-age=0" in cleared
    assert_problem(cookie_call(client, "refresh", refresh, csrf), 401)


# --- forgot and reset -----------------------------------------------------------------------


async def test_forgot_password_answers_202_alike_and_mails_only_a_real_account(
    client: httpx.Client, db: asyncpg.Pool, settings: Settings, admin_session: dict[str, Any]
) -> None:
    unknown_email = new_email()
    known = forgot(client, admin_session["email"])
    unknown = forgot(client, unknown_email)
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content == b""

    await reset_mail_row(db, admin_session["email"])
    rows = await db.fetch(
        "SELECT id, to_address, body FROM mail_outbox WHERE to_address = ANY($1::text[])",
        [admin_session["email"], unknown_email.lower()],
    )
    assert [row["to_address"] for row in rows] == [admin_session["email"]]
    # The outgoing mail carries the link; the outbox and password_resets hold no token.
    async with db.acquire() as connection, connection.transaction():
        mail = await claim_mail(connection, mail_id=rows[0]["id"], link_secret=settings.jwt_secret)
        assert mail is not None
        await connection.execute("SELECT 1")
    token = TOKEN_IN_LINK.search(mail.body)
    assert token is not None
    assert f"{settings.dashboard_url}/reset-password?token=" in mail.body
    assert TOKEN_IN_LINK.search(rows[0]["body"]) is None
    assert token.group(1) not in rows[0]["body"]
    stored = await db.fetchval(
        "SELECT token_hash FROM password_resets WHERE admin_id = $1",
        uuid.UUID(admin_session["id"]),
    )
    assert token.group(1).encode() not in bytes(stored)  # only the digest is kept


async def test_a_reset_token_works_once_and_ends_every_session(
    client: httpx.Client, db: asyncpg.Pool, settings: Settings, admin_session: dict[str, Any]
) -> None:
    email = admin_session["email"]
    forgot(client, email)
    token = await reset_token_from_outbox(db, email, settings)
    new_password = "a brand new password"

    done = reset(client, token, new_password)
    assert done.status_code == 204, done.text
    assert login(client, email, new_password).status_code == 200
    assert_problem(login(client, email, PASSWORD), 401)
    assert_problem(
        cookie_call(client, "refresh", admin_session["refresh"], admin_session["csrf"]), 401
    )

    again = reset(client, token, "yet another password")
    assert assert_problem(again, 422)["errors"][0]["field"] == "token"
    assert login(client, email, new_password).status_code == 200


async def test_an_expired_reset_token_is_refused(
    client: httpx.Client, db: asyncpg.Pool, settings: Settings, admin_session: dict[str, Any]
) -> None:
    email = admin_session["email"]
    forgot(client, email)
    token = await reset_token_from_outbox(db, email, settings)
    await db.execute(
        "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE admin_id = $1",
        uuid.UUID(admin_session["id"]),
    )
    expired = reset(client, token, "a brand new password")
    assert_problem(expired, 422)
    assert login(client, email, PASSWORD).status_code == 200


async def test_a_reset_with_a_short_password_keeps_the_token_usable(
    client: httpx.Client, db: asyncpg.Pool, settings: Settings, admin_session: dict[str, Any]
) -> None:
    email = admin_session["email"]
    forgot(client, email)
    token = await reset_token_from_outbox(db, email, settings)
    short = reset(client, token, "short")
    assert assert_problem(short, 422)["errors"][0]["field"] == "password"
    ok = reset(client, token, "a brand new password")
    assert ok.status_code == 204


async def test_the_mail_actor_sends_the_outbox_mail_once(
    client: httpx.Client,
    db: asyncpg.Pool,
    settings: Settings,
    worker_process: Process,
    admin_session: dict[str, Any],
) -> None:
    forgot(client, admin_session["email"])
    mail_row = await reset_mail_row(db, admin_session["email"])
    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline:
        row = await db.fetchrow(
            "SELECT sent_at, attempts, body FROM mail_outbox WHERE to_address = $1",
            admin_session["email"],
        )
        if row is not None and row["sent_at"] is not None:
            break
        await asyncio.sleep(0.2)
    assert row is not None and row["sent_at"] is not None, worker_process.log()[-3000:]
    assert row["attempts"] == 1
    token = reset_link_token(str(mail_row["password_reset_id"]), secret=settings.jwt_secret)
    # The log records that a mail left, never its body or its one-time link.
    assert token not in worker_process.log()
    assert "Someone asked to reset the password" not in worker_process.log()


# --- throttling -----------------------------------------------------------------------------


def test_failed_logins_slow_down_that_account_from_that_address(
    client: httpx.Client, settings: Settings, admin_session: dict[str, Any]
) -> None:
    email = admin_session["email"]
    for _ in range(settings.login_free_failures):
        assert_problem(login(client, email, "wrong password!"), 401)
    waiting = login(client, email)  # even the right password waits out the delay
    assert_problem(waiting, 429)
    assert 0 < int(waiting.headers["retry-after"]) <= 2
    # Other accounts are not affected by this one's failures.
    other = new_email()
    assert signup(client, other).status_code == 201
    assert login(client, other).status_code == 200
    time.sleep(1.1)
    assert login(client, email).status_code == 200


@pytest.fixture(scope="module")
def throttled_api(migrated: Settings, services: Services) -> Iterator[str]:
    """A second api allowing 3 auth calls a minute per IP, on its own Redis database."""
    settings = migrated.model_copy(
        update={
            "auth_limit_per_minute": 3,
            "api_port": free_port(),
            "redis_url": services.redis.url(5),
        }
    )
    process = Process(["api"], settings_env(settings), services.workdir / "api-throttled.log")
    process.start()
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        wait_for(f"{url}/ready", timeout=60, process=process)
        yield url
    finally:
        process.stop()


def test_auth_calls_past_the_per_ip_budget_get_a_429_with_retry_after(
    throttled_api: str,
) -> None:
    with httpx.Client(base_url=throttled_api, timeout=30) as http:
        email = new_email()
        assert signup(http, email).status_code == 201
        assert http.post(f"{AUTH}/forgot-password", json={"email": email}).status_code == 202
        assert login(http, email).status_code == 200
        refused = http.post(f"{AUTH}/login", json={"email": email, "password": PASSWORD})
        assert_problem(refused, 429)
        assert 0 < int(refused.headers["retry-after"]) <= 60
        # Calls that are not sign-in attempts are not throttled by it.
        assert me(http, "not-a-token").status_code == 401


async def test_an_expired_refresh_token_is_a_401(
    client: httpx.Client, db: asyncpg.Pool, admin_session: dict[str, Any]
) -> None:
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE admin_id = $1",
        uuid.UUID(admin_session["id"]),
    )
    refused = cookie_call(client, "refresh", admin_session["refresh"], admin_session["csrf"])
    assert_problem(refused, 401)


def test_the_openapi_document_describes_every_auth_route(client: httpx.Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for name in ("signup", "login", "refresh", "logout", "forgot-password", "reset-password"):
        assert "post" in paths[f"/api/v1/auth/{name}"], name
    assert paths["/api/v1/auth/me"]["get"]["security"] == [{"bearer": []}]
    signup_doc = paths["/api/v1/auth/signup"]["post"]
    assert "201" in signup_doc["responses"] and "requestBody" in signup_doc


class FakeSmtpServer(socketserver.ThreadingTCPServer):
    """Just enough SMTP to accept mails, kept in `received` (no extensions, no auth)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeSmtpHandler)
        self.received: list[dict[str, Any]] = []


class FakeSmtpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, FakeSmtpServer)
        envelope: dict[str, Any] = {"rcpt": []}
        self.wfile.write(b"220 fake ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 fake\r\n")
            elif verb == b"MAIL":
                envelope["from"] = line.decode().split(":", 1)[1].strip()
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"RCPT":
                envelope["rcpt"].append(line.decode().split(":", 1)[1].strip())
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                envelope["data"] = data.decode()
                server.received.append(envelope)
                envelope = {"rcpt": []}
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_the_smtp_adapter_delivers_the_outbox_mail() -> None:
    with FakeSmtpServer() as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            mail = OutboxMail(
                id=1,
                to_address="ada@example.com",
                subject="Reset your RecomEngine password",
                body="open https://dash.example/reset-password?token=abc\n",
                attempts=0,
            )
            send_smtp(f"smtp://127.0.0.1:{port}", sender="no-reply@example.com", mail=mail)
        finally:
            server.shutdown()
    [envelope] = server.received
    assert envelope["from"] == "<no-reply@example.com>"
    assert envelope["rcpt"] == ["<ada@example.com>"]
    assert "Subject: Reset your RecomEngine password" in envelope["data"]
    assert "reset-password?token=abc" in envelope["data"]


def test_the_smtp_adapter_refuses_a_url_that_is_not_smtp() -> None:
    mail = OutboxMail(id=1, to_address="a@example.com", subject="s", body="b", attempts=0)
    with pytest.raises(ValueError):
        send_smtp("http://127.0.0.1:25", sender="x@example.com", mail=mail)
