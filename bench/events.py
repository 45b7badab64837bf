"""Benchmark events out: delivery rate, and what an endpoint costs SMS and the inbound webhook.

    .venv/bin/python -m bench.events [--quick]

Measured in one run, on PostgreSQL when one answers (else SQLite), each part on a scratch database
and a redis-server of its own:

1. Events delivered per second (recorded in one transaction, then dispatched, claimed, signed,
   POSTed and recorded by an RQ worker on the `events` queue, in this process) against the same
   number of bare `requests.post` calls from one process to the same receiver, which answers at
   once from a process of its own.
2. A fan-out to 500 recipients at 50 ms a request through one `python -m workers` process (the
   Procfile's), published while its organization's endpoint hangs (the receiver never answers, so
   each POST lasts WEBHOOK_TIMEOUT, 5 s) and a drain of that endpoint has just started a POST,
   against the same fan-out when the organization has no endpoint. Time from the enqueue until
   every delivery is recorded `sent`; two rounds of each.
3. The inbound webhook's throughput through gunicorn (as `bench.inbound` runs it) while one
   endpoint, answering at once, is subscribed to every event, against the same with it disabled;
   the rounds alternate, and the worker drains what each left before the next starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import requests
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from bench import _stack
from bench._report import Figure, figure
from bench.fanout import Bench
from bench.inbound import SENDER, max_rate, seed_relayers, signed_requests
from bridge.db import make_engine, transaction
from bridge.events import record_event
from bridge.migrate import upgrade
from bridge.models import Event, EventDelivery
from bridge.organizations import create_organization
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.webhook_endpoints import create_endpoint, update_endpoint
from tests.services import RedisServer, free_port
from tests.standin.receiver import Receiver
from workers import context, queues
from workers.enqueue import enqueue_published, install_enqueue_on_commit

LATENCY = 0.05
SAMPLE = {"object": "contact", "id": "cnt_bench", "name": "Bench", "opted_out": True}


@contextlib.contextmanager
def _receiver_process() -> Iterator[str]:
    """A receiver answering 200 at once, in a process of its own; its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standin.receiver"],
        cwd=_stack.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def _scratch(label: str) -> Iterator[tuple[str, str]]:
    """A migrated scratch database and a redis-server: their URLs."""
    with _stack.scratch_database(label) as url, RedisServer() as server:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url, server.url


def _record(runtime: Runtime, organization_id: str, count: int) -> list[str]:
    with transaction(runtime.sessions) as session:
        return [
            record_event(session, organization_id, "contact.opted_out", SAMPLE).id
            for _ in range(count)
        ]


def delivered_figure(count: int) -> Figure:
    """Events delivered per second by one worker against bare POSTs to the same receiver."""
    with _scratch("events") as (url, redis_url), _receiver_process() as receiver_url:
        settings = load_settings(_stack.environment(url, redis_url))
        runtime = context.install(Runtime(settings))
        install_enqueue_on_commit(runtime)
        with transaction(runtime.sessions) as session:
            org = create_organization(session, settings, "Bench", [SENDER]).organization
            create_endpoint(session, settings, org.id, receiver_url, ["*"])
        _record(runtime, org.id, count)

        started = time.perf_counter()
        connection = runtime.redis
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
        assert statuses == ["succeeded"] * count, "events left undelivered"
        runtime.close()

        body = json.dumps({"object": "event", "data": {"object": SAMPLE}})
        started = time.perf_counter()
        for _ in range(count):
            requests.post(receiver_url, data=body, timeout=5).raise_for_status()
        bare = count / (time.perf_counter() - started)
    rate = count / elapsed
    return figure(
        f"events delivered, {count:,} to one endpoint answering at once",
        f"bare requests.post calls from one process to the same receiver ({bare:,.0f}/s)",
        rate,
        "events/s",
        rate / bare,
        ">= 0.5",
    )


def _undispatched(runtime: Runtime, organization_id: str) -> int:
    with runtime.sessions() as session:
        return int(
            session.execute(
                select(func.count()).where(
                    Event.organization_id == organization_id, Event.dispatched_at.is_(None)
                )
            ).scalar_one()
        )


def _timed_fan_out(bench: Bench, channel_id: str, recipients: int) -> float:
    published = bench.publish(channel_id)
    started = time.perf_counter()
    enqueue_published(bench.runtime.redis, published)
    _stack.wait_until(
        lambda: bench.sent([published.message_id]) >= recipients, 300, "the fan-out", every=0.02
    )
    return time.perf_counter() - started


def hanging_endpoint_figure(recipients: int, rounds: int) -> Figure:
    """A fan-out published while the organization's endpoint hangs, against none registered."""
    with _scratch("events_fanout") as (url, redis_url), _stack.standin(LATENCY) as standin:
        env = _stack.environment(
            url, redis_url, SEND_RATE_PER_SENDER=1_000_000, TWILIO_API_BASE_URL=standin.base_url
        )
        runtime = context.install(Runtime(load_settings(env)))
        install_enqueue_on_commit(runtime)  # events recorded here are dispatched, as by the web
        bench = Bench(runtime)
        channels = [bench.channel(recipients) for _ in range(2 * rounds)]
        warm = bench.channel(64)
        receiver = Receiver().start()
        receiver.hang(3600)  # longer than WEBHOOK_TIMEOUT: every POST times out
        times: dict[str, list[float]] = {"none": [], "hanging": []}
        try:
            with _stack.workers(env):
                _timed_fan_out(bench, warm, 64)
                for _ in range(rounds):
                    # The same backlog of events as the hanging rounds have, to nobody.
                    _record(runtime, bench.org_id, 20)
                    _stack.wait_until(
                        lambda: (
                            _undispatched(runtime, bench.org_id) == 0 and _stack.idle(runtime.redis)
                        ),
                        60,
                        "the backlog's dispatch",
                    )
                    times["none"].append(_timed_fan_out(bench, channels.pop(), recipients))
                with transaction(runtime.sessions) as session:
                    endpoint = create_endpoint(
                        session, runtime.settings, bench.org_id, receiver.url, ["*"]
                    )
                    endpoint_id = endpoint.id
                for _ in range(rounds):
                    before = len(receiver.event_ids())
                    _record(runtime, bench.org_id, 20)
                    # A drain has started a POST that will last WEBHOOK_TIMEOUT.
                    _stack.wait_until(
                        lambda b=before: len(receiver.event_ids()) > b, 60, "a POST to hang"
                    )
                    times["hanging"].append(_timed_fan_out(bench, channels.pop(), recipients))
                with transaction(runtime.sessions) as session:  # its retries stop here
                    update_endpoint(
                        session, runtime.settings, bench.org_id, endpoint_id, {"enabled": False}
                    )
                posts = len(receiver.event_ids())
        finally:
            receiver.stop()
            runtime.close()
    none, hanging = statistics.mean(times["none"]), statistics.mean(times["hanging"])
    return figure(
        f"fan-out {recipients:,} at 50 ms, one worker process, its organization's endpoint hanging",
        f"the same fan-out, the organization without an endpoint ({none:.2f} s)",
        hanging,
        "s",
        hanging / none,
        "<= 1.1",
        note=f"published as a drain's POST began (WEBHOOK_TIMEOUT 5 s); mean of {rounds} rounds "
        f"each, none {_seconds(times['none'])}, hanging {_seconds(times['hanging'])}; "
        f"{posts} POSTs reached the receiver",
    )


def _seconds(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def subscribed_endpoint_figure(count: int, rounds: int, pairs: int) -> Figure:
    """Inbound webhook throughput with one endpoint subscribed to every event, against none."""
    with (
        _scratch("events_inbound") as (url, redis_url),
        _stack.standin(LATENCY) as standin,
        _receiver_process() as receiver_url,
    ):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = _stack.environment(
            url,
            redis_url,
            PUBLIC_BASE_URL=base_url,
            TWILIO_API_BASE_URL=standin.base_url,
            SEND_RATE_PER_SENDER=1_000_000,
            PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="bench-events-metrics-"),
        )
        rates: dict[bool, list[float]] = {False: [], True: []}
        with Runtime(load_settings(env)) as runtime:
            settings = runtime.settings
            with transaction(runtime.sessions) as session:
                org_id = create_organization(session, settings, "Bench", [SENDER]).organization.id
                endpoint_id = create_endpoint(
                    session, settings, org_id, receiver_url, ["*"], enabled=False
                ).id
            relayers = seed_relayers(runtime, org_id, pairs)
            made = iter(range(0, 10_000_000, 100_000))
            warm = signed_requests(base_url, relayers, 30, first=next(made))
            with _stack.workers(env), _stack.gunicorn("webhooks.wsgi:app", port, env):
                max_rate(port, warm)
                for subscribed in [False, True] * rounds:
                    _stack.wait_until(
                        lambda: _stack.idle(runtime.redis), 300, "the worker to catch up", 0.1
                    )
                    with transaction(runtime.sessions) as session:
                        update_endpoint(
                            session, settings, org_id, endpoint_id, {"enabled": subscribed}
                        )
                    batch = signed_requests(base_url, relayers, count, first=next(made))
                    rates[subscribed].append(max_rate(port, batch))
                _stack.wait_until(lambda: _stack.idle(runtime.redis), 300, "the last events", 0.1)
            with runtime.sessions() as session:
                delivered = session.execute(
                    select(EventDelivery.status, func.count()).group_by(EventDelivery.status)
                ).all()
    none, one = statistics.mean(rates[False]), statistics.mean(rates[True])
    statuses = {status: n for status, n in delivered}
    undelivered = sum(n for status, n in statuses.items() if status != "succeeded")
    return figure(
        "inbound throughput, one endpoint subscribed to every event",
        f"the same, no endpoint ({none:,.1f} req/s)",
        one,
        "req/s",
        one / none,
        ">= 0.9",
        note=f"{rounds} rounds of {count} requests each, alternating; req/s without "
        f"{'/'.join(f'{r:.1f}' for r in rates[False])}, with "
        f"{'/'.join(f'{r:.1f}' for r in rates[True])}; events delivered "
        f"{statuses.get('succeeded', 0):,}, not delivered {undelivered}",
    )


def run(quick: bool = False) -> list[Figure]:
    """Measure the events figures; `quick` uses small sizes (to try the harness, not to report)."""
    return [
        delivered_figure(300 if quick else 1000),
        hanging_endpoint_figure(100 if quick else 500, 1 if quick else 2),
        subscribed_endpoint_figure(40 if quick else 150, 1 if quick else 2, 50 if quick else 200),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the events benchmark and print its figures."""
    from bench._report import table

    parser = argparse.ArgumentParser(prog="bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    args = parser.parse_args(argv)
    figures = run(args.quick)
    print(table(figures))
    for measured in figures:
        if measured.note:
            print(f"  {measured.name}: {measured.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
