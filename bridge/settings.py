"""The bridge's settings: one typed object built from the environment by `load_settings`.

Nothing here runs at import time; the web app, the worker and the CLI each call `load_settings()`
once and hand the result to `bridge.runtime.Runtime`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import time
from pathlib import Path

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.errors import ConfigurationError

DEVELOPMENT_PHONE_HASH_KEY = "development-phone-hash-key-not-secret"
DEVELOPMENT_SECRET_KEY = "development-secret-key-not-secret"

_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def instance_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder for local state (SQLite file, outbox, bundled Redis): `BRIDGE_INSTANCE_DIR`."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("BRIDGE_INSTANCE_DIR") or "instance").absolute()


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    """The SQLite file under `instance/` used when DATABASE_URL is unset."""
    return f"sqlite:///{instance_dir(environ) / 'bridge.sqlite3'}"


def default_outbox_path(environ: Mapping[str, str] | None = None) -> str:
    """The outbox log under `instance/`, where SMS go when Twilio is not configured."""
    return str(instance_dir(environ) / "outbox.log")


def normalize_database_url(url: str) -> str:
    """Accept Heroku's `postgres://` and plain `postgresql://` and route both through psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def parse_quiet_hours(value: str) -> tuple[time, time] | None:
    """Read `HH:MM-HH:MM` (may cross midnight); empty turns quiet hours off."""
    value = value.strip()
    if not value:
        return None
    match = _QUIET_HOURS.match(value)
    if not match:
        raise ValueError(f"QUIET_HOURS must look like 21:00-08:00, not {value!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if (h1, m1) == (h2, m2):
        # Neither "never" nor "always" is clear from it; empty is how to turn quiet hours off.
        raise ValueError("QUIET_HOURS must start and end at different times (empty turns it off)")
    return time(h1, m1), time(h2, m2)


class Settings(BaseModel):
    """Every setting of DESIGN section 8, typed."""

    model_config = ConfigDict(frozen=True)

    # Secrets (and URLs that may hold passwords) are left out of repr(), which ends up in logs.
    env: str = "development"
    database_url: str = Field(default_factory=default_database_url, repr=False)
    redis_url: str = Field("redis://localhost:6379/0", repr=False)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = Field(None, repr=False)
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_timeout: float = Field(10.0, gt=0)
    public_base_url: str = "http://localhost:5000"
    phone_hash_key: str = Field(DEVELOPMENT_PHONE_HASH_KEY, repr=False)
    secret_key: str = Field(DEVELOPMENT_SECRET_KEY, repr=False)
    default_region: str = "US"
    send_rate_per_sender: float = Field(1.0, gt=0)
    send_max_attempts: int = Field(6, ge=1)
    send_retry_base: float = Field(2.0, ge=0)
    send_stale_after: float = Field(300.0, ge=0)
    # Twilio accepts a ValidityPeriod of 1 to 36,000 seconds.
    send_validity: int = Field(14400, ge=1, le=36000)
    send_concurrency: int = Field(16, ge=1)
    sweep_interval: float = Field(10.0, gt=0)
    quiet_hours: str = "21:00-08:00"
    port: int = Field(5000, ge=1, le=65535)
    web_concurrency: int = Field(2, ge=1)
    metrics_token: str | None = Field(None, repr=False)
    api_rate_limit: int = 600  # REST API requests per API key per minute
    outbox_path: str = Field(default_factory=default_outbox_path)
    # Events out (DESIGN 5.8, 5.9): how long a receiver has to answer, how long events are kept.
    webhook_timeout: float = Field(5.0, gt=0)
    retention_days: int = Field(180, ge=0)  # 0 keeps everything

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        # "Production" must not slip past the production checks.
        return value.strip().lower()

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        url = normalize_database_url(value.strip())
        if not url.startswith(("sqlite:", "postgresql+")):
            raise ValueError("DATABASE_URL must be a sqlite:// or postgres(ql):// URL")
        return url

    @field_validator("default_region")
    @classmethod
    def _default_region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"DEFAULT_REGION must be a region code like US or GB, not {value!r}")
        return region

    @field_validator("public_base_url", "twilio_api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        parse_quiet_hours(value)
        return value.strip()

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def quiet_window(self) -> tuple[time, time] | None:
        return parse_quiet_hours(self.quiet_hours)


# Environment variable -> Settings field. Only these are read.
_ENVIRONMENT = {
    "BRIDGE_ENV": "env",
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "TWILIO_ACCOUNT_SID": "twilio_account_sid",
    "TWILIO_AUTH_TOKEN": "twilio_auth_token",
    "TWILIO_API_BASE_URL": "twilio_api_base_url",
    "TWILIO_TIMEOUT": "twilio_timeout",
    "PUBLIC_BASE_URL": "public_base_url",
    "PHONE_HASH_KEY": "phone_hash_key",
    "SECRET_KEY": "secret_key",
    "DEFAULT_REGION": "default_region",
    "SEND_RATE_PER_SENDER": "send_rate_per_sender",
    "SEND_MAX_ATTEMPTS": "send_max_attempts",
    "SEND_RETRY_BASE": "send_retry_base",
    "SEND_STALE_AFTER": "send_stale_after",
    "SEND_VALIDITY": "send_validity",
    "SEND_CONCURRENCY": "send_concurrency",
    "SWEEP_INTERVAL": "sweep_interval",
    "QUIET_HOURS": "quiet_hours",
    "PORT": "port",
    "WEB_CONCURRENCY": "web_concurrency",
    "METRICS_TOKEN": "metrics_token",
    "API_RATE_LIMIT": "api_rate_limit",
    "OUTBOX_PATH": "outbox_path",
    # Events out.
    "WEBHOOK_TIMEOUT": "webhook_timeout",
    "RETENTION_DAYS": "retention_days",
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build the settings from the environment (or `environ`), then apply keyword overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {
        field: environ[name] for name, field in _ENVIRONMENT.items() if environ.get(name, "") != ""
    }
    if "QUIET_HOURS" in environ:  # an empty QUIET_HOURS is meaningful: it turns them off
        values["quiet_hours"] = environ["QUIET_HOURS"]
    if "public_base_url" not in values:
        values["public_base_url"] = f"http://localhost:{values.get('port', 5000)}"
    # The defaults under instance/ follow the mapping given, not the process environment.
    values.setdefault("database_url", default_database_url(environ))
    values.setdefault("outbox_path", default_outbox_path(environ))
    values.update(overrides)
    try:
        settings = Settings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    if settings.is_production:
        _refuse_development_secrets(settings)
    return settings


def _refuse_development_secrets(settings: Settings) -> None:
    problems = []
    if settings.phone_hash_key == DEVELOPMENT_PHONE_HASH_KEY or len(settings.phone_hash_key) < 16:
        problems.append("PHONE_HASH_KEY must be set to a secret of at least 16 characters")
    if settings.secret_key == DEVELOPMENT_SECRET_KEY:
        problems.append("SECRET_KEY must be set")
    if not settings.twilio_configured:
        problems.append("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set")
    if settings.database_url.startswith("sqlite"):
        problems.append("DATABASE_URL must point at PostgreSQL")
    if problems:
        raise ConfigurationError("BRIDGE_ENV=production refuses to start: " + "; ".join(problems))
