"""The migration builds exactly the models' schema, with the lookup indexes, on both databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from bridge import models  # noqa: F401  (registers the tables)
from bridge.db import Base, make_engine
from bridge.migrate import alembic_config, upgrade
from tests.services import create_postgres_database, drop_postgres_database, postgres_admin_url


@pytest.fixture(scope="module")
def postgres_scratch_url() -> Iterator[str]:
    """A PostgreSQL database of this module's own (made once: CREATE DATABASE is slow)."""
    admin = postgres_admin_url()
    if admin is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but PostgreSQL does not answer")
        pytest.skip("PostgreSQL is not reachable")
    name = f"bridge_migrations_{os.getpid()}"
    yield create_postgres_database(admin, name)
    drop_postgres_database(admin, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no tables at all."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_scratch_url"))
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    yield engine
    engine.dispose()


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def _indexed(engine: Engine, table: str) -> list[tuple[str, ...]]:
    """Column tuples of every index and unique constraint on `table` (either one serves lookups)."""
    inspector = inspect(engine)
    found = [tuple(ix["column_names"]) for ix in inspector.get_indexes(table)]
    found += [tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table)]
    primary = inspector.get_pk_constraint(table)["constrained_columns"]
    return [*found, tuple(primary)]  # type: ignore[list-item]


def test_the_revisions_ship_in_one_line() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0002"]
    assert [r.revision for r in script.walk_revisions()] == ["0002", "0001"]


def test_the_migration_creates_exactly_the_models_schema(empty_engine: Engine) -> None:
    assert _differences(empty_engine) != []  # the comparison sees a missing schema
    upgrade(empty_engine)
    assert _differences(empty_engine) == []
    upgrade(empty_engine)  # a second run (a second release) changes nothing
    assert _differences(empty_engine) == []
    with empty_engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0002"


def test_the_lookup_indexes_exist(empty_engine: Engine) -> None:
    upgrade(empty_engine)

    def leads(table: str, *columns: str) -> bool:
        return any(cols[: len(columns)] == columns for cols in _indexed(empty_engine, table))

    # Inbound SMS: phone hash -> channels, within an organization.
    assert leads("channel_phone_hashes", "organization_id", "phone_hash")
    assert leads("contacts", "organization_id", "phone_hash")
    # Resource -> thread.
    assert leads("threads", "resource_id")
    # Cursor pagination: messages by seq within a thread or a channel.
    assert leads("messages", "thread_id", "seq")
    assert leads("messages", "channel_id", "seq")
    assert leads("messages", "id")
    # Status callbacks and the sweeper.
    assert leads("deliveries", "twilio_sid")
    assert leads("deliveries", "status", "updated_at")
    assert leads("deliveries", "message_id")
    assert leads("inbound_sms", "message_sid")
    assert leads("sender_numbers", "phone")
    assert leads("api_keys", "key_hash")
    # Events out: the event log by organization (and type), due deliveries per endpoint, attempts.
    assert leads("events", "organization_id", "type", "seq")
    assert leads("event_deliveries", "endpoint_id", "status", "next_attempt_at")
    assert leads("webhook_attempts", "endpoint_id", "seq")


def test_downgrade_removes_every_table(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    config = alembic_config()
    with empty_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    left = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert left == set()
