"""Benchmark the fan-out: one message to 1,000 contacts through the Twilio stand-in (50 ms each).

    .venv/bin/python -m bench.fanout [--recipients 1000] [--deliveries 100000] [--database-url ...]

Reports, measured in one run:
- the designed fan-out (one job per message, `send_concurrency` sends at once) against the ideal
  `recipients x 50 ms / concurrency`, as a ratio;
- the naive design (one RQ job per recipient on a forking worker) against the designed one;
- the worker's memory (RSS) after `--deliveries` deliveries sent in one process (to the outbox
  sender, no network), which shows whether per-delivery state leaks.

It starts its own redis-server and uses a fresh SQLite file unless given --database-url (a scratch
PostgreSQL database: it is migrated and rows are left there).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import redis
from rq import Queue, SimpleWorker, Worker
from sqlalchemy import insert, select, update

from bridge.actors import Actor
from bridge.channels import get_or_create_channel
from bridge.db import make_engine, transaction, utcnow
from bridge.ids import new_id
from bridge.messages import post_channel_message
from bridge.migrate import upgrade
from bridge.models import Contact, Delivery
from bridge.organizations import create_organization
from bridge.phones import phone_hash
from bridge.runtime import Runtime
from bridge.sending import record_sent, send_unrecorded
from bridge.settings import Settings, load_settings
from tests.services import RedisServer
from workers import context, queues
from workers.enqueue import enqueue_posted
from workers.fanout import fan_out_message

LATENCY = 0.05
ACCOUNT_SID = "AC" + "ab" * 16
AUTH_TOKEN = "bench-auth-token"
NAIVE_JOB = "bench.fanout.naive_send"
_numbers = itertools.count(2_000_000)


def naive_send(delivery_id: str) -> str:
    """The naive design's job: claim one delivery and send it (one job, one fork, per recipient)."""
    rt = context.runtime()
    now = utcnow()
    with transaction(rt.sessions) as session:
        claimed = list(
            session.scalars(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status == "pending")
                .values(status="sending", claimed_at=now, attempts=Delivery.attempts + 1)
                .returning(Delivery),
                execution_options={"synchronize_session": False},
            )
        )
    if not claimed:
        return "taken"
    outcome = send_unrecorded(rt.engine, rt.sessions, rt.settings, rt.sender, claimed[0])
    if outcome.result is None:
        return str(outcome.status)
    with transaction(rt.sessions) as session:
        return record_sent(session, delivery_id, outcome.result) or "sent"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _channel(runtime: Runtime, org_id: str, n: int) -> str:
    """A channel of `n` new contacts, inserted in bulk."""
    settings = runtime.settings
    rows = []
    for _ in range(n):
        phone = f"+1415{next(_numbers):07d}"
        rows.append(
            {
                "id": new_id("cnt"),
                "organization_id": org_id,
                "name": None,
                "phone": phone,
                "phone_hash": phone_hash(org_id, phone, settings.phone_hash_key),
                "created_at": utcnow(),
            }
        )
    with transaction(runtime.sessions) as session:
        session.execute(insert(Contact), rows)
        channel, _ = get_or_create_channel(session, org_id, [r["id"] for r in rows])
        return channel.id


def _publish(runtime: Runtime, org_id: str, channel_id: str, enqueue: bool = True) -> str:
    with transaction(runtime.sessions) as session:
        posted = post_channel_message(
            session,
            runtime.settings,
            Actor.organization(org_id),
            channel_id,
            "Your parcel is on its way",
        )
    if enqueue:
        enqueue_posted(runtime.redis, posted)
    return posted.message.id


def _all_sent(runtime: Runtime, message_id: str) -> bool:
    with runtime.sessions() as session:
        statuses = set(
            session.execute(
                select(Delivery.status).where(Delivery.message_id == message_id)
            ).scalars()
        )
    return statuses == {"sent"}


@contextlib.contextmanager
def _standin_process() -> Iterator[SimpleNamespace]:
    """The Twilio stand-in in a process of its own, so that it does not share the GIL with the
    worker being measured; it answers every request after LATENCY seconds."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin.twilio",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
            "--latency",
            str(LATENCY),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield SimpleNamespace(base_url=process.stdout.readline().strip())
    finally:
        process.terminate()
        process.wait(10)


def _settings(
    database_url: str, redis_url: str, twilio: SimpleNamespace | None, tmp: str
) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "quiet_hours": "",
        "send_rate_per_sender": 1_000_000.0,  # no rate limit: the benchmark measures the design
        "outbox_path": str(Path(tmp) / "outbox.log"),
    }
    if twilio is not None:
        values |= {
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base_url": twilio.base_url,
        }
    return load_settings({}, **values)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fan-out benchmark and print its ratios."""
    parser = argparse.ArgumentParser(prog="bench.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        url = args.database_url or f"sqlite:///{tmp}/bench.sqlite3"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        connection = redis.Redis.from_url(server.url)
        with _standin_process() as twilio:
            runtime = context.install(Runtime(_settings(url, server.url, twilio, tmp)))
            with transaction(runtime.sessions) as session:
                org = create_organization(
                    session, runtime.settings, "Bench", [f"+1628{next(_numbers) + 1_000_000:07d}"]
                ).organization
            channel_id = _channel(runtime, org.id, args.recipients)
            concurrency = runtime.settings.send_concurrency
            queue_list = [Queue(name, connection=connection) for name in queues.ALL]

            message_id = _publish(runtime, org.id, channel_id)
            started = time.perf_counter()
            SimpleWorker(queue_list, connection=connection).work(
                burst=True, logging_level="WARNING"
            )
            designed = time.perf_counter() - started
            assert _all_sent(runtime, message_id), "the designed fan-out left deliveries unsent"
            ideal = args.recipients * LATENCY / concurrency
            print(
                f"designed fan-out: {args.recipients} SMS in {designed:.2f} s "
                f"(concurrency {concurrency}, 50 ms a request)"
            )
            print(f"  vs ideal {ideal:.2f} s: ratio {designed / ideal:.2f}")

            message_id = _publish(runtime, org.id, channel_id, enqueue=False)
            with runtime.sessions() as session:
                ids = list(
                    session.execute(
                        select(Delivery.id).where(Delivery.message_id == message_id)
                    ).scalars()
                )
            text_queue = Queue(queues.TEXT, connection=connection)
            for delivery_id in ids:
                text_queue.enqueue(NAIVE_JOB, delivery_id, result_ttl=0)
            runtime.engine.dispose()  # the forked horses open their own connections
            started = time.perf_counter()
            Worker(queue_list, connection=connection).work(burst=True, logging_level="WARNING")
            naive = time.perf_counter() - started
            assert _all_sent(runtime, message_id), "the naive fan-out left deliveries unsent"
            print(
                f"naive (one forked job per recipient): {naive:.2f} s; "
                f"designed is {naive / designed:.1f}x faster"
            )
            runtime.close()

        # Memory: many deliveries through one process, to the outbox (no network in the way).
        runtime = context.install(Runtime(_settings(url, server.url, None, tmp)))
        batch = min(args.recipients, args.deliveries)
        channel_id = _channel(runtime, org.id, batch)
        before = _rss_mb()
        sent = 0
        checkpoints = []
        while sent < args.deliveries:
            message_id = _publish(runtime, org.id, channel_id, enqueue=False)
            result = fan_out_message(runtime, message_id)
            sent += sum(result.statuses.values())
            if sent >= args.deliveries // 10 and not checkpoints:
                checkpoints.append((sent, _rss_mb()))
        after = _rss_mb()
        print(
            f"worker RSS: {before:.0f} MB before, {checkpoints[0][1]:.0f} MB after "
            f"{checkpoints[0][0]:,} deliveries, {after:.0f} MB after {sent:,}"
        )
        runtime.close()
        connection.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
