"""A refused start, as an operator reads it in a deploy log: the Procfile's lines and the CLI, run
as real processes, print one line per setting at fault and never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import ROOT, environment, procfile
from tests.services import free_port

pytestmark = pytest.mark.e2e

# What BRIDGE_ENV=production with nothing else set is missing, in the order it is reported.
MISSING = [
    "SECRET_KEY",
    "PHONE_HASH_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "METRICS_TOKEN",
    "PUBLIC_BASE_URL",
    "DATABASE_URL",
]


def _run(command: str, tmp_path: Path, **values: str) -> subprocess.CompletedProcess[str]:
    env = environment(
        BRIDGE_INSTANCE_DIR=str(tmp_path), PORT=str(free_port()), WEB_CONCURRENCY="1", **values
    )
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _bridge(*args: str) -> str:
    return " ".join([str(Path(sys.executable).parent / "bridge"), *args])


COMMANDS = {
    "web": procfile()["web"],
    "web without our gunicorn config": "gunicorn webhooks.wsgi:app --bind 127.0.0.1:${PORT}",
    "worker": procfile()["worker"],
    "release": procfile()["release"],
    "cli": _bridge("org", "create", "Acme", "--sender", "+16285550100"),
}


@pytest.mark.parametrize("process", list(COMMANDS))
def test_a_refused_production_start_names_each_setting_on_a_line_of_its_own(
    process: str, tmp_path: Path
) -> None:
    done = _run(COMMANDS[process], tmp_path, BRIDGE_ENV="production")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    refusal = [line.strip() for line in output.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in refusal] == MISSING, output
    assert "BRIDGE_ENV=production refuses to start:" in output


@pytest.mark.parametrize("process", ["web", "worker", "cli"])
def test_an_unknown_bridge_env_is_refused_everywhere(process: str, tmp_path: Path) -> None:
    done = _run(COMMANDS[process], tmp_path, BRIDGE_ENV="prod")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert "BRIDGE_ENV: must be one of development, test, production, not 'prod'" in output


def test_the_web_process_refuses_a_public_address_without_twilio_auth_token(
    tmp_path: Path,
) -> None:
    done = _run(COMMANDS["web"], tmp_path, PUBLIC_BASE_URL="https://sms.example.com")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert "TWILIO_AUTH_TOKEN: must be set while PUBLIC_BASE_URL (https://sms.example.com)" in (
        output
    )
