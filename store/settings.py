"""Process settings, read once from RECOMENGINE_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, Field

_DEVELOPMENT_SECRET = "development-only-secret-change-me-in-production-0123456789"  # noqa: S105


class Settings(BaseModel):
    """Everything a process needs to know about its environment."""

    environment: str = "development"
    database_url: str = "postgresql://recomengine@127.0.0.1:5432/recomengine"
    redis_url: str = "redis://127.0.0.1:6379/1"
    broker_url: str = "redis://127.0.0.1:6379/0"
    jwt_secret: str = _DEVELOPMENT_SECRET
    api_key_secret: str = _DEVELOPMENT_SECRET
    jwt_audience: str = "recomengine-dashboard"
    jwt_issuer: str = "recomengine"
    access_token_ttl_seconds: int = 3600
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    password_reset_ttl_seconds: int = 3600
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    cookie_secure: bool = False
    smtp_url: str | None = None
    mail_from: str = "no-reply@recomengine.local"
    public_url: str = "http://localhost:5008"
    dashboard_url: str = "http://localhost:3112"
    api_host: str = "127.0.0.1"
    api_port: int = 5008
    api_workers: int = 1
    request_max_bytes: int = 1_000_000
    read_limit_per_minute: int = 1000
    write_limit_per_minute: int = 500
    # How long a finished recommendations answer may be served again (0: never cached); any
    # change it depends on invalidates it sooner (store.models.ANSWER_LOOKUP).
    answer_cache_seconds: int = Field(default=300, ge=0)
    auth_limit_per_minute: int = 20
    login_failures_per_account: int = 10
    db_pool_min: int = 1
    db_pool_max: int = 10
    log_level: str = "INFO"
    # The claim watchdog (workers.watchdog): how long past its time limit a message may stay
    # with a consumer that makes no progress, and how often one worker process looks.
    watchdog_margin_seconds: float = Field(default=30, gt=0)
    watchdog_interval_seconds: float = Field(default=5, gt=0)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from RECOMENGINE_<FIELD> variables, defaults for the rest."""
        environ = dict(os.environ if environ is None else environ)
        values = {}
        for name in cls.model_fields:
            key = f"RECOMENGINE_{name.upper()}"
            if key in environ:
                values[name] = environ[key]
        settings = cls.model_validate(values)
        if settings.environment == "production" and _DEVELOPMENT_SECRET in (
            settings.jwt_secret,
            settings.api_key_secret,
        ):
            raise ValueError(
                "production needs RECOMENGINE_JWT_SECRET and RECOMENGINE_API_KEY_SECRET"
            )
        return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once)."""
    return Settings.from_env()
