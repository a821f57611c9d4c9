"""Test fixtures: a throwaway PostgreSQL and Redis per run, the real api and worker processes."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from cli.commands.database import upgrade
from cli.localservices import PostgresServer, RedisServer, free_port, wait_for_http_ok
from store.admins import create_admin
from store.api_keys import issue_api_key
from store.db import create_pool
from store.passwords import hash_password
from store.settings import Settings
from store.tenants import create_tenant

ROOT = Path(__file__).resolve().parents[1]
# The tests run in the explicit development mode (any other mode refuses to start without real
# secrets); every process they start gets the full settings below.
os.environ["RECOMENGINE_ENVIRONMENT"] = "development"
TEST_PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Services:
    """The throwaway servers of this test run."""

    postgres: PostgresServer
    redis: RedisServer
    workdir: Path


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """PostgreSQL and Redis on free ports, data in a temporary folder, removed at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="recomengine-test-"))
    # The postgres account must reach its data folder when the tests run as root.
    os.chmod(workdir, 0o755)  # noqa: S103
    postgres = PostgresServer(data_dir=workdir / "postgres", port=free_port())
    redis = RedisServer(data_dir=workdir / "redis", port=free_port())
    postgres.start()
    redis.start()
    try:
        yield Services(postgres=postgres, redis=redis, workdir=workdir)
    finally:
        redis.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(services: Services) -> Settings:
    """Settings pointing at the throwaway servers (development mode, fast bcrypt, fresh secrets)."""
    return Settings(
        environment="development",
        database_url=services.postgres.url,
        migration_database_url=services.postgres.owner_url,
        redis_url=services.redis.url(1),
        broker_url=services.redis.url(0),
        jwt_secret=secrets.token_urlsafe(32),
        api_key_secret=secrets.token_urlsafe(32),
        bcrypt_rounds=4,
        # The whole suite signs in from 127.0.0.1; the per-IP throttle has its own api in
        # tests/integration/test_auth.py.
        auth_limit_per_minute=100_000,
        api_port=free_port(),
        log_level="WARNING",
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as the RECOMENGINE_* environment of a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMENGINE_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"RECOMENGINE_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    """The schema at head (migrated as the owner; the tests and processes use the DML role)."""
    upgrade(settings.migration_database_url)
    return settings


class Process:
    """A platform process started for the tests, stopped (or killed) on demand."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start the process (its output goes to a log file)."""
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        return self

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM the process (it stops its own children), or SIGKILL the whole group."""
        if self.popen is None or self.popen.poll() is not None:
            return
        if kill:
            os.killpg(self.popen.pid, 9)
        else:
            # Only the parent: a Dramatiq pool forwards the signal to its workers itself, and
            # a second SIGTERM straight to a worker process stalls its graceful shutdown.
            os.kill(self.popen.pid, 15)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, 9)
            self.popen.wait(timeout=10)

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")


def wait_for(url: str, *, timeout: float = 30, process: Process | None = None) -> None:
    """Poll `url` until it answers 200; fail early with its log when `process` has exited."""

    def exited() -> str | None:
        if process is not None and process.popen is not None and process.popen.poll() is not None:
            return process.log()[-4000:]
        return None

    if not wait_for_http_ok(url, timeout=timeout, exited=exited):
        raise TimeoutError(f"{url} did not answer 200 in {timeout} s")


@pytest.fixture(scope="session")
def api_process(migrated: Settings, services: Services) -> Iterator[Process]:
    """The real api (`recomengine api`) on a free port."""
    process = Process(["api"], settings_env(migrated), services.workdir / "api.log").start()
    try:
        wait_for(f"http://127.0.0.1:{migrated.api_port}/ready", timeout=60, process=process)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def api_url(api_process: Process, settings: Settings) -> str:
    """Base URL of the running api."""
    return f"http://127.0.0.1:{settings.api_port}"


@pytest.fixture(scope="session")
def worker_process(migrated: Settings, services: Services) -> Iterator[Process]:
    """A real Dramatiq worker pool on every queue."""
    process = Process(
        ["worker", "--processes", "1", "--threads", "4"],
        settings_env(migrated),
        services.workdir / "worker.log",
    ).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    """An HTTP client for the api."""
    with httpx.Client(base_url=api_url, timeout=30) as http:
        yield http


def as_owner(settings: Settings) -> Settings:
    """`settings` connecting as the schema owner, which row-level security does not hold: the
    tests seed and inspect with it, the platform's processes never use it."""
    assert settings.migration_database_url
    return settings.model_copy(update={"database_url": settings.migration_database_url})


@pytest.fixture(scope="session")
async def db(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database as the schema owner, for seeding and checking what landed
    (the owner is exempt from row-level security; the platform's processes are not)."""
    pool = await create_pool(as_owner(migrated), min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def app_db(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool as the platform's own role (DML only, held to row-level security)."""
    pool = await create_pool(migrated, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def redis(migrated: Settings) -> AsyncIterator[Redis]:
    """A client on the projections Redis."""
    client = Redis.from_url(migrated.redis_url)
    yield client
    await client.aclose()


@dataclass(frozen=True)
class TenantContext:
    """An admin, its access token, a tenant and one key of each permission."""

    admin_id: str
    admin_email: str
    admin_token: str
    tenant_id: str
    read_key: str
    write_key: str

    @property
    def admin_headers(self) -> dict[str, str]:
        """Authorization header of the admin."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def read_headers(self) -> dict[str, str]:
        """X-API-Key header of the read key."""
        return {"X-API-Key": self.read_key}

    @property
    def write_headers(self) -> dict[str, str]:
        """X-API-Key header of the read_write key."""
        return {"X-API-Key": self.write_key}


async def make_tenant(
    pool: asyncpg.Pool, settings: Settings, *, config: dict | None = None
) -> TenantContext:
    """A fresh admin with a tenant and keys, made straight in the store (fast, independent)."""
    from api.security import issue_access_token

    email = f"admin-{uuid.uuid4().hex[:12]}@example.com"
    admin = await create_admin(
        pool,
        email=email,
        name="Test Admin",
        password_hash=hash_password(TEST_PASSWORD, rounds=4),
    )
    tenant = await create_tenant(pool, owner_id=admin.id, name="Test Shop", config=config)
    made = {}
    for permission in ("read", "read_write"):
        _, raw_key = await issue_api_key(
            pool,
            tenant_id=str(tenant["id"]),
            name=permission,
            permission=permission,
            environment="live",
            secret=settings.api_key_secret,
        )
        made[permission] = raw_key
    token, _ = issue_access_token(admin_id=admin.id, settings=settings)
    return TenantContext(
        admin_id=admin.id,
        admin_email=email,
        admin_token=token,
        tenant_id=str(tenant["id"]),
        read_key=made["read"],
        write_key=made["read_write"],
    )


@pytest.fixture
async def tenant(db: asyncpg.Pool, migrated: Settings) -> TenantContext:
    """A fresh tenant with an admin token and keys."""
    return await make_tenant(db, migrated)


@pytest.fixture
async def other_tenant(db: asyncpg.Pool, migrated: Settings) -> TenantContext:
    """A second, unrelated tenant (another admin) for isolation tests."""
    return await make_tenant(db, migrated)
