"""One place that builds the engine, the session factory, Redis and the Twilio sender from settings.

The web app, the worker and the CLI each build one `Runtime` and reach every external part through
it. Nothing connects until first used.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bridge.db import make_engine, make_session_factory
from bridge.settings import Settings, load_settings

if TYPE_CHECKING:
    import redis

    from bridge.twilio_client import OutboxSender, TwilioSender


def connect_redis(url: str, **kwargs: Any) -> redis.Redis:
    """A Redis client for `url`; a `rediss://` URL without certificate settings gets Heroku's.

    Heroku Redis serves TLS with a self-signed certificate, so verifying it fails every connection;
    its documentation says to connect with `ssl_cert_reqs=None`. An explicit `ssl_cert_reqs=` in
    the URL wins.
    """
    import redis

    if url.startswith("rediss://") and "ssl_cert_reqs" not in url:
        kwargs.setdefault("ssl_cert_reqs", None)
    return redis.Redis.from_url(url, **kwargs)


class Runtime:
    """The process's connections, built lazily from one `Settings`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()

    @cached_property
    def engine(self) -> Engine:
        url = self.settings.database_url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Sized from SEND_CONCURRENCY: a worker's send threads never wait for one another's
        # connections (connections open lazily, so a process that needs few opens few).
        return make_engine(url, pool_size=self.settings.database_pool_size, max_overflow=0)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect_redis(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=2)

    @cached_property
    def sender(self) -> TwilioSender | OutboxSender:
        from bridge.twilio_client import build_sender

        return build_sender(self.settings)

    def close(self) -> None:
        """Release pooled connections (tests and forked workers call this)."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()

    def after_fork(self) -> None:
        """Forget what a forked child must not share with its parent: pooled connections, Twilio's.

        The parent keeps using its sockets: the child drops the engine's pool without closing them
        (`close=False`) and builds its own Twilio client (its HTTP pool holds sockets too).
        """
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
        self.__dict__.pop("sender", None)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
