"""The runtime builds its connections from settings, lazily."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bridge import db
from bridge.runtime import Runtime, connect_redis
from bridge.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Heroku Redis: TLS with a self-signed certificate, so no verification unless asked for.
        ("rediss://:secret@redis.example.com:6380/0", None),
        ("rediss://:secret@redis.example.com:6380/0?ssl_cert_reqs=required", "required"),
    ],
)
def test_tls_redis_urls_get_heroku_certificate_settings(url: str, expected: object) -> None:
    client = connect_redis(url)
    assert client.connection_pool.connection_kwargs["ssl_cert_reqs"] == expected
    client.close()


def test_plain_redis_urls_have_no_tls_settings(redis_url: str) -> None:
    client = connect_redis(redis_url)
    assert "ssl_cert_reqs" not in client.connection_pool.connection_kwargs
    assert client.ping()
    client.close()


def test_nothing_connects_until_used(settings: Settings) -> None:
    runtime = Runtime(settings)
    assert "engine" not in runtime.__dict__ and "redis" not in runtime.__dict__
    with runtime.sessions() as session:
        assert session.execute(text("select 1")).scalar_one() == 1
    assert runtime.redis.ping()
    runtime.close()


def test_after_fork_keeps_the_engine_usable_and_builds_a_new_twilio_client(
    settings: Settings,
) -> None:
    runtime = Runtime(settings)
    with runtime.sessions() as session:
        session.execute(text("select 1"))
    sender, parents = runtime.sender, runtime.engine.pool
    runtime.after_fork()
    assert runtime.sender is not sender
    parents.dispose()  # in a real fork the parent closes these; here the test must
    with runtime.sessions() as session:
        assert session.execute(text("select 1")).scalar_one() == 1
    runtime.close()


def test_a_pooled_connection_the_database_dropped_while_idle_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pinged only after sitting idle (not on every checkout): a restart or an idle timeout
    # while the pool is quiet must still never reach a query.
    monkeypatch.setattr(db, "IDLE_PING_AFTER", 0.0)
    engine = db.make_engine(postgres_url, pool_size=1, max_overflow=0)
    admin = db.make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            dropped = connection.execute(text("select pg_backend_pid()")).scalar_one()
        with admin.connect() as connection:
            connection.execute(text("select pg_terminate_backend(:pid)"), {"pid": dropped})
        with engine.connect() as connection:
            now = connection.execute(text("select pg_backend_pid()")).scalar_one()
        assert now != dropped
    finally:
        engine.dispose()
        admin.dispose()
