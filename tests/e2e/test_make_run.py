"""`make run` from a clean clone: it starts Redis when none answers, migrates, serves on 127.0.0.1
only, takes an inbound SMS from `bridge sms simulate`, sends with the web's address in every
StatusCallback, refuses a second `make run` without changing anything, and Ctrl-C stops everything
it started.

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
from collections.abc import Callable
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


def _make_run(clone: Path, tmp_path: Path) -> list[str]:
    stamp = tmp_path / "installed"
    stamp.touch()
    for lock in ["pyproject.toml", "requirements.txt", "requirements-dev.txt"]:
        if (clone / lock).exists():  # older than the stamp: nothing to install
            os.utime(clone / lock, (0, 0))
    return ["make", "run", f"VENV={VENV}", f"STAMP={stamp}"]


Check = Callable[[Path, dict[str, str], Callable[..., "subprocess.CompletedProcess[str]"]], None]


def _run_make(
    clone: Path, env: dict[str, str], tmp_path: Path, while_running: Check | None = None
) -> None:
    make = subprocess.Popen(
        _make_run(clone, tmp_path),
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
        if while_running is not None:
            while_running(clone, env, cli)
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
    assert f":{env['PORT']}/console" in text, "make run does not print the console's address"
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _runs_in(pid, clone)]
    assert leftovers == [], "processes started in the clone are still running"


def _runs_in(pid: str, folder: Path) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cwd.startswith(str(folder)) or str(folder).encode() in cmdline


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp*) of the sockets listening on `port`."""
    found = set()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"]:
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def _serves_locally_and_sends_with_the_webs_address(
    clone: Path, env: dict[str, str], cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    port = int(env["PORT"])
    # 127.0.0.1 only: not 0.0.0.0, nor [::].
    assert _listening_addresses(port) == {"0100007F"}

    key = json.loads(cli("org", "create", "Second Shop", "--sender", "+16285550173").stdout)[
        "api_key"
    ]
    base = f"http://127.0.0.1:{port}"
    status, thread = http(
        "POST",
        base + "/v1/threads",
        {"resource_id": "order-7", "subscribers": [{"type": "contact", "phone": "+14155550174"}]},
        {"Authorization": f"Bearer {key}"},
    )
    assert status == 201, thread
    status, posted = http(
        "POST",
        base + "/v1/threads/thrd_order-7/messages",
        {"text": "Your order leaves at noon."},
        {"Authorization": f"Bearer {key}"},
    )
    assert status == 201, posted
    outbox = clone / "instance" / "outbox.log"

    def sent() -> list[dict[str, str]]:
        text = outbox.read_text() if outbox.exists() else ""
        return [json.loads(line) for line in text.splitlines() if "+14155550174" in line]

    wait_for("the worker to write the SMS to the outbox", lambda: sent() != [], timeout=30)
    # The worker runs with honcho's PORT (the web's + 100): its callbacks still go to the web.
    [sms] = sent()
    assert sms["status_callback"].startswith(f"http://localhost:{port}/twilio/status?d=dlv_")


def _a_second_make_run_changes_nothing(
    clone: Path, env: dict[str, str], cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    metrics = clone / "instance" / "metrics"
    before = sorted(p.name for p in metrics.iterdir())
    assert before, "the first make run's counters are missing"
    base = f"http://127.0.0.1:{env['PORT']}"

    def second(**changes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _make_run(clone, clone.parent / "second"),
            cwd=clone,
            env=env | changes,
            capture_output=True,
            text=True,
            timeout=60,
        )

    (clone.parent / "second").mkdir()
    same_port = second()
    output = same_port.stdout + same_port.stderr
    assert same_port.returncode != 0, output
    assert f"make run: port {env['PORT']} is taken" in output
    assert "is running" not in output and "Traceback" not in output
    # Same instance/, another port: the first one's database and counters are still its own.
    other_port = second(PORT=str(free_port()))
    output = other_port.stdout + other_port.stderr
    assert other_port.returncode != 0, output
    assert "another make run (pid " in output and "Nothing was started or changed" in output
    assert "is running" not in output and "Traceback" not in output

    assert sorted(p.name for p in metrics.iterdir()) == before
    assert answers(base + "/readyz") == 200


def test_make_run_starts_the_bundled_redis_where_redis_url_points_at_nothing(
    tmp_path: Path,
) -> None:
    clone = _clone(tmp_path)
    env = environment(PORT=str(free_port()), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    def checks(
        clone: Path, env: dict[str, str], cli: Callable[..., subprocess.CompletedProcess[str]]
    ) -> None:
        _serves_locally_and_sends_with_the_webs_address(clone, env, cli)
        _a_second_make_run_changes_nothing(clone, env, cli)

    _run_make(clone, env, tmp_path, checks)
    assert (clone / "instance" / "bridge.sqlite3").exists()
    assert (clone / "instance" / "redis").is_dir()


def test_make_run_without_redis_url_starts_the_bundled_redis_on_6379(tmp_path: Path) -> None:
    if redis_answers("redis://127.0.0.1:6379/0"):
        pytest.skip("a Redis already answers on localhost:6379; make run would use it")
    clone = _clone(tmp_path)
    _run_make(clone, environment(PORT=str(free_port())), tmp_path)
