"""What a benchmark runs against: a scratch database, the Twilio stand-in, workers, gunicorn.

Each part runs as the Procfile runs it (`python -m workers`, gunicorn with the web config), and the
stand-in in a process of its own, so that the process being measured shares its GIL with nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from rq import Worker

from tests.services import create_postgres_database, drop_postgres_database, postgres_admin_url

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_SID = "AC" + "ab" * 16
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
HASH_KEY = "bench-phone-hash-key-0123456789"


@contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """A fresh PostgreSQL database (dropped after), else a SQLite file."""
    admin = postgres_admin_url()
    if admin is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.sqlite3"
        return
    name = f"bridge_bench_{label}_{os.getpid()}"
    url = create_postgres_database(admin, name)
    try:
        yield url
    finally:
        drop_postgres_database(admin, name)


class StandIn:
    """The Twilio stand-in in a process of its own, driven over its control endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _call(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"{self.base_url}/_standin/{action}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)

    def latency(self, seconds: float) -> None:
        self._call("POST", "latency", {"seconds": seconds})

    def clear(self) -> None:
        self._call("POST", "clear")

    def requests(self) -> list[dict[str, Any]]:
        """Every create request received (with `received_at`, the machine's monotonic clock)."""
        return list(self._call("GET", "requests")["requests"])


@contextmanager
def standin(latency: float = 0.0) -> Iterator[StandIn]:
    """Start the stand-in process; it answers every create after `latency` seconds."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin.twilio",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
            "--latency",
            str(latency),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield StandIn(process.stdout.readline().strip())
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def environment(database_url: str, redis_url: str, **values: object) -> dict[str, str]:
    """The environment of a bridge process for the benchmarks."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PHONE_HASH_KEY=HASH_KEY,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        QUIET_HOURS="",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in values.items()})
    return env


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.01
) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def idle(connection: redis.Redis) -> bool:
    """No job waits in a queue or runs: cheap to ask every few milliseconds, unlike the database."""
    from workers import queues

    if any(connection.llen(f"rq:queue:{name}") for name in queues.ALL):
        return False
    return all(worker.get_state() == "idle" for worker in Worker.all(connection=connection))


@contextmanager
def workers(
    env: dict[str, str], count: int = 1, *args: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` worker processes (`python -m workers`, as in the Procfile), registered and idle."""
    logs = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    connection = redis.Redis.from_url(env["REDIS_URL"])
    before = len(Worker.all(connection=connection))
    started = []
    try:
        for i in range(count):
            with (logs / f"worker-{i}.log").open("wb") as log:
                started.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "workers", *args],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

        def registered() -> bool:
            for process in started:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited with {process.returncode}; see {logs}")
            # Each process registers two RQ workers: its main one and its events one.
            return len(Worker.all(connection=connection)) >= before + 2 * count

        wait_until(registered, 60, "the workers")
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(10)
        connection.close()


@contextmanager
def gunicorn(
    target: str, port: int, env: dict[str, str], web_concurrency: str = "2"
) -> Iterator[None]:
    """Gunicorn serving `target` with the Procfile's config on a loopback port."""
    command = [
        sys.executable, "-m", "gunicorn", target,
        "--config", str(ROOT / "webhooks" / "gunicorn_conf.py"),
        "--bind", f"127.0.0.1:{port}", "--workers", web_concurrency,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError as exc:
                if getattr(exc, "code", None):  # an HTTP error: it answers
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"gunicorn {target} did not start") from None
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(15)
