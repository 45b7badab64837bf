"""`make run` from a clean clone: it starts Redis when none answers, migrates, serves, takes an
inbound SMS from `bridge sms simulate`, and Ctrl-C stops everything it started.

The clone reuses this virtualenv (`make run VENV=...`, with the install stamp pointed at a fresh
file) instead of installing every dependency again; the code that runs is the clone's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.processes import ROOT, answers, environment, http, wait_for
from tests.services import free_port, redis_answers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VENV = Path(sys.prefix)
SENDER = "+16285550171"
CONTACT = "+14155550172"


def _clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    return clone


def _run_make(clone: Path, env: dict[str, str], tmp_path: Path) -> None:
    stamp = tmp_path / "installed"
    stamp.touch()
    os.utime(clone / "pyproject.toml", (0, 0))  # older than the stamp: nothing to install
    make = subprocess.Popen(
        ["make", "run", f"VENV={VENV}", f"STAMP={stamp}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(make.stdout or []), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{env['PORT']}"
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        wait_for(
            "make run to print how to use it",
            lambda: make.poll() is not None or any("bridge is running" in o for o in output),
            timeout=90,
        )
        assert make.poll() is None, "make run ended early:\n" + "".join(output)[-3000:]
        assert answers(base + "/readyz") == 200

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "webhooks.cli", *args],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        created = cli("org", "create", "Corner Shop", "--sender", SENDER)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["api_key"]
        simulated = cli("sms", "simulate", "--from", CONTACT, "--to", SENDER, "--body", "hello")
        assert simulated.returncode == 0, simulated.stderr
        assert "<Response" in simulated.stdout
        status, inbound = http(
            "GET", base + "/v1/inbound?status=unmatched", headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 200, inbound
        assert [item["from"] for item in inbound["data"]] == [CONTACT]
    finally:
        # Ctrl-C: the terminal signals the whole foreground process group.
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(60)
        finally:
            reader.join(10)
            if make.stdout is not None:
                make.stdout.close()
    text = "".join(output)
    assert answers(base + "/healthz") is None, "web still answers after Ctrl-C"
    assert not redis_answers(redis_url), "the bundled Redis still answers after Ctrl-C"
    assert "worker.1 stopped" in text and "web.1 stopped" in text, text[-3000:]
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _runs_in(pid, clone)]
    assert leftovers == [], "processes started in the clone are still running"


def _runs_in(pid: str, folder: Path) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cwd.startswith(str(folder)) or str(folder).encode() in cmdline


def test_make_run_starts_the_bundled_redis_where_redis_url_points_at_nothing(
    tmp_path: Path,
) -> None:
    clone = _clone(tmp_path)
    env = environment(PORT=str(free_port()), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    _run_make(clone, env, tmp_path)
    assert (clone / "instance" / "bridge.sqlite3").exists()
    assert (clone / "instance" / "redis").is_dir()


def test_make_run_without_redis_url_starts_the_bundled_redis_on_6379(tmp_path: Path) -> None:
    if redis_answers("redis://127.0.0.1:6379/0"):
        pytest.skip("a Redis already answers on localhost:6379; make run would use it")
    clone = _clone(tmp_path)
    _run_make(clone, environment(PORT=str(free_port())), tmp_path)
