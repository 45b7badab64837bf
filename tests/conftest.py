"""Fixtures shared by the whole suite: settings, a migrated database (SQLite, PostgreSQL), Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bridge import inbound, models  # noqa: F401
from bridge.db import Base, make_engine, make_session_factory
from bridge.migrate import upgrade
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from tests.services import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_admin_url,
)
from tests.standin.receiver import Receiver

TEST_HASH_KEY = "test-phone-hash-key-0123456789"
# Off loopback (PUBLIC_BASE_URL below) the web process needs a webhook secret of its own.
TEST_AUTH_TOKEN = "test-twilio-auth-token-0123456789"
BACKENDS = ["sqlite", "postgresql"]
_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url"}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated."""
    admin = postgres_admin_url()
    if admin is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but PostgreSQL does not answer at DATABASE_TEST_URL")
        pytest.skip("PostgreSQL is not reachable (set DATABASE_TEST_URL)")
    name = f"bridge_test_{os.getpid()}"
    url = create_postgres_database(admin, name)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_postgres_database(admin, name)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file for this test run, migrated."""
    path = tmp_path_factory.mktemp("db") / "bridge.sqlite3"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


# Every sequence of the schema back to its start, as TRUNCATE ... RESTART IDENTITY would.
_RESTART_SEQUENCES = """
DO $$
DECLARE s regclass;
BEGIN
    FOR s IN SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'S' AND n.nspname = current_schema() LOOP
        PERFORM setval(s, 1, false);
    END LOOP;
END $$
"""


def _empty(engine: Engine) -> None:
    """Every table emptied, children first, and (PostgreSQL) every sequence restarted.

    DELETE, not TRUNCATE: the tests leave a few rows, which DELETE removes in a few milliseconds,
    while TRUNCATE of the 19 tables (new files for each, flushed at commit) took 0.3 s per test.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            deletes = "; ".join(
                f"DELETE FROM {t.name}" for t in reversed(Base.metadata.sorted_tables)
            )
            conn.exec_driver_sql(f"{deletes}; {_RESTART_SEQUENCES}")
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that uses the database runs on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(_URL_FIXTURES[request.param]))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server of the run's own on a free port; another Redis is never touched."""
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on an empty Redis database, flushed after the test too."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: os.PathLike[str]) -> Settings:
    """Settings for one test: its own database, Redis, outbox and a known phone-hash key."""
    return load_settings(
        {},
        database_url=database_url,
        redis_url=redis_url,
        phone_hash_key=TEST_HASH_KEY,
        public_base_url="https://bridge.example.com",
        twilio_auth_token=TEST_AUTH_TOKEN,
        outbox_path=str(os.path.join(tmp_path, "outbox.log")),
        quiet_hours="",
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime on an emptied database."""
    rt = Runtime(settings)
    _empty(rt.engine)
    yield rt
    rt.close()


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    """A session on an emptied database; the test commits as it likes."""
    with runtime.sessions() as s:
        yield s


@pytest.fixture
def sessions(runtime: Runtime) -> sessionmaker[Session]:
    """The runtime's session factory."""
    return make_session_factory(runtime.engine)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An event receiver of the tests' own, listening on a free port."""
    with Receiver().start() as r:
        yield r


@pytest.fixture
def patient_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SMS stored with `defer=True` waits for the worker's jobs (or the batch under test),
    however slowly the machine stores them: the webhook does not match it itself as it does when
    the workers lag (that is tested in tests/bridge/test_inbound.py)."""
    monkeypatch.setattr(inbound, "INLINE_AFTER", timedelta(hours=1))
