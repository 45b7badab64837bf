"""End-to-end helpers: the Procfile's lines as real processes, and HTTP without a client library."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            lines[name.strip()] = command.strip()
    return lines


def environment(**values: str) -> dict[str, str]:
    """Our environment without any bridge setting, the virtualenv first on PATH, plus `values`."""
    cleared = {
        "DATABASE_URL",
        "REDIS_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_API_BASE_URL",
        "PUBLIC_BASE_URL",
        "PHONE_HASH_KEY",
        "SECRET_KEY",
        "METRICS_TOKEN",
        "PORT",
        "WEB_CONCURRENCY",
        "BRIDGE_ENV",
        "BRIDGE_INSTANCE_DIR",
        "PROMETHEUS_MULTIPROC_DIR",
        "QUIET_HOURS",
        "OUTBOX_PATH",
    }
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def children(pid: int) -> list[int]:
    """The processes `pid` started (a work horse, the sweeper), read from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def kill_tree(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a process and every process below it (RQ's work horse has a group of its own)."""
    for child in children(pid):
        kill_tree(child, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class Process:
    """One Procfile line run the way a platform runs it (`bash -c`), its output kept in a file."""

    def __init__(self, name: str, command: str, env: dict[str, str], logs: Path, cwd: Path = ROOT):
        self.name = name
        self.env = env
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (as a platform does on shutdown) and the exit code."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """Whatever is left of its process group, gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One request; JSON in and out when there is any, else the text."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def answers(url: str) -> int | None:
    """The status `url` answers with, or None when nothing listens."""
    try:
        return http("GET", url, timeout=2)[0]
    except OSError:
        return None


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.1
) -> T:
    """Poll `probe` until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
