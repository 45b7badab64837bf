"""The files a platform reads: the locks (exact, hashed, within pyproject's bounds), app.json and
the Procfile."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bridge.settings import _ENVIRONMENT
from tests.e2e.processes import procfile

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^ ;\\]+)")


def pins(lock: str) -> dict[str, str]:
    """Name -> version of every requirement in a lock, each of which must carry its hashes."""
    found: dict[str, str] = {}
    text = (ROOT / lock).read_text()
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = entry.strip().splitlines()[0] if entry.strip() else ""
        if not first or first.startswith("#"):
            continue
        match = _PIN.match(first)
        assert match, f"{lock}: not an exact pin: {first!r}"
        assert "--hash=sha256:" in entry, f"{lock}: {first!r} has no hash"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements.txt", PYPROJECT["project"]["dependencies"]),
        (
            "requirements-dev.txt",
            PYPROJECT["project"]["dependencies"]
            + PYPROJECT["project"]["optional-dependencies"]["dev"],
        ),
    ],
)
def test_each_lock_pins_every_dependency_within_its_bounds(
    lock: str, requirements: list[str]
) -> None:
    pinned = pins(lock)
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in {lock}: run make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement.specifier}: run make lock"
        )


def test_the_dev_lock_has_the_services_versions() -> None:
    service, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert {name: dev.get(name) for name in service} == service


def test_app_json_has_no_placeholder_repository_and_no_postdeploy_repeating_release() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert "example" not in app.get("repository", "")
    assert procfile()["release"] not in app.get("scripts", {}).values()
    assert set(app["env"]) <= set(_ENVIRONMENT), "app.json sets a variable the bridge never reads"


def test_app_json_gives_production_what_it_requires() -> None:
    env = json.loads((ROOT / "app.json").read_text())["env"]
    assert env["BRIDGE_ENV"]["value"] == "production"
    for secret in ["SECRET_KEY", "PHONE_HASH_KEY", "METRICS_TOKEN"]:
        assert env[secret].get("generator") == "secret", secret
    for asked in ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"]:
        assert env[asked].get("required") is True, asked


def test_the_procfile_web_line_binds_all_interfaces_unless_told_otherwise() -> None:
    web = procfile()["web"]
    assert "--bind ${BIND_HOST:-0.0.0.0}:${PORT:-5000}" in web
