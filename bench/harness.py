"""What the benchmarks share: throwaway servers, child processes, a bench tenant.

`local_platform(...)` starts PostgreSQL and Redis on free ports in a temporary folder, migrates,
and yields a `Platform` whose `start(...)` launches `python -m <module>` children (the api, a
worker, ...) with the platform's RECOMENGINE_* environment; everything is stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

from cli.commands.database import upgrade
from cli.localservices import PostgresServer, RedisServer, free_port, wait_for_http_ok
from store.admins import create_admin
from store.api_keys import issue_api_key
from store.passwords import hash_password
from store.settings import Settings
from store.tenants import create_tenant

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RECOMENGINE_CHROMIUM", "/usr/bin/chromium")
# Headless Chromium that reaches no network of its own (no updates, sync or first-run pages):
# neither the test machines nor CI can reach Google's servers.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def platform_env(settings: Settings) -> dict[str, str]:
    """`settings` as the RECOMENGINE_* environment of a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMENGINE_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"RECOMENGINE_{name.upper()}"] = str(value)
    return env


def stop_process(
    process: subprocess.Popen[bytes], *, timeout: float = 20, signal: bool = True
) -> None:
    """Terminate `process` (Dramatiq forwards it to its children), kill it if it lingers;
    `signal=False` only waits for one already terminated."""
    if signal and process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = 60
) -> None:
    """Block until `url` answers 200; fail early with the log's tail if `process` exits."""

    def exited() -> str | None:
        return log.read_text(errors="replace")[-3000:] if process.poll() is not None else None

    if not wait_for_http_ok(url, timeout=timeout, exited=exited):
        raise TimeoutError(f"{url} did not answer 200 in {timeout:.0f} s")


@dataclass
class Platform:
    """Settings, folder, environment and child processes of one benchmark run."""

    settings: Settings
    workdir: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # The servers, for runs that stop and restart them (bench.chaos).
    postgres: PostgresServer | None = None
    redis_server: RedisServer | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """The api's base URL."""
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start(
        self,
        module_args: list[str],
        log_name: str,
        *,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        prefix: Iterable[str] = (),
    ) -> subprocess.Popen[bytes]:
        """`python -m <module_args>` in its own session, output appended to workdir/log_name;
        `env` adds to or overrides the platform's environment; `cwd` is the code tree run;
        `prefix` is a command that execs it (`ip netns exec <name>`: on another network)."""
        handle = open(self.workdir / log_name, "ab")
        self._logs.append(handle)
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", *module_args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_api(
        self,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_name: str = "api.log",
        cwd: Path = ROOT,
        prefix: Iterable[str] = (),
    ) -> subprocess.Popen[bytes]:
        """`recomengine api` (on `port` if given, from the code tree `cwd`, exec'd by
        `prefix`), once /ready answers 200."""
        port = port or self.settings.api_port
        env = {**(env or {}), "RECOMENGINE_API_PORT": str(port)}
        process = self.start(["cli.main", "api"], log_name, env=env, cwd=cwd, prefix=prefix)
        ready = f"http://{self.settings.api_host}:{port}/ready"
        wait_ready(ready, process, self.workdir / log_name)
        return process

    def run_cli(self, args: Iterable[str], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        """Run `recomengine <args>` (from the code tree `cwd`) to completion, output as text."""
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )

    def stop_all(self) -> None:
        """Stop every child still running and close their logs."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            # Signalled once: a second SIGTERM makes Dramatiq's worker processes exit their
            # main thread at once and hang on their consumer threads, orphaned.
            stop_process(process, signal=False)
        for handle in self._logs:
            handle.close()


@contextmanager
def local_platform(
    prefix: str, *, keep: bool = False, workdir: Path | None = None, **overrides: Any
) -> Iterator[Platform]:
    """Throwaway PostgreSQL (migrated) and Redis; `overrides` go into the Settings. With
    `workdir` the servers keep their data there (reused when it holds some) and it is kept."""
    keep = keep or workdir is not None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # noqa: S103 (the postgres account must reach it as root)
    postgres = PostgresServer(data_dir=workdir / "postgres", port=free_port())
    redis_server = RedisServer(data_dir=workdir / "redis", port=free_port())
    platform: Platform | None = None
    try:
        postgres.start()
        redis_server.start()
        values: dict[str, Any] = {
            "environment": "test",
            # The benchmarks administer the server too (CHECKPOINT, pg_stat_statements).
            "database_url": postgres.superuser_url,
            "migration_database_url": postgres.owner_url,
            "redis_url": redis_server.url(1),
            "broker_url": redis_server.url(0),
            "jwt_secret": secrets.token_urlsafe(32),
            "api_key_secret": secrets.token_urlsafe(32),
            "bcrypt_rounds": 4,
            "api_port": free_port(),
            "log_level": "WARNING",
        }
        settings = Settings(**{**values, **overrides})
        # Alembic's env.py calls asyncio.run, which refuses a thread with a running loop.
        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(upgrade, settings.migration_database_url).result()
        platform = Platform(
            settings=settings,
            workdir=workdir,
            # The api and workers connect as in production: the DML-only role, which row-level
            # security holds (the bench's own pools keep the superuser, to administer and count).
            env={**platform_env(settings), "RECOMENGINE_DATABASE_URL": postgres.url},
            postgres=postgres,
            redis_server=redis_server,
        )
        yield platform
    finally:
        if platform is not None:
            platform.stop_all()
        redis_server.stop()
        # A kept data set is stopped cleanly: the next run starts without crash recovery.
        postgres.stop(mode="fast" if keep else "immediate")
        if keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class BenchTenant:
    """A tenant created in the store, its owner and its raw API keys by permission."""

    admin_id: str
    tenant_id: str
    keys: dict[str, str]


async def make_bench_tenant(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    config: dict[str, Any] | None = None,
    permissions: Iterable[str] = (),
    plan: str = "enterprise",
) -> BenchTenant:
    """An admin (nobody logs in as it), its tenant and one live key per permission; on the
    Enterprise plan by default (no quota, no shared write budget), as before plans."""
    # An unguessable password that is thrown away: the benchmarks never log in.
    unusable = hash_password(secrets.token_urlsafe(16), rounds=4)
    admin = await create_admin(
        pool,
        email=f"bench-{uuid.uuid4().hex[:8]}@example.com",
        name="Bench",
        password_hash=unusable,
    )
    tenant = await create_tenant(pool, owner_id=admin.id, name="Bench", config=config)
    tenant_id = str(tenant["id"])
    await pool.execute("UPDATE tenants SET plan = $2 WHERE id = $1", tenant["id"], plan)
    raw_keys = {}
    for permission in permissions:
        _, raw_key = await issue_api_key(
            pool,
            tenant_id=tenant_id,
            name=f"bench {permission}",
            permission=permission,
            environment="live",
            secret=settings.api_key_secret,
        )
        raw_keys[permission] = raw_key
    return BenchTenant(admin_id=str(admin.id), tenant_id=tenant_id, keys=raw_keys)


def export_tree(ref: str, into: Path) -> Path:
    """The code of git `ref` (tracked files) unpacked into `into`."""
    archive = into.with_suffix(".tar")
    subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), ref], cwd=ROOT, check=True
    )
    into.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def ingest_queues(code: Path = ROOT) -> str:
    """The ingestion queues of the code tree `code`, for `--queues` (its two lanes, or the one
    queue of trees from before them)."""
    known = (code / "workers" / "queues.py").read_text(encoding="utf-8")
    return "ingest,ingest_bulk" if '"ingest_bulk"' in known else "ingest"


class KeepAliveAnswers(asyncio.Protocol):
    """Reads keep-alive HTTP/1.1 answers (Content-Length bodies) off one connection, noting the
    moment each one is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes, float]] | None = None
        self._status = self._length = -1
        self._lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def expect(self) -> asyncio.Future[tuple[int, bytes, float]]:
        """The next answer: (status, body, perf_counter moment its last byte was read)."""
        self._waiter = asyncio.get_running_loop().create_future()
        if self._lost is not None:  # closed while idle (the api's keep-alive timeout)
            self._waiter.set_exception(self._lost)
        return self._waiter

    @property
    def open(self) -> bool:
        """Whether the connection can still carry a request."""
        return self._lost is None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._status < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            self._status = int(lines[0].split(" ", 2)[1])
            self._length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    self._length = int(value)
            del self._buffer[: end + 4]
        if len(self._buffer) < self._length:
            return
        answer = (self._status, bytes(self._buffer[: self._length]), time.perf_counter())
        del self._buffer[: self._length]
        self._status = self._length = -1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("the api closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)
