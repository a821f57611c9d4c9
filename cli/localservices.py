"""Project-local PostgreSQL and Redis servers for development and tests (no Docker needed)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POSTGRES_USER = "recomengine"  # owns the database and its schema; runs the migrations
POSTGRES_APP_USER = "recomengine_app"  # what the api and workers connect as: rows only
POSTGRES_SUPERUSER = "postgres"  # administers the cluster (clusters made before: the owner)
POSTGRES_DB = "recomengine"
# What the platform's role may do: read and write rows of the owner's tables, use its sequences
# and call its functions (two of which make and drop event partitions as the owner).
_APP_GRANTS = f"""
GRANT CONNECT ON DATABASE {POSTGRES_DB} TO {POSTGRES_APP_USER};
GRANT USAGE ON SCHEMA public TO {POSTGRES_APP_USER};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {POSTGRES_APP_USER};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {POSTGRES_APP_USER};
ALTER DEFAULT PRIVILEGES FOR ROLE {POSTGRES_USER} IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {POSTGRES_APP_USER};
ALTER DEFAULT PRIVILEGES FOR ROLE {POSTGRES_USER} IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO {POSTGRES_APP_USER};
"""


# Where the servers listen unless told otherwise: nothing outside this machine reaches them.
LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A local server could not be started; the message says what to do."""


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """Write the RECOMENGINE_* variables of `env` to `path` (mode 600: it holds secrets), so
    that commands started in the project folder find the platform `make up` runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{key}={json.dumps(value)}"
        for key, value in sorted(env.items())
        if key.startswith("RECOMENGINE_")
    ]
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# Written by `make up`: the local platform's settings.\n")
        handle.write("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return path


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http_ok(
    url: str, *, timeout: float = 60, exited: Callable[[], str | None] = lambda: None
) -> bool:
    """Poll `url` until it answers 200 (True) or `timeout` passes (False); `exited` returns a
    reason to stop early (e.g. the server's log tail when its process died), raised as such."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reason = exited()
        if reason is not None:
            raise RuntimeError(f"{url}: the server exited early:\n{reason}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    raise ServiceError(f"{name} not found: install PostgreSQL 15+ server binaries")


def _as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: drop to the system "postgres" account when we are root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _reachable_by_postgres(path: Path) -> bool:
    probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(path)]
    return subprocess.run(probe, check=False, cwd="/").returncode == 0


def postgres_data_dir(wanted: Path) -> Path:
    """`wanted`, or when we are root and the postgres account cannot reach it (a home folder
    of mode 700, say), a folder in the system's temporary directory that it can, which `wanted`
    then links to."""
    if wanted.is_symlink():
        return wanted.resolve()
    if os.geteuid() != 0 or (wanted / "PG_VERSION").exists():
        return wanted
    wanted.parent.mkdir(parents=True, exist_ok=True)
    if _reachable_by_postgres(wanted.parent):
        return wanted
    digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:12]
    outside = Path(tempfile.gettempdir()) / "recomengine-postgres" / digest
    outside.mkdir(parents=True, exist_ok=True)
    for folder in (outside.parent, outside):
        os.chmod(folder, 0o755)  # noqa: S103 (postgres must traverse it)
    (outside / "postgres").mkdir(exist_ok=True)
    wanted.symlink_to(outside / "postgres", target_is_directory=True)
    return outside / "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL cluster in `data_dir`, listening on `host`:`port` (the loopback address
    unless told otherwise).

    Its clients sign in without a password (trust), so by default only this machine's reach it;
    `trusted_network` (a CIDR such as 10.20.30.0/24, for a private bench network) lets that
    network's clients in too.
    """

    data_dir: Path
    port: int
    host: str = LOOPBACK
    trusted_network: str | None = None

    @property
    def url(self) -> str:
        """The connection URL of the platform's processes (a role with DML rights only)."""
        return f"postgresql://{POSTGRES_APP_USER}@{self.host}:{self.port}/{POSTGRES_DB}"

    @property
    def superuser_url(self) -> str:
        """The cluster superuser's URL, for administration only (clusters made by this code)."""
        return f"postgresql://{POSTGRES_SUPERUSER}@{self.host}:{self.port}/{POSTGRES_DB}"

    @property
    def owner_url(self) -> str:
        """The connection URL of the schema owner, which runs the migrations."""
        return f"postgresql://{POSTGRES_USER}@{self.host}:{self.port}/{POSTGRES_DB}"

    def start(self) -> None:
        """Create the cluster if needed and start it; harmless when it already runs."""
        if _port_open(self.port, self.host) and (self.data_dir / "postmaster.pid").exists():
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.data_dir, "postgres", "postgres")
            subprocess.run(
                _as_postgres_user(
                    [
                        _postgres_bin("initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        POSTGRES_SUPERUSER,
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-instructions",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
        self._trust_network()
        # Ingestion writes WAL fast: checkpoints forced by a small WAL budget every minute or so
        # write every dirty page and make the next change of each page log it whole. Commits
        # stay synchronous: an accepted event is never lost.
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories='' "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
            "-c synchronous_commit=on -c max_wal_size=4GB -c checkpoint_timeout=15min "
            "-c wal_buffers=16MB"
        )
        subprocess.run(
            _as_postgres_user(
                [
                    _postgres_bin("pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-o",
                    options,
                    "-l",
                    str(self.data_dir / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            cwd="/",
        )
        self._create_database()

    def _trust_network(self) -> None:
        """Let `trusted_network`'s clients in (read when the server starts); once."""
        if self.trusted_network is None:
            return
        rules = self.data_dir / "pg_hba.conf"
        line = f"host all all {self.trusted_network} trust"
        if line not in rules.read_text().splitlines():
            with rules.open("a") as handle:
                handle.write(line + "\n")

    def _psql(self, user: str, database: str, sql: str) -> str:
        done = subprocess.run(
            [
                _postgres_bin("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qtAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def _superuser(self) -> str:
        probe = subprocess.run(
            [
                _postgres_bin("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                POSTGRES_SUPERUSER,
                "-d",
                "postgres",
                "-qtAc",
                "SELECT 1",
            ],
            check=False,
            capture_output=True,
        )
        return POSTGRES_SUPERUSER if probe.returncode == 0 else POSTGRES_USER

    def _create_database(self) -> None:
        """The owner and platform roles, the database and the platform role's grants (each
        step skipped when done)."""
        admin = self._superuser()
        roles = {
            POSTGRES_USER: "LOGIN CREATEDB",
            POSTGRES_APP_USER: "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        }
        for role, options in roles.items():
            exists = self._psql(admin, "postgres", f"SELECT 1 FROM pg_roles WHERE rolname='{role}'")
            if exists != "1":
                self._psql(admin, "postgres", f"CREATE ROLE {role} {options}")
        exists = self._psql(
            admin, "postgres", f"SELECT 1 FROM pg_database WHERE datname='{POSTGRES_DB}'"
        )
        if exists != "1":
            self._psql(admin, "postgres", f"CREATE DATABASE {POSTGRES_DB} OWNER {POSTGRES_USER}")
        self._psql(POSTGRES_USER, POSTGRES_DB, _APP_GRANTS)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the cluster if it runs."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            _as_postgres_user(
                [_postgres_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )


REDIS_USER = "recomengine"


@dataclass(frozen=True)
class RedisServer:
    """A redis-server with its data (AOF on) in `data_dir`, listening on `host`:`port` (the
    loopback address unless told otherwise).

    Even on a developer's machine it takes no anonymous client: every user needs the password
    made on first start (kept in `data_dir`), and the platform signs in as `recomengine`.
    """

    data_dir: Path
    port: int
    host: str = LOOPBACK

    @property
    def password(self) -> str:
        """The platform user's password (made on first use, mode 600)."""
        path = self.data_dir / "password"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def url(self, db: int = 0) -> str:
        """The connection URL of logical database `db` (with the platform user's password)."""
        return f"redis://{REDIS_USER}:{self.password}@{self.host}:{self.port}/{db}"

    def _acl_file(self) -> Path:
        path = self.data_dir / "users.acl"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            # The default user keeps every right but needs the password: Redis 7.0 replays an
            # AOF's transactions as the default user, and a default user turned off would make
            # it drop them on restart.
            for user in ("default", REDIS_USER):
                handle.write(f"user {user} on >{self.password} ~* &* +@all\n")
        return path

    def start(self) -> None:
        """Start the server if it is not running already."""
        if _port_open(self.port, self.host):
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server not found: install it (Debian: apt-get install -y redis-server)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--dir",
                str(self.data_dir.resolve()),
                "--appendonly",
                "yes",
                # The broker holds events the api has answered 202 for: each write is on disk
                # before Redis replies, so a kill -9 of Redis loses none of them (Redis syncs
                # once per event-loop turn, for every client's writes of that turn together).
                "--appendfsync",
                "always",
                "--save",
                "",
                "--aclfile",
                str(self._acl_file().resolve()),
                "--daemonize",
                "yes",
                "--pidfile",
                str((self.data_dir / "redis.pid").resolve()),
                "--logfile",
                str((self.data_dir / "redis.log").resolve()),
            ],
            check=True,
        )
        deadline = time.monotonic() + 20
        while not _port_open(self.port, self.host):
            if time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not start; see {self.data_dir}/redis.log")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server if it runs (SIGTERM, which flushes the AOF)."""
        pid_file = self.data_dir / "redis.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 15)
        except (ValueError, ProcessLookupError):
            return
        deadline = time.monotonic() + 10
        while _port_open(self.port, self.host) and time.monotonic() < deadline:
            time.sleep(0.05)
