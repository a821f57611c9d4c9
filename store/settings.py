"""Process settings: RECOMENGINE_* environment variables, a `.env` file, or the env file that
`make up` writes for the local platform (README, "Settings")."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT = "development"
# Only ever accepted in development mode; anywhere else it is refused like a missing secret.
DEVELOPMENT_SECRET = "development-only-secret-change-me-in-production-0123456789"  # noqa: S105
SECRET_MIN_BYTES = 32
# A secret of 32 random bytes in any text form (hex, base64, urlsafe) has far more distinct
# characters than this; "aaaa..." or "changeme-changeme-..." has fewer.
SECRET_MIN_DISTINCT_CHARACTERS = 12
SECRET_NAMES = ("jwt_secret", "api_key_secret")
# What `make up` writes: the running local platform's settings, read by any command started in
# the project folder that is not told where its database is.
LOCAL_ENV_FILE = Path(".run") / "dev" / "env"


class SettingsError(ValueError):
    """The settings cannot run a process; the message says which variable to set."""


def weak_secret_reason(secret: str) -> str | None:
    """Why `secret` is not fit outside development, or None when it is."""
    if not secret:
        return "is not set"
    if secret == DEVELOPMENT_SECRET:
        return "is the built-in development secret"
    if len(secret.encode("utf-8")) < SECRET_MIN_BYTES:
        return f"is shorter than {SECRET_MIN_BYTES} bytes"
    if len(set(secret)) < SECRET_MIN_DISTINCT_CHARACTERS:
        return "is not random enough"
    return None


class Settings(BaseSettings):
    """Everything a process needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix="RECOMENGINE_",
        case_sensitive=False,
        extra="ignore",
        env_file_encoding="utf-8",
        validate_default=True,
    )

    # Anything but exactly "development" (which `make up` and the tests set) is production-like:
    # real secrets are required and cookies are Secure.
    environment: str = "production"
    database_url: str = "postgresql://recomengine@127.0.0.1:5432/recomengine"
    # The schema owner that runs migrations; the api and workers use `database_url`, a role
    # that may only read and write rows. Empty: migrations use `database_url`.
    migration_database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/1"
    broker_url: str = "redis://127.0.0.1:6379/0"
    jwt_secret: str = Field(default="", repr=False)
    api_key_secret: str = Field(default="", repr=False)
    jwt_audience: str = "recomengine-dashboard"
    jwt_issuer: str = "recomengine"
    access_token_ttl_seconds: int = 3600
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    password_reset_ttl_seconds: int = 3600
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    # None: Secure everywhere but in development.
    cookie_secure: bool | None = None
    smtp_url: str | None = Field(default=None, repr=False)
    mail_from: str = "no-reply@recomengine.local"
    public_url: str = "http://localhost:5008"
    dashboard_url: str = "http://localhost:3112"
    api_host: str = "127.0.0.1"
    api_port: int = 5008
    api_workers: int = 1
    request_max_bytes: int = 1_000_000
    read_limit_per_minute: int = 1000
    write_limit_per_minute: int = 500
    # Writes per minute of all the keys of one tenant together (on top of each key's own
    # limit), per plan (domain.plans); a plan not listed gets the default; 0 is no shared
    # budget. Test keys share a budget of their own on the Sandbox value.
    tenant_write_limit_per_minute: int = Field(default=1000, ge=0)
    # "plan:limit,plan:limit" (a plain string: every process passes settings on as text).
    tenant_write_limits_per_minute: str = Field(
        default="sandbox:1000,starter:5000,growth:20000,scale:60000,enterprise:0",
        pattern=r"^([a-z]+:\d+)?(,[a-z]+:\d+)*$",
    )
    # How long a finished recommendations answer may be served again (0: never cached); any
    # change it depends on invalidates it sooner (store.answers.ANSWER_LOOKUP).
    answer_cache_seconds: int = Field(default=300, ge=0)
    auth_limit_per_minute: int = 20
    # Failed sign-ins of one account from one address before each further try waits (1 s,
    # doubling up to login_max_delay_seconds); other addresses are not held up.
    login_free_failures: int = Field(default=5, ge=1)
    login_max_delay_seconds: int = Field(default=900, ge=1)
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Redis connections per process; a call waits for a free one rather than failing.
    redis_pool_max: int = Field(default=256, ge=1)
    # Off behind PgBouncer in transaction mode, which cannot keep prepared statements.
    db_statement_cache: bool = True
    # GET /metrics answers loopback callers, or others that send `Authorization: Bearer <token>`.
    metrics_token: str | None = Field(default=None, repr=False)
    log_level: str = "INFO"
    # The claim watchdog (workers.watchdog): how long past its time limit a message may stay
    # with a consumer that makes no progress, and how often one worker process looks.
    # Where a worker pool's parent serves the metrics of its processes (the next free port for
    # further pools on the machine); loopback unless an operator opens it on purpose.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9191, ge=1, le=65535)
    watchdog_margin_seconds: float = Field(default=30, gt=0)
    watchdog_interval_seconds: float = Field(default=5, gt=0)

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies get the Secure attribute (everywhere but development by default)."""
        return bool(self.cookie_secure)

    def tenant_write_limit(self, plan: str) -> int:
        """Writes per minute all the keys of a tenant on `plan` share (0: no shared budget)."""
        for pair in filter(None, self.tenant_write_limits_per_minute.split(",")):
            name, _, limit = pair.partition(":")
            if name == plan:
                return int(limit)
        return self.tenant_write_limit_per_minute

    @property
    def is_development(self) -> bool:
        """True only in the explicit development mode."""
        return self.environment == DEVELOPMENT

    @model_validator(mode="before")
    @classmethod
    def _normalise_environment(cls, values: Any) -> Any:
        if isinstance(values, dict) and isinstance(values.get("environment"), str):
            values["environment"] = values["environment"].strip().lower()
        return values

    @model_validator(mode="after")
    def _fail_closed(self) -> Settings:
        if self.is_development:
            for name in SECRET_NAMES:
                if not getattr(self, name):
                    setattr(self, name, DEVELOPMENT_SECRET)
            if self.cookie_secure is None:
                self.cookie_secure = False
            return self
        problems = []
        for name in SECRET_NAMES:
            reason = weak_secret_reason(getattr(self, name))
            if reason is not None:
                problems.append(f"RECOMENGINE_{name.upper()} {reason}")
        if problems:
            raise SettingsError(
                f"RECOMENGINE_ENVIRONMENT is {self.environment!r}, not 'development': "
                + "; ".join(problems)
                + f". Set each to at least {SECRET_MIN_BYTES} random bytes, e.g. "
                '`python -c "import secrets; print(secrets.token_urlsafe(32))"`.'
            )
        if self.cookie_secure is None:
            self.cookie_secure = True
        return self

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Settings from `environ` (over this process's environment), `.env`, and the local
        platform's env file when no database is named."""
        environ = dict(os.environ if environ is None else environ)
        files: list[Path] = [Path(".env")]
        if "RECOMENGINE_DATABASE_URL" not in {key.upper() for key in environ}:
            files.insert(0, LOCAL_ENV_FILE)
        values = {
            key[len("RECOMENGINE_") :].lower(): value
            for key, value in environ.items()
            if key.upper().startswith("RECOMENGINE_")
        }
        arguments: dict[str, Any] = {
            name: value for name, value in values.items() if name in cls.model_fields
        }
        # Explicit values win over the files.
        arguments["_env_file"] = [f for f in files if f.is_file()] or None
        return cls(**arguments)

    def environment_variables(self) -> dict[str, str]:
        """These settings as RECOMENGINE_* variables (for a child process or an env file)."""
        return {
            f"RECOMENGINE_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once)."""
    return Settings.from_env()
