"""Benchmark the fan-out through real worker processes against bare twilio-python calls.

    .venv/bin/python -m bench.fanout [--quick]

Every figure is measured in one run, with the Twilio stand-in in a process of its own:
- a fan-out of 1,000 recipients at 50 ms a request through `python -m workers` (from the enqueue
  until every delivery is recorded `sent`) against 1,000 bare twilio-python `messages.create`
  calls from one process at the same concurrency (32, the default, and 64);
- the same at zero latency, as SMS per second of one worker process;
- one RQ job per recipient on a stock forking RQ worker (the design most teams write first);
- 10 messages to 500 recipients each with two worker processes against one;
- the per-sender rate over a 60 s burst against the configured rate (requests after the first
  over the time from the first to the last);
- the memory of a process after 100,000 deliveries against after 1,000 (outbox sender, no network).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from requests.adapters import HTTPAdapter
from rq import Queue, Worker
from sqlalchemy import func, insert, select, text, update
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bench import _stack
from bench._report import Figure, figure
from bridge.actors import Actor
from bridge.channels import get_or_create_channel
from bridge.db import make_engine, transaction, utcnow
from bridge.ids import new_id
from bridge.messages import Draft, post_channel_message
from bridge.migrate import upgrade
from bridge.models import Contact, Delivery
from bridge.organizations import create_organization
from bridge.phones import phone_hash
from bridge.publishing import PublishResult
from bridge.runtime import Runtime
from bridge.sending import record_sent, send_unrecorded
from bridge.settings import load_settings
from tests.services import RedisServer
from tests.standin.twilio import most_within
from workers import context, queues
from workers.enqueue import enqueue_published
from workers.fanout import fan_out_message

LATENCY = 0.05
NAIVE_JOB = "bench.fanout.naive_send"
SENDER = "+16285550199"
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


def rss_mb() -> float:
    """This process's resident memory, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Bench:
    """One organization in a scratch database, and what the fan-out figures need around it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        with transaction(runtime.sessions) as session:
            self.org_id = create_organization(
                session, runtime.settings, "Bench", [SENDER]
            ).organization.id

    def channel(self, n: int) -> str:
        """A channel of `n` new contacts, inserted in bulk."""
        key = self.runtime.settings.phone_hash_key
        rows = []
        for _ in range(n):
            phone = f"+1415{next(_numbers):07d}"
            rows.append(
                {
                    "id": new_id("cnt"),
                    "organization_id": self.org_id,
                    "name": None,
                    "phone": phone,
                    "phone_hash": phone_hash(self.org_id, phone, key),
                    "created_at": utcnow(),
                }
            )
        with transaction(self.runtime.sessions) as session:
            session.execute(insert(Contact), rows)
            channel, _ = get_or_create_channel(session, self.org_id, [r["id"] for r in rows])
            return channel.id

    def publish(self, channel_id: str, text: str = "Your parcel is on its way") -> PublishResult:
        """Post to the channel and commit, without enqueueing the fan-out."""
        with transaction(self.runtime.sessions) as session:
            posted = post_channel_message(
                session,
                self.runtime.settings,
                Actor.organization(self.org_id),
                channel_id,
                Draft.of(text),
            )
        assert posted.published is not None
        return posted.published

    def analyze(self) -> None:
        """Give PostgreSQL's planner the statistics of the rows just made, as autovacuum would.

        A scratch database's tables were empty when last analyzed: until autovacuum comes by (a
        minute or more), the planner chose for a fresh message's claim a plan that scanned all
        its deliveries once per candidate, 250 ms where 5 ms do with statistics.
        """
        if self.runtime.engine.dialect.name == "postgresql":
            with self.runtime.engine.begin() as connection:
                connection.execute(text("ANALYZE deliveries, contacts, opt_outs"))

    def sent(self, message_ids: Sequence[str]) -> int:
        with self.runtime.sessions() as session:
            return int(
                session.execute(
                    select(func.count()).where(
                        Delivery.message_id.in_(message_ids), Delivery.status == "sent"
                    )
                ).scalar_one()
            )

    def fan_out_seconds(self, channel_ids: Sequence[str], recipients: int) -> float:
        """Publish a message to each channel, enqueue them, and time until all are `sent`."""
        published = [self.publish(c) for c in channel_ids]
        ids = [p.message_id for p in published]
        self.analyze()
        connection = self.runtime.redis
        started = time.perf_counter()
        for p in published:
            enqueue_published(connection, p)
        # Redis says when the workers are done; the database (slow to count) confirms it.
        _stack.wait_until(
            lambda: _stack.idle(connection) and self.sent(ids) >= recipients,
            600,
            "the fan-out",
            every=0.005,
        )
        return time.perf_counter() - started


class _Redirect(TwilioHttpClient):
    """twilio-python's own HTTP client, its pool sized to the concurrency, sent to the stand-in."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        super().__init__(pool_connections=True, timeout=10)
        self.base_url = base_url
        adapter = HTTPAdapter(pool_maxsize=concurrency, max_retries=0)
        assert self.session is not None
        self.session.mount("http://", adapter)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(
            method, url.replace("https://api.twilio.com", self.base_url), *args, **kwargs
        )


def bare_seconds(base_url: str, count: int, concurrency: int) -> float:
    """`count` bare `client.messages.create` calls from this process, `concurrency` at once."""
    client = Client(
        _stack.ACCOUNT_SID, _stack.AUTH_TOKEN, http_client=_Redirect(base_url, concurrency)
    )
    numbers = [f"+1415{next(_numbers):07d}" for _ in range(count)]

    def create(to: str) -> None:
        client.messages.create(to=to, from_=SENDER, body="Your parcel is on its way")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, numbers[: concurrency * 2]))  # warm the connection pool
        started = time.perf_counter()
        list(pool.map(create, numbers))
        return time.perf_counter() - started


def naive_seconds(bench: Bench, connection: redis.Redis, channel_id: str) -> float:
    """One RQ job per delivery on a stock forking RQ worker, in this process."""
    message_id = bench.publish(channel_id).message_id
    with bench.runtime.sessions() as session:
        ids = list(
            session.execute(select(Delivery.id).where(Delivery.message_id == message_id)).scalars()
        )
    queue = Queue(queues.TEXT, connection=connection)
    for delivery_id in ids:
        queue.enqueue(NAIVE_JOB, delivery_id, result_ttl=0)
    bench.runtime.engine.dispose()  # the forked horses open their own connections
    started = time.perf_counter()
    Worker([queue], connection=connection).work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - started
    assert bench.sent([message_id]) == len(ids), "the naive fan-out left deliveries unsent"
    return seconds


def memory_ratio(bench: Bench, small: int, large: int) -> tuple[float, float]:
    """RSS of a process after `small` and after `large` deliveries to the outbox (no network)."""
    channel_id = bench.channel(min(1000, small))
    sent = 0
    after_small = 0.0
    while sent < large:
        message_id = bench.publish(channel_id).message_id
        result = fan_out_message(bench.runtime, message_id)
        sent += sum(result.statuses.values())
        if not after_small and sent >= small:
            after_small = rss_mb()
    return after_small, rss_mb()


def rate_figure(
    bench: Bench, standin: _stack.StandIn, env: dict[str, str], seconds: float
) -> Figure:
    """The rate of one sender's SMS at the stand-in over the first `seconds` of a longer burst.

    The requests after the first, over the time from the first to the last (at the stand-in's
    clock); the note gives the most requests within any second, which the limiter holds to
    `rate + 1`.
    """
    rate = 10.0
    warm = bench.channel(1)
    burst = bench.channel(int(rate * seconds) + 20)
    with _stack.workers(env | {"SEND_RATE_PER_SENDER": str(rate)}):
        bench.fan_out_seconds([warm], 1)  # a worker that has sent before, as in production
        time.sleep(1)
        standin.clear()
        result = bench.publish(burst)
        enqueue_published(bench.runtime.redis, result)
        _stack.wait_until(
            lambda: bench.sent([result.message_id]) >= rate * seconds + 10, seconds * 3, "the burst"
        )
    times = sorted(r["received_at"] for r in standin.requests())
    burst_times = [t for t in times if t <= times[0] + seconds]
    # n requests are n - 1 intervals: counting n over the window's length credited the sender
    # one request too many (601 in 60 s read as 10.0167/s at an exact 10/s).
    measured = (len(burst_times) - 1) / (burst_times[-1] - burst_times[0])
    return figure(
        f"per-sender rate over a {seconds:.0f} s burst",
        f"configured SEND_RATE_PER_SENDER {rate:.0f}/s",
        measured,
        "SMS/s",
        measured / rate,
        "0.95..1.0",
        note=f"most in any 1 s: {most_within(times, 1.0)} (at most {rate + 1:.0f})",
    )


def run(quick: bool = False) -> list[Figure]:
    """Measure the fan-out figures; `quick` uses small sizes (to try the harness, not to report)."""
    recipients = 200 if quick else 1000
    zero_count = 500 if quick else 3000
    naive_count = 60 if quick else 1000
    split = (4, 50) if quick else (10, 500)
    burst = 10.0 if quick else 60.0
    deliveries = (500, 5_000) if quick else (1_000, 100_000)
    figures: list[Figure] = []
    with _stack.scratch_database("fanout") as url, RedisServer() as server:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        env = _stack.environment(url, server.url, SEND_RATE_PER_SENDER=1_000_000)
        connection = redis.Redis.from_url(server.url)
        # First what the machine's load moves least: memory, the naive design, the rate.
        # Memory: many deliveries through one process, to the outbox (no network in the way).
        settings = load_settings(env, outbox_path=os.devnull, twilio_account_sid="")
        runtime = context.install(Runtime(settings))
        bench = Bench(runtime)
        small, large = memory_ratio(bench, *deliveries)
        figures.append(
            figure(
                f"worker memory after {deliveries[1]:,} deliveries",
                f"after {deliveries[0]:,} ({small:.0f} MB)",
                large,
                "MB",
                large / small,
                "<= 1.2",
            )
        )
        runtime.close()
        with _stack.standin(LATENCY) as standin:
            settings = load_settings(
                env, outbox_path=os.devnull, twilio_api_base_url=standin.base_url
            )
            env["TWILIO_API_BASE_URL"] = standin.base_url
            runtime = context.install(Runtime(settings))
            bench.runtime = runtime
            naive = naive_seconds(bench, connection, bench.channel(naive_count))
            figures.append(rate_figure(bench, standin, env, burst))
            designed: dict[int, float] = {}
            for concurrency, target in ((32, "<= 1.15"), (64, "<= 1.3")):
                channel_id = bench.channel(recipients)
                warm = bench.channel(2 * concurrency)
                with _stack.workers(env | {"SEND_CONCURRENCY": str(concurrency)}):
                    bench.fan_out_seconds([warm], 2 * concurrency)
                    designed[concurrency] = bench.fan_out_seconds([channel_id], recipients)
                bare = bare_seconds(standin.base_url, recipients, concurrency)
                ideal = recipients * LATENCY / concurrency
                figures.append(
                    figure(
                        f"fan-out {recipients:,} at 50 ms, concurrency {concurrency}",
                        f"{recipients:,} bare twilio-python calls, one process, same concurrency "
                        f"({bare:.2f} s)",
                        designed[concurrency],
                        "s",
                        designed[concurrency] / bare,
                        target,
                        note=f"ideal {ideal:.2f} s; ratio to ideal "
                        f"{designed[concurrency] / ideal:.2f}",
                    )
                )

            standin.latency(0)
            channel_id = bench.channel(zero_count)
            warm = bench.channel(64)
            with _stack.workers(env | {"SEND_CONCURRENCY": "32"}):
                bench.fan_out_seconds([warm], 64)
                zero = zero_count / bench.fan_out_seconds([channel_id], zero_count)
            bare_rate = zero_count / bare_seconds(standin.base_url, zero_count, 32)
            figures.append(
                figure(
                    "fan-out at zero latency, one worker process",
                    "bare twilio-python calls at zero latency, concurrency 32 "
                    f"({bare_rate:,.0f}/s)",
                    zero,
                    "SMS/s",
                    zero / bare_rate,
                    ">= 0.6",
                )
            )
            standin.latency(LATENCY)

            times = {}
            for count in (1, 2):
                channels = [bench.channel(split[1]) for _ in range(split[0])]
                with _stack.workers(env, count):
                    times[count] = bench.fan_out_seconds(channels, split[0] * split[1])
            figures.append(
                figure(
                    f"{split[0]} messages x {split[1]} recipients, 2 worker processes",
                    f"the same with 1 worker process ({times[1]:.2f} s)",
                    times[2],
                    "s",
                    times[2] / times[1],
                    "<= 0.6",
                )
            )
            naive_per_1000 = naive * recipients / naive_count
            figures.append(
                figure(
                    f"fan-out {recipients:,} at 50 ms, concurrency 32: speed-up",
                    "one RQ job per recipient on a stock forking RQ worker "
                    f"({naive_per_1000:.1f} s{'' if naive_count == recipients else ', scaled'})",
                    naive_per_1000 / designed[32],
                    "x",
                    naive_per_1000 / designed[32],
                    ">= 100",
                )
            )
            runtime.close()

        connection.close()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fan-out benchmark and print its figures."""
    from bench._report import table

    parser = argparse.ArgumentParser(prog="bench.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    args = parser.parse_args(argv)
    print(table(run(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
