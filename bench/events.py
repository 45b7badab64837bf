"""Benchmark events out: events delivered per second to a local receiver answering at once.

    .venv/bin/python -m bench.events [--events 1000] [--database-url ...]

Reports, measured in one run, the events delivered per second (recorded in one transaction, then
dispatched, claimed, signed, POSTed and recorded by an RQ worker on the `events` queue) against the
same number of bare `requests.post` calls from one process to the same receiver; the target
ratio is at least 0.5. The receiver runs in a process of its own, so it does not share the GIL
with the worker being measured. (The inbound webhook's ratio with one subscribed endpoint against
none comes once events are recorded by the domain functions.)

It starts its own redis-server and uses a fresh SQLite file unless given --database-url (a scratch
PostgreSQL database: it is migrated and rows are left there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis
import requests
from rq import Queue, SimpleWorker
from sqlalchemy import select

from bridge.db import make_engine, transaction
from bridge.events import record_event
from bridge.migrate import upgrade
from bridge.models import EventDelivery
from bridge.organizations import create_organization
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.webhook_endpoints import create_endpoint
from tests.services import RedisServer
from workers import context, queues
from workers.enqueue import install_enqueue_on_commit

TARGET = 0.5


@contextlib.contextmanager
def _receiver_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standin.receiver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the events benchmark and print its ratio."""
    parser = argparse.ArgumentParser(prog="bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    n = args.events
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server, _receiver_process() as url:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.sqlite3"
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        settings = load_settings(
            {},
            database_url=database_url,
            redis_url=server.url,
            outbox_path=str(Path(tmp) / "outbox.log"),
        )
        runtime = context.install(Runtime(settings))
        install_enqueue_on_commit(runtime)
        connection = redis.Redis.from_url(server.url)
        with transaction(runtime.sessions) as session:
            # A fresh sender each run: a --database-url database keeps earlier runs' rows.
            sender = f"+1628{3_000_000 + secrets.randbelow(1_000_000):07d}"
            org = create_organization(session, settings, "Bench", [sender]).organization
            create_endpoint(session, settings, org.id, url, ["*"])
        sample = {"object": "contact", "id": "cnt_bench", "name": "Bench", "opted_out": True}
        with transaction(runtime.sessions) as session:
            for _ in range(n):
                record_event(session, org.id, "contact.opted_out", sample)

        started = time.perf_counter()
        SimpleWorker([Queue(queues.EVENTS, connection=connection)], connection=connection).work(
            burst=True, logging_level="WARNING"
        )
        elapsed = time.perf_counter() - started
        with runtime.sessions() as session:
            statuses = list(
                session.execute(
                    select(EventDelivery.status).where(EventDelivery.organization_id == org.id)
                ).scalars()
            )
        assert statuses == ["succeeded"] * n, "events left undelivered"
        events_rate = n / elapsed

        body = json.dumps({"object": "event", "data": {"object": sample}})
        started = time.perf_counter()
        for _ in range(n):
            requests.post(url, data=body, timeout=5).raise_for_status()
        bare_rate = n / (time.perf_counter() - started)

        ratio = events_rate / bare_rate
        print(f"events delivered: {n} in {elapsed:.2f} s, {events_rate:.0f}/s")
        print(f"bare requests.post: {bare_rate:.0f}/s")
        print(f"  ratio {ratio:.2f} (target >= {TARGET})")
        runtime.close()
        connection.close()
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
