"""Benchmark `GET /v1/threads/{id}`: latency and SQL queries as messages and subscribers grow.

The thread read must cost a fixed number of queries whatever the thread holds (no N+1 over
messages or subscribers), and stay fast at the design's 150 messages and 50 subscribers.

    .venv/bin/python -m bench.api [--requests 300] [--database-url postgresql://...]

Without --database-url it runs on a fresh SQLite file; a URL given must name a scratch database
(it is migrated, and the benchmark leaves its rows there). Requests go through the whole Flask app
(authentication, the rate limit switched off, validation of the response model) in process, so the
numbers are the app's and the database's, not a network's.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench import _stack
from bench._report import Figure, met
from bridge.actors import Actor
from bridge.db import make_engine, transaction, utcnow
from bridge.migrate import upgrade
from bridge.models import Message, SubscriberType, ThreadSubscriber
from bridge.organizations import create_organization, create_user, find_or_create_contact
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.threads import create_thread
from tests.factories import message_rows
from tests.factories import statements as statements_of
from webhooks import create_app

SIZES = [(10, 3), (150, 50), (1000, 200)]
_numbers = itertools.count(2_000_000)


def seed(runtime: Runtime, messages: int, subscribers: int) -> tuple[str, str]:
    """An organization with a thread of `messages` messages and `subscribers` subscribers."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        made = create_organization(session, settings, "Bench Org", [f"+1628{next(_numbers):07d}"])
        org_id = made.organization.id
        contacts = max(1, subscribers // 10)
        contact_ids = [
            find_or_create_contact(
                session, settings, org_id, f"+1415{next(_numbers):07d}", f"C{i}"
            )[0].id
            for i in range(contacts)
        ]
        user_ids = [
            create_user(session, settings, org_id, f"User {i}", f"u{i}@example.com").id
            for i in range(subscribers - contacts - 1)
        ]
        resource = f"bench-{messages}-{subscribers}-{time.time_ns()}"
        thread, _ = create_thread(session, settings, Actor.organization(org_id), resource, "Bench")
        now = utcnow()
        session.execute(
            insert(ThreadSubscriber),
            [
                {
                    "organization_id": org_id,
                    "thread_id": thread.id,
                    "subscriber_id": sid,
                    "type": kind,
                    "position": i + 1,
                    "added_at": now,
                    "is_archived": False,
                }
                for i, (sid, kind) in enumerate(
                    [(c, SubscriberType.CONTACT.value) for c in contact_ids]
                    + [(u, SubscriberType.USER.value) for u in user_ids]
                )
            ],
        )
        authors = [org_id, *user_ids, *contact_ids]
        session.execute(insert(Message), message_rows(org_id, thread.id, authors, messages))
    return made.api_key, thread.id


def measure(runtime: Runtime, requests: int, messages: int, subscribers: int) -> dict[str, Any]:
    """Time `requests` reads of one thread and count the SQL statements one read makes."""
    key, thread_id = seed(runtime, messages, subscribers)
    client = create_app(runtime=runtime).test_client()
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/threads/{thread_id}"
    for _ in range(5):  # warm the connection pool and SQLAlchemy's statement cache
        assert client.get(path, headers=headers).status_code == 200
    with statements_of(runtime.engine) as statements:
        response = client.get(path, headers=headers)
    assert response.status_code == 200
    body = response.json
    assert body is not None
    # BEGIN/COMMIT issued by the SQLite dialect hooks are statements too, but not queries
    queries = [s for s in statements if s.split()[0].upper() not in {"BEGIN", "COMMIT"}]
    timings = []
    for _ in range(requests):
        start = time.perf_counter()
        client.get(path, headers=headers)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {
        "messages": messages,
        "subscribers": subscribers,
        "shown": len(body["recent_messages"]),
        "queries": len(queries),
        "median_ms": statistics.median(timings),
        "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
        "bytes": len(response.get_data()),
    }


def run(quick: bool = False) -> list[Figure]:
    """The thread read at 150 messages and 50 subscribers against 1 and 1, on a scratch database.

    The query count must be the same at 1/1, at 150/50 and at 1,000 messages and 200 subscribers.
    """
    requests = 100 if quick else 500
    with _stack.scratch_database("api") as url, tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {}, database_url=url, api_rate_limit=0, outbox_path=str(Path(tmp) / "outbox.log")
        )
        engine = make_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()
        with Runtime(settings) as runtime:
            small = measure(runtime, requests, 1, 1)
            large = measure(runtime, requests, 150, 50)
            larger = measure(runtime, 10, 1000, 200)
    same = small["queries"] == large["queries"] == larger["queries"]
    ratio = large["median_ms"] / small["median_ms"]
    return [
        Figure(
            "GET /v1/threads/{id}, 150 messages, 50 subscribers, median",
            f"1 message, 1 subscriber ({small['median_ms']:.2f} ms)",
            large["median_ms"],
            "ms",
            ratio,
            "<= 2, same query count",
            met(ratio, "<= 2") and same,
            note=f"{large['queries']} queries at 150/50, {larger['queries']} at 1000/200, "
            f"{small['queries']} at 1/1",
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one line per size."""
    parser = argparse.ArgumentParser(prog="bench.api", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    # Called by the bench runner with no arguments: its own command line is not ours to read.
    args = parser.parse_args([] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        settings = load_settings(
            {}, database_url=url, api_rate_limit=0, outbox_path=str(Path(tmp) / "outbox.log")
        )
        engine = make_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()
        with Runtime(settings) as runtime:
            print(
                f"GET /v1/threads/{{id}} on {runtime.engine.dialect.name}, {args.requests} requests"
            )
            print("messages  subscr.  shown  queries     median        p99     bytes")
            results = [measure(runtime, args.requests, m, s) for m, s in SIZES]
            for r in results:
                print(
                    f"{r['messages']:>9} {r['subscribers']:>8} {r['shown']:>6} {r['queries']:>8}"
                    f" {r['median_ms']:>7.2f}ms {r['p99_ms']:>7.2f}ms {r['bytes']:>8}"
                )
    constant = len({r["queries"] for r in results}) == 1
    print("queries per read:", "constant" if constant else "NOT constant: an N+1 crept in")
    return 0 if constant else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
