"""The bridge's settings: one typed object built from the environment by `load_settings`.

Nothing here runs at import time; the web app, the worker and the CLI each call `load_settings()`
once and hand the result to `bridge.runtime.Runtime`. Settings that cannot run (a bad value, an
unknown BRIDGE_ENV, production without real secrets) raise `SettingsRefused`, one line per
variable; the web process also calls `require_web_settings` (no public webhook secret).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from urllib.parse import urlsplit

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from bridge.errors import ConfigurationError

DEVELOPMENT_PHONE_HASH_KEY = "development-phone-hash-key-not-secret"
DEVELOPMENT_SECRET_KEY = "development-secret-key-not-secret"
ENVIRONMENTS = ("development", "test", "production")
# Production secrets: long enough that guessing is hopeless (`openssl rand -hex 32` gives 64).
MIN_SECRET_LENGTH = 32

# More send threads than this in one process only contend for the GIL: run more worker processes.
MAX_SEND_CONCURRENCY = 512
# Database connections a process needs besides its send threads' (the fan-out loop's claim and
# record, a job's own session, and one for the web app or a status check running alongside).
POOL_SPARE = 4

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
    # Threads per worker process; each may hold a database connection for one short statement.
    send_concurrency: int = Field(32, ge=1, le=MAX_SEND_CONCURRENCY)
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
        # "Production" must not slip past the production checks, nor "prod" run as development.
        env = value.strip().lower()
        if env not in ENVIRONMENTS:
            raise ValueError(f"must be one of {', '.join(ENVIRONMENTS)}, not {value!r}")
        return env

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
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL like https://sms.example.com, not {value!r}")
        return value.strip().rstrip("/")

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

    @property
    def database_pool_size(self) -> int:
        """Connections one process may hold: one per send thread plus `POOL_SPARE`."""
        return self.send_concurrency + POOL_SPARE

    @property
    def public_base_url_is_loopback(self) -> bool:
        return is_loopback_url(self.public_base_url)


def is_loopback_url(url: str) -> bool:
    """Whether `url`'s host is `localhost` or a loopback address (`127.evil.example` is not)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


_VARIABLES = {field: name for name, field in _ENVIRONMENT.items()}
# Values a refusal never repeats: secrets, and URLs that may hold passwords.
_SECRETS = frozenset(
    {
        "database_url",
        "redis_url",
        "twilio_auth_token",
        "phone_hash_key",
        "secret_key",
        "metrics_token",
    }
)


class SettingsRefused(ConfigurationError):
    """Settings the process will not start with: one problem per line, each naming its variable."""

    def __init__(self, problems: list[str], heading: str = "refusing to start:") -> None:
        super().__init__("\n".join([heading, *(f"  {p}" for p in problems)]))
        self.problems = problems


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
    except PydanticValidationError as exc:
        raise SettingsRefused(_describe(exc)) from None
    if settings.is_production:
        problems = production_problems(settings)
        if problems:
            raise SettingsRefused(problems, "BRIDGE_ENV=production refuses to start:")
    return settings


def _describe(exc: PydanticValidationError) -> list[str]:
    # One line per variable, named as the operator set it, without pydantic's links and types.
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        shown = ""
        if isinstance(given, str) and field not in _SECRETS and repr(given) not in message:
            shown = f" (got {given!r})"
        lines.append(f"{_VARIABLES.get(field, field.upper())}: {message}{shown}")
    return lines


def production_problems(settings: Settings) -> list[str]:
    """What BRIDGE_ENV=production refuses (DESIGN section 8), one line per variable."""
    problems = []
    for name, value, development in [
        ("SECRET_KEY", settings.secret_key, DEVELOPMENT_SECRET_KEY),
        ("PHONE_HASH_KEY", settings.phone_hash_key, DEVELOPMENT_PHONE_HASH_KEY),
    ]:
        if value == development:
            problems.append(f"{name}: must be set to a secret of its own, not the development one")
        elif len(value) < MIN_SECRET_LENGTH:
            problems.append(
                f"{name}: must be at least {MIN_SECRET_LENGTH} characters "
                "(openssl rand -hex 32 makes one)"
            )
    for name, present in [
        ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
        ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
        ("METRICS_TOKEN", settings.metrics_token),
    ]:
        if not present:
            problems.append(f"{name}: must be set")
    for name, url in [
        ("PUBLIC_BASE_URL", settings.public_base_url),
        ("TWILIO_API_BASE_URL", settings.twilio_api_base_url),
    ]:
        if urlsplit(url).scheme != "https":
            problems.append(f"{name}: must be an https URL, not {url!r}")
    if not settings.database_url.startswith("postgresql"):
        problems.append("DATABASE_URL: must point at PostgreSQL, not a SQLite file")
    return problems


def web_problems(settings: Settings) -> list[str]:
    """What the web process refuses in any environment: webhooks checked with a public secret.

    Without TWILIO_AUTH_TOKEN, Twilio webhooks are checked with SECRET_KEY, whose development value
    is in the source: fine on this machine (`bridge sms simulate`), a forgery open to anyone at a
    public address.
    """
    if settings.twilio_auth_token or settings.public_base_url_is_loopback:
        return []
    return [
        f"TWILIO_AUTH_TOKEN: must be set while PUBLIC_BASE_URL ({settings.public_base_url}) is "
        "not a loopback address: Twilio's webhooks are checked with it"
    ]


def require_web_settings(settings: Settings) -> None:
    """Raise `SettingsRefused` when the web process must not start with `settings`."""
    problems = web_problems(settings)
    if problems:
        raise SettingsRefused(problems)
