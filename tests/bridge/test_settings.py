"""Settings: built from an environment mapping by `load_settings`, never at import time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from bridge.errors import ConfigurationError
from bridge.settings import (
    DEVELOPMENT_PHONE_HASH_KEY,
    DEVELOPMENT_SECRET_KEY,
    SettingsRefused,
    is_loopback_url,
    load_settings,
    normalize_database_url,
    require_web_settings,
)

REPO = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "BRIDGE_ENV": "production",
    "DATABASE_URL": "postgres://u:p@db.example.com:5432/bridge",
    "PHONE_HASH_KEY": "a-real-secret-of-enough-length-0123456789",
    "SECRET_KEY": "another-real-secret-of-enough-length-01234",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "TWILIO_AUTH_TOKEN": "t" * 32,
    "PUBLIC_BASE_URL": "https://sms.example.com",
    "METRICS_TOKEN": "m" * 32,
}


def test_defaults_without_any_environment(tmp_path: Path) -> None:
    settings = load_settings({"BRIDGE_INSTANCE_DIR": str(tmp_path)})
    assert settings.env == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'bridge.sqlite3'}"
    assert settings.outbox_path == str(tmp_path / "outbox.log")
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.public_base_url == "http://localhost:5000"
    assert settings.default_region == "US"
    assert (settings.send_rate_per_sender, settings.send_max_attempts) == (1.0, 6)
    assert (settings.send_retry_base, settings.send_stale_after, settings.send_validity) == (
        2.0,
        300.0,
        14400,
    )
    assert (settings.sweep_interval, settings.port, settings.web_concurrency) == (10.0, 5000, 2)
    assert settings.quiet_window == (time(21, 0), time(8, 0))
    assert not settings.twilio_configured and not settings.is_production


def test_values_are_read_and_typed() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://u:p@localhost/bridge",
            "REDIS_URL": "redis://cache:6380/2",
            "PORT": "8080",
            "SEND_RATE_PER_SENDER": "2.5",
            "SEND_MAX_ATTEMPTS": "3",
            "SEND_VALIDITY": "600",
            "SWEEP_INTERVAL": "1.5",
            "QUIET_HOURS": " 22:30-07:15 ",
            "DEFAULT_REGION": "GB",
            "TWILIO_ACCOUNT_SID": "AC123",
            "TWILIO_AUTH_TOKEN": "secret",
            "PUBLIC_BASE_URL": "https://bridge.example.com/",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u:p@localhost/bridge"
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.port == 8080 and isinstance(settings.port, int)
    assert settings.send_rate_per_sender == 2.5 and settings.send_max_attempts == 3
    assert settings.send_validity == 600 and settings.sweep_interval == 1.5
    assert settings.quiet_window == (time(22, 30), time(7, 15))
    assert settings.default_region == "GB"
    assert settings.twilio_configured
    assert settings.public_base_url == "https://bridge.example.com"


def test_public_base_url_follows_the_port() -> None:
    assert load_settings({"PORT": "8123"}).public_base_url == "http://localhost:8123"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@host:5432/db", "postgresql+psycopg://u:p@host:5432/db"),
        ("postgresql://u@host/db", "postgresql+psycopg://u@host/db"),
        ("postgresql+psycopg://u@host/db", "postgresql+psycopg://u@host/db"),
        ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
    ],
)
def test_heroku_database_urls_are_accepted(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert load_settings({"DATABASE_URL": given}).database_url == expected


def test_empty_quiet_hours_turn_them_off_and_unset_keeps_the_default() -> None:
    assert load_settings({"QUIET_HOURS": ""}).quiet_window is None
    assert load_settings({"QUIET_HOURS": "   "}).quiet_window is None
    assert load_settings({}).quiet_window == (time(21, 0), time(8, 0))
    # Other empty variables mean "unset", not an empty value.
    assert load_settings({"REDIS_URL": "", "PORT": ""}).port == 5000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("SEND_MAX_ATTEMPTS", "2.5"),
        ("SEND_MAX_ATTEMPTS", "0"),
        ("SEND_RATE_PER_SENDER", "0"),
        ("SEND_RATE_PER_SENDER", "-1"),
        ("SEND_RETRY_BASE", "-2"),
        ("SEND_STALE_AFTER", "-1"),
        ("SEND_VALIDITY", "0"),
        ("SWEEP_INTERVAL", "never"),
        ("WEB_CONCURRENCY", "0"),
        ("TWILIO_TIMEOUT", "0"),
        ("QUIET_HOURS", "21:00"),
        ("QUIET_HOURS", "25:00-08:00"),
        ("QUIET_HOURS", "9pm-8am"),
        ("QUIET_HOURS", "08:00-08:00"),
        ("DEFAULT_REGION", "XX"),
        ("DEFAULT_REGION", "usa"),
        ("DATABASE_URL", "mysql://u@h/db"),
    ],
)
def test_bad_values_are_a_configuration_error(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({name: value})
    assert name.lower() in str(info.value).lower()


def test_region_is_read_in_any_case() -> None:
    assert load_settings({"DEFAULT_REGION": "gb"}).default_region == "GB"


def test_production_with_real_secrets_starts() -> None:
    settings = load_settings(PRODUCTION)
    assert settings.is_production
    assert load_settings(PRODUCTION | {"BRIDGE_ENV": " Production "}).is_production


# Each change to a good production environment, and the one line it is refused with.
PRODUCTION_REFUSALS = [
    ({"PHONE_HASH_KEY": ""}, "PHONE_HASH_KEY: must be set to a secret of its own"),
    ({"PHONE_HASH_KEY": DEVELOPMENT_PHONE_HASH_KEY}, "PHONE_HASH_KEY: must be set to a secret"),
    ({"PHONE_HASH_KEY": "short"}, "PHONE_HASH_KEY: must be at least 32 characters"),
    ({"PHONE_HASH_KEY": "p" * 31}, "PHONE_HASH_KEY: must be at least 32 characters"),
    ({"SECRET_KEY": ""}, "SECRET_KEY: must be set to a secret of its own"),
    ({"SECRET_KEY": DEVELOPMENT_SECRET_KEY}, "SECRET_KEY: must be set to a secret of its own"),
    ({"SECRET_KEY": "s" * 31}, "SECRET_KEY: must be at least 32 characters"),
    ({"BRIDGE_ENV": "PRODUCTION", "SECRET_KEY": ""}, "SECRET_KEY: must be set"),
    ({"TWILIO_ACCOUNT_SID": ""}, "TWILIO_ACCOUNT_SID: must be set"),
    ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN: must be set"),
    ({"METRICS_TOKEN": ""}, "METRICS_TOKEN: must be set"),
    ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL: must be an https URL"),
    ({"PUBLIC_BASE_URL": "http://sms.example.com"}, "PUBLIC_BASE_URL: must be an https URL"),
    (
        {"TWILIO_API_BASE_URL": "http://api.twilio.com"},
        "TWILIO_API_BASE_URL: must be an https URL",
    ),
    ({"DATABASE_URL": ""}, "DATABASE_URL: must point at PostgreSQL"),
    ({"DATABASE_URL": "sqlite:////tmp/x.sqlite3"}, "DATABASE_URL: must point at PostgreSQL"),
]


@pytest.mark.parametrize(("change", "complaint"), PRODUCTION_REFUSALS)
def test_production_refuses_to_start_without_real_settings(
    change: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SettingsRefused) as info:
        load_settings(PRODUCTION | change)
    [problem] = info.value.problems
    assert problem.startswith(complaint)
    assert str(info.value).splitlines() == [
        "BRIDGE_ENV=production refuses to start:",
        "  " + problem,
    ]


def test_production_names_every_missing_setting_one_line_each() -> None:
    with pytest.raises(SettingsRefused) as info:
        load_settings({"BRIDGE_ENV": "production"})
    named = [line.split(":")[0] for line in info.value.problems]
    assert named == [
        "SECRET_KEY",
        "PHONE_HASH_KEY",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "METRICS_TOKEN",
        "PUBLIC_BASE_URL",
        "DATABASE_URL",
    ]
    assert len(str(info.value).splitlines()) == 1 + len(named)


@pytest.mark.parametrize("env", ["prod", "staging", "dev", "production!", "tests"])
def test_an_unknown_bridge_env_refuses_to_start(env: str) -> None:
    with pytest.raises(SettingsRefused) as info:
        load_settings({"BRIDGE_ENV": env})
    [problem] = info.value.problems
    assert problem.startswith("BRIDGE_ENV: must be one of development, test, production")
    assert repr(env) in problem


@pytest.mark.parametrize("env", ["development", "test", " Test ", "DEVELOPMENT"])
def test_the_known_environments_start(env: str) -> None:
    assert load_settings({"BRIDGE_ENV": env}).env == env.strip().lower()


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://localhost:5000", True),
        ("http://LOCALHOST", True),
        ("http://127.0.0.1:8000", True),
        ("http://127.1.2.3", True),
        ("http://[::1]:5000", True),
        ("http://127.evil.example", False),
        ("http://127.0.0.1.evil.example", False),
        ("http://localhost.evil.example", False),
        ("http://evil.example/localhost", False),
        ("http://user@127.0.0.1@evil.example", False),
        ("https://bridge.example.com", False),
        ("http://10.0.0.5:5000", False),
        ("http://0.0.0.0:5000", False),
        ("http://[::ffff:203.0.113.7]", False),
    ],
)
def test_loopback_is_read_from_the_parsed_host(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


@pytest.mark.parametrize(
    ("environ", "refused"),
    [
        ({}, False),  # http://localhost:5000
        ({"PUBLIC_BASE_URL": "http://127.0.0.1:5000"}, False),
        ({"PUBLIC_BASE_URL": "https://sms.example.com"}, True),
        ({"PUBLIC_BASE_URL": "http://127.evil.example:5000"}, True),
        ({"PUBLIC_BASE_URL": "https://sms.example.com", "SECRET_KEY": "x" * 40}, True),
        ({"PUBLIC_BASE_URL": "https://sms.example.com", "TWILIO_AUTH_TOKEN": "t" * 32}, False),
    ],
)
def test_the_web_process_needs_twilio_auth_token_off_loopback(
    environ: dict[str, str], refused: bool
) -> None:
    settings = load_settings(environ)  # every process may load these; only the web one refuses
    if not refused:
        require_web_settings(settings)
        return
    with pytest.raises(SettingsRefused) as info:
        require_web_settings(settings)
    [problem] = info.value.problems
    assert problem.startswith("TWILIO_AUTH_TOKEN: must be set while PUBLIC_BASE_URL")


@pytest.mark.parametrize(
    ("name", "value"),
    [("PUBLIC_BASE_URL", "localhost:5000"), ("TWILIO_API_BASE_URL", "ftp://api.twilio.com")],
)
def test_base_urls_must_be_http_urls(name: str, value: str) -> None:
    with pytest.raises(SettingsRefused) as info:
        load_settings({name: value})
    assert info.value.problems[0].startswith(f"{name}: must be an http(s) URL")


def test_a_bad_value_is_one_line_naming_the_variable_and_never_shows_a_secret() -> None:
    with pytest.raises(SettingsRefused) as info:
        load_settings({"PORT": "eighty", "DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert str(info.value).splitlines()[0] == "refusing to start:"
    lines = info.value.problems
    assert [line.split(":")[0] for line in lines] == ["DATABASE_URL", "PORT"]
    assert "'eighty'" in lines[1]
    assert "hunter2" not in str(info.value)
    assert "pydantic" not in str(info.value)


def test_keyword_overrides_win_and_are_checked_too() -> None:
    settings = load_settings({"PORT": "8080"}, port=9090, quiet_hours="")
    assert settings.port == 9090 and settings.quiet_window is None
    with pytest.raises(ConfigurationError):
        load_settings({}, quiet_hours="soon")
    with pytest.raises(ConfigurationError):
        load_settings(PRODUCTION, phone_hash_key=DEVELOPMENT_PHONE_HASH_KEY)


def test_settings_are_frozen_and_hide_secrets_in_repr() -> None:
    settings = load_settings(PRODUCTION)
    with pytest.raises(ValueError):
        settings.port = 1
    shown = repr(settings) + str(settings)
    for secret in ["a-real-secret-of-enough-length", "another-real-secret", "t" * 32, "u:p@"]:
        assert secret not in shown


def test_load_settings_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "7777")
    monkeypatch.setenv("BRIDGE_ENV", "production")
    assert load_settings({}).port == 5000  # neither PORT nor BRIDGE_ENV of the process
    monkeypatch.setenv("BRIDGE_ENV", "development")
    assert load_settings().port == 7777  # without a mapping, the process environment


def test_nothing_is_read_at_import_time() -> None:
    """Importing every bridge module with a broken environment neither fails nor reads it."""
    broken = os.environ | {
        "BRIDGE_ENV": "production",
        "PORT": "not-a-port",
        "QUIET_HOURS": "whenever",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    modules = sorted(p.stem for p in (REPO / "bridge").glob("*.py") if p.stem != "__init__")
    code = "import importlib\n" + "".join(
        f"importlib.import_module('bridge.{m}')\n" for m in modules
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=broken,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with pytest.raises(ConfigurationError):
        load_settings(broken)
