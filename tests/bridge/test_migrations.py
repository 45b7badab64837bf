"""The migration builds exactly the models' schema, with the lookup indexes, on both databases."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Connection, Engine, column, insert, inspect, table, text

from bridge import models  # noqa: F401  (registers the tables)
from bridge.db import Base, make_engine
from bridge.migrate import alembic_config, downgrade, upgrade
from bridge.phones import phone_hash
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


def _indexed(engine: Engine, table: str) -> list[tuple[str | None, ...]]:
    """Column tuples of every index and unique constraint on `table` (either one serves lookups);
    an expression in an index stands as None."""
    inspector = inspect(engine)
    found = [tuple(ix["column_names"]) for ix in inspector.get_indexes(table)]
    found += [tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table)]
    primary = inspector.get_pk_constraint(table)["constrained_columns"]
    return [*found, tuple(primary)]


def test_the_revisions_ship_in_one_line() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == ["0004"]
    assert [r.revision for r in script.walk_revisions()] == ["0004", "0003", "0002", "0001"]


def test_the_migration_creates_exactly_the_models_schema(empty_engine: Engine) -> None:
    assert _differences(empty_engine) != []  # the comparison sees a missing schema
    upgrade(empty_engine)
    assert _differences(empty_engine) == []
    upgrade(empty_engine)  # a second run (a second release) changes nothing
    assert _differences(empty_engine) == []
    with empty_engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0004"


def test_the_lookup_indexes_exist(empty_engine: Engine) -> None:
    upgrade(empty_engine)

    def leads(table: str, *columns: str) -> bool:
        return any(cols[: len(columns)] == columns for cols in _indexed(empty_engine, table))

    # Inbound SMS: phone hash -> channels, within an organization.
    assert leads("channel_phone_hashes", "organization_id", "phone_hash")
    assert leads("contacts", "organization_id", "phone_hash")
    # Resource -> thread, within an organization.
    assert leads("threads", "organization_id", "resource_id")
    assert leads("threads", "organization_id", "id")
    # Cursor pagination: messages by seq within a thread (of an organization) or a channel.
    assert leads("messages", "organization_id", "thread_id", "seq")
    assert leads("messages", "channel_id", "seq")
    assert leads("messages", "id")
    # Status callbacks and the sweeper.
    assert leads("deliveries", "twilio_sid")
    assert leads("inbound_sms", "received_at")
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
    downgrade(empty_engine, "base")
    left = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert left == set()


KEY = "migration-test-phone-hash-key"
ANN = "+14155550123"
STRANGER = "+14155550199"  # opted out by keyword, never a contact


def _old_hash(e164: str) -> str:
    return hmac.new(KEY.encode(), e164.encode(), hashlib.sha256).hexdigest()


def _rows_at_0001(conn: Connection) -> None:
    """Two organizations with one number, a thread, channels and opt-outs, as 0001 kept them."""
    now = datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)
    for org in ("org_a", "org_b"):
        conn.execute(
            text(
                "INSERT INTO organizations (id, name, created_at, updated_at) "
                "VALUES (:o, :o, :t, :t)"
            ),
            {"o": org, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO contacts (id, organization_id, phone, phone_hash, created_at) "
                "VALUES (:c, :o, :p, :h, :t)"
            ),
            {"c": f"cnt_{org}", "o": org, "p": ANN, "h": _old_hash(ANN), "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO channels (id, organization_id, subscriber_hash, name, created_at, "
                "updated_at) VALUES (:c, :o, :h, '', :t, :t)"
            ),
            {"c": f"chnl_{org}", "o": org, "h": f"hash-{org}", "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO channel_phone_hashes (channel_id, phone_hash, organization_id) "
                "VALUES (:c, :h, :o)"
            ),
            {"c": f"chnl_{org}", "h": _old_hash(ANN), "o": org},
        )
    conn.execute(
        text(
            "INSERT INTO threads (id, resource_id, organization_id, created_at, updated_at) "
            "VALUES ('thrd_order-1001', 'order-1001', 'org_a', :t, :t)"
        ),
        {"t": now},
    )
    conn.execute(
        text(
            "INSERT INTO thread_subscribers (thread_id, subscriber_id, type, is_archived, "
            "added_at, position) VALUES ('thrd_order-1001', 'cnt_org_a', 'contact', :f, :t, 0)"
        ),
        {"t": now, "f": False},
    )
    conn.execute(
        text(
            "INSERT INTO messages (id, organization_id, thread_id, subscriber_id, author_type, "
            "text, type, media_urls, reactions, created_at) VALUES ('msg_1', 'org_a', "
            "'thrd_order-1001', 'org_a', 'api_key', 'hi', 'text', '[]', '[]', :t)"
        ),
        {"t": now},
    )
    conn.execute(
        text(
            "INSERT INTO inbound_sms (id, message_sid, organization_id, from_phone, to_phone, "
            "params, status, keyword, received_at) VALUES ('in_1', 'SM1', 'org_b', :p, "
            "'+14155550100', '{}', 'keyword', 'STOP', :t)"
        ),
        {"p": STRANGER, "t": now},
    )
    for org, phone in (("org_a", ANN), ("org_b", STRANGER)):
        conn.execute(
            text(
                "INSERT INTO opt_outs (organization_id, phone_hash, opted_out_at, source) "
                "VALUES (:o, :h, :t, 'keyword')"
            ),
            {"o": org, "h": _old_hash(phone), "t": now},
        )


EVENTS = table(
    "events",
    column("id"),
    column("organization_id"),
    column("type"),
    column("data", JSON),
    column("created_at"),
)


def _contact_json(org: str, digest: str) -> dict[str, object]:
    return {"object": "contact", "id": f"cnt_{org}", "phone": ANN, "phone_hash": digest}


def _events_at_0002(conn: Connection) -> None:
    """Events as 0002 keeps them: a contact's (with its phone hash then) and a thread's message."""
    now = datetime(2026, 11, 2, tzinfo=UTC).replace(tzinfo=None)
    message = {"object": "message", "id": "msg_1", "thread_id": "thrd_order-1001"}
    conn.execute(
        insert(EVENTS),
        [
            {
                "id": "evt_opted",
                "organization_id": "org_a",
                "type": "contact.opted_out",
                "data": {"object": _contact_json("org_a", _old_hash(ANN))},
                "created_at": now,
            },
            {
                "id": "evt_message",
                "organization_id": "org_a",
                "type": "message.created",
                "data": {"object": message},
                "created_at": now,
            },
        ],
    )


def _event_data(conn: Connection) -> dict[str, object]:
    rows = conn.execute(EVENTS.select().order_by(EVENTS.c.id)).all()
    return {row.id: row.data for row in rows}


def _rows_up_to_0002(engine: Engine) -> None:
    """The rows of 0001, migrated to 0002, and then the events of 0002 beside them."""
    upgrade(engine, "0001")
    with engine.begin() as conn:
        _rows_at_0001(conn)
    upgrade(engine, "0002")
    with engine.begin() as conn:
        _events_at_0002(conn)


def test_the_upgrade_carries_rows_forward(
    empty_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHONE_HASH_KEY", KEY)
    _rows_up_to_0002(empty_engine)
    upgrade(empty_engine)
    assert _differences(empty_engine) == []

    with empty_engine.begin() as conn:
        subscribers = conn.execute(
            text("SELECT organization_id, thread_id, subscriber_id FROM thread_subscribers")
        ).all()
        assert [tuple(r) for r in subscribers] == [("org_a", "thrd_order-1001", "cnt_org_a")]
        # The other organization can now have its own thread about the same resource.
        conn.execute(
            text(
                "INSERT INTO threads (id, resource_id, organization_id, created_at, updated_at) "
                "VALUES ('thrd_order-1001', 'order-1001', 'org_b', :t, :t)"
            ),
            {"t": datetime(2026, 12, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
        contacts: dict[str, str] = dict(
            conn.execute(text("SELECT organization_id, phone_hash FROM contacts")).all()
        )
        indexed: dict[str, str] = dict(
            conn.execute(text("SELECT organization_id, phone_hash FROM channel_phone_hashes")).all()
        )
        opted: dict[str, str] = dict(
            conn.execute(text("SELECT organization_id, phone_hash FROM opt_outs")).all()
        )
        events = _event_data(conn)
    for org in ("org_a", "org_b"):
        assert contacts[org] == indexed[org] == phone_hash(org, ANN, KEY)
    assert contacts["org_a"] != contacts["org_b"]
    assert opted == {
        "org_a": phone_hash("org_a", ANN, KEY),
        "org_b": phone_hash("org_b", STRANGER, KEY),
    }
    # The event log shows the organization's hash too; a message's thread id is unchanged.
    assert events["evt_opted"] == {"object": _contact_json("org_a", phone_hash("org_a", ANN, KEY))}
    assert events["evt_message"] == {
        "object": {"object": "message", "id": "msg_1", "thread_id": "thrd_order-1001"}
    }


def test_the_downgrade_carries_rows_back(
    empty_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHONE_HASH_KEY", KEY)
    _rows_up_to_0002(empty_engine)
    upgrade(empty_engine)
    downgrade(empty_engine, "0002")
    with empty_engine.connect() as conn:
        opted = _event_data(conn)["evt_opted"]
    assert opted == {"object": _contact_json("org_a", _old_hash(ANN))}
    downgrade(empty_engine, "0001")
    with empty_engine.connect() as conn:
        assert (
            conn.execute(text("SELECT phone_hash FROM contacts")).scalars().all()
            == [_old_hash(ANN)] * 2
        )
        assert conn.execute(text("SELECT count(*) FROM thread_subscribers")).scalar_one() == 1
