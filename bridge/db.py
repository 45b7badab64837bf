"""SQLAlchemy plumbing: the declarative base, a UTC datetime type, engines, sessions, row idioms."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, inspect, select
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from bridge.errors import NotFound

Row = TypeVar("Row")

# What a database that is down (or unreachable, or too busy to answer) raises through SQLAlchemy.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def epoch(value: datetime | None) -> int | None:
    """Epoch seconds for the API, or None."""
    return None if value is None else int(value.timestamp())


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always gives back timezone-aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use bridge.db.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def load_json(text: str | bytes) -> Any:
    """A JSON column's value as read: most are empty lists (a message's reactions and media), which
    skip the parser (150 messages are 300 such values a thread read)."""
    if text == b"[]" or text == "[]":
        return []
    return json.loads(text)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    # Bound parameters are phone numbers and message text: keep them out of error messages.
    kwargs.setdefault("hide_parameters", True)
    kwargs.setdefault("json_deserializer", load_json)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; take it over so that
            # BEGIN IMMEDIATE below serializes writers instead of failing on upgrade.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL cannot corrupt the file and loses nothing when a process dies;
            # only a power cut may drop the last commits. One fsync per commit would throttle sends.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


# A pooled connection idle for longer than this is pinged before it is handed out again.
IDLE_PING_AFTER = 2.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only if it sat idle (a cheaper `pool_pre_ping`).

    `pool_pre_ping` costs a round trip on every checkout: one per inbound SMS and one per SMS a
    fan-out sends (the claim's renewal). A connection the database dropped while it was idle
    (a restart, a failover, an idle timeout) is still replaced before use; one dropped while in
    steady use fails its statement, and SQLAlchemy then replaces every connection of the pool.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_AFTER:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out another (a new one if need be).
            raise DisconnectionError() from exc


def connection_limit(engine: Engine) -> int | None:
    """How many connections the database accepts from ordinary roles; None for SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        # PostgreSQL keeps `superuser_reserved_connections` (and from 16 `reserved_connections`)
        # of `max_connections` for privileged roles.
        rows = connection.exec_driver_sql(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
        ).all()
    settings = {str(name): str(value) for name, value in rows}
    reserved = sum(
        int(settings.get(name, "0"))
        for name in ("superuser_reserved_connections", "reserved_connections")
    )
    return int(settings["max_connections"]) - reserved


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """The session factory every process uses; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with factory() as session, session.begin():
        yield session


def insert_or_get(
    session: Session,
    row: Row,
    find: Callable[[], Row | None],
    and_then: Callable[[], object] | None = None,
) -> tuple[Row, bool]:
    """Insert `row` (and whatever `and_then` adds) in a savepoint, or get the row that won.

    Returns the row and True when it was inserted. When a unique constraint says it exists (made
    earlier, or by a concurrent request), the savepoint is rolled back and `find` gives the winner
    (False); an IntegrityError that `find` cannot explain propagates.
    """
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            if and_then is not None:
                and_then()
                session.flush()
    except IntegrityError:
        winner = find()
        if winner is None:
            raise
        return winner, False
    return row, True


def get_owned(
    session: Session,
    model: type[Row],
    organization_id: str,
    object_id: object,
    *,
    for_update: bool = False,
) -> Row:
    """The organization's `model` row with this id, or NotFound (also for another organization's).

    The error names the model (`no such thread`, `no such webhook endpoint`) and the `id`
    parameter; an id that is no string is simply not found. `for_update` locks the row until the
    transaction ends.
    """
    row: Any = None
    if isinstance(object_id, str):
        table: Any = model
        key = [c.name for c in inspect(table).primary_key]
        # The identity map may answer without a query when the id (with its organization, for
        # ids unique only within one, as threads') is the primary key.
        if key == ["id"]:
            row = session.get(model, object_id, with_for_update=for_update)
        elif key == ["organization_id", "id"]:
            row = session.get(model, (organization_id, object_id), with_for_update=for_update)
        else:
            query = select(table).where(
                table.organization_id == organization_id, table.id == object_id
            )
            row = session.execute(
                query.with_for_update() if for_update else query
            ).scalar_one_or_none()
    if row is None or row.organization_id != organization_id:
        name = re.sub(r"(?<!^)(?=[A-Z])", " ", model.__name__).lower()
        raise NotFound(f"no such {name}", "id")
    return row
