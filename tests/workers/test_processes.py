"""Real `python -m workers` processes: SIGKILL mid fan-out, the rate limit across two workers,
scheduled publishing, and the queues the Procfile's worker listens to. PostgreSQL only (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rq import Worker
from rq.worker import BaseWorker
from sqlalchemy import func, select

from bridge.db import connection_limit
from bridge.messages import cancel_message
from bridge.models import Delivery, DeliveryStatus
from bridge.runtime import Runtime
from bridge.settings import MAX_SEND_CONCURRENCY, POOL_SPARE, Settings, load_settings
from tests import factories
from tests.conftest import TEST_HASH_KEY, _empty
from tests.e2e.processes import children, kill_tree
from tests.standin.twilio import TwilioStandIn, most_within
from tests.workers.conftest import ACCOUNT_SID, AUTH_TOKEN
from workers import queues

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_settings(
    postgres_url: str, redis_url: str, twilio: TwilioStandIn, tmp_path: Path
) -> Settings:
    return load_settings(
        {},
        database_url=postgres_url,
        redis_url=redis_url,
        phone_hash_key=TEST_HASH_KEY,
        public_base_url="https://bridge.example.com",
        outbox_path=str(tmp_path / "outbox.log"),
        quiet_hours="",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url=twilio.base_url,
        send_rate_per_sender=100_000,
        send_retry_base=0.05,
        send_stale_after=2,
        sweep_interval=0.5,
        send_concurrency=8,
    )


@pytest.fixture
def pg_runtime(pg_settings: Settings, redis_client: redis.Redis) -> Iterator[Runtime]:
    rt = Runtime(pg_settings)
    _empty(rt.engine)
    yield rt
    rt.close()


def environment(settings: Settings, **extra: object) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        PHONE_HASH_KEY=settings.phone_hash_key,
        PUBLIC_BASE_URL=settings.public_base_url,
        TWILIO_ACCOUNT_SID=settings.twilio_account_sid or "",
        TWILIO_AUTH_TOKEN=settings.twilio_auth_token or "",
        TWILIO_API_BASE_URL=settings.twilio_api_base_url,
        SEND_RATE_PER_SENDER=str(settings.send_rate_per_sender),
        SEND_RETRY_BASE=str(settings.send_retry_base),
        SEND_STALE_AFTER=str(settings.send_stale_after),
        SEND_CONCURRENCY=str(settings.send_concurrency),
        SWEEP_INTERVAL=str(settings.sweep_interval),
        QUIET_HOURS="",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def start_worker(pg_settings: Settings) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **extra: object) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", *args],
            cwd=ROOT,
            env=environment(pg_settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        kill_tree(process.pid, signal.SIGKILL)
        process.wait(10)


def main_workers(connection: redis.Redis) -> list[BaseWorker]:
    """The registered RQ workers on the SMS queues: one per `python -m workers` process."""
    return [w for w in Worker.all(connection=connection) if queues.TEXT in w.queue_names()]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkill_mid_fan_out_then_restart_sends_each_recipient_exactly_once(
    pg_runtime: Runtime,
    twilio: TwilioStandIn,
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    org = factories.committed_organization(pg_runtime)
    with pg_runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, pg_runtime.settings, org, factories.phones(300)
        )
    twilio.set_latency(0.05)  # 300 x 50 ms / 8 at once: about two seconds of sending
    worker = start_worker()
    message_id = factories.post_to_channel(
        pg_runtime, org, channel_id, "Your parcel is out for delivery"
    )
    wait_until(lambda: len(twilio.requests) >= 80, 30, "the fan-out to be under way")
    kill_tree(worker.pid, signal.SIGKILL)
    worker.wait(10)
    sent_before_restart = len(twilio.requests)
    assert sent_before_restart < 300

    start_worker()

    def settled() -> bool:
        with pg_runtime.sessions() as session:
            open_ = session.execute(
                select(func.count()).where(
                    Delivery.message_id == message_id, Delivery.status != "sent"
                )
            ).scalar_one()
        return open_ == 0

    wait_until(settled, 60, "every delivery to be sent")
    for contact in contacts:
        assert len(twilio.sent_to(contact.phone)) == 1, "exactly one SMS per recipient"
    with pg_runtime.sessions() as session:
        sids = set(
            session.execute(
                select(Delivery.twilio_sid).where(Delivery.message_id == message_id)
            ).scalars()
        )
    assert sids == {m["sid"] for m in twilio.messages}


def test_sigterm_mid_fan_out_records_what_went_and_leaves_the_rest_queued(
    pg_runtime: Runtime,
    twilio: TwilioStandIn,
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    org = factories.committed_organization(pg_runtime)
    with pg_runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, pg_runtime.settings, org, factories.phones(300)
        )
    twilio.set_latency(0.05)
    worker = start_worker(SWEEP_INTERVAL=60, SEND_STALE_AFTER=300)  # the sweeper stays out
    message_id = factories.post_to_channel(pg_runtime, org, channel_id, "Out for delivery")
    wait_until(lambda: len(twilio.requests) >= 80, 30, "the fan-out to be under way")
    os.kill(worker.pid, signal.SIGTERM)  # what a platform does first when it stops a dyno
    assert worker.wait(15) == 0

    with pg_runtime.sessions() as session:
        statuses = Counter(
            session.execute(
                select(Delivery.status).where(Delivery.message_id == message_id)
            ).scalars()
        )
    # Every SMS that went is recorded, none is left claimed, and the rest waits for a worker.
    assert statuses[DeliveryStatus.SENT] == len(twilio.requests) < 300
    assert statuses[DeliveryStatus.SENT] + statuses[DeliveryStatus.PENDING] == 300

    start_worker()
    wait_until(lambda: len(twilio.requests) >= 300, 60, "the rest to be sent")
    time.sleep(0.5)
    for contact in contacts:
        assert len(twilio.sent_to(contact.phone)) == 1, "exactly one SMS per recipient"


def test_rate_limit_and_per_contact_order_hold_across_two_worker_processes(
    pg_runtime: Runtime,
    twilio: TwilioStandIn,
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    rate = 5
    org = factories.committed_organization(pg_runtime)
    with pg_runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, pg_runtime.settings, org, factories.phones(4)
        )
    start_worker(SEND_RATE_PER_SENDER=rate)
    start_worker(SEND_RATE_PER_SENDER=rate)
    wait_until(lambda: len(main_workers(pg_runtime.redis)) >= 2, 20, "two workers")
    texts = [f"update {i}" for i in range(5)]
    for text in texts:
        factories.post_to_channel(pg_runtime, org, channel_id, text)
    wait_until(lambda: len(twilio.requests) >= 20, 30, "twenty SMS")
    times = sorted(r.received_at for r in twilio.requests)
    # At the stand-in's clock: no second holds more than `rate` sends (plus one at its edge).
    assert most_within(times, 1.0) <= rate + 1
    assert times[-1] - times[0] >= (len(times) - 1) / rate - 0.3
    for contact in contacts:
        assert [m["body"] for m in twilio.sent_to(contact.phone)] == texts


def test_scheduled_message_is_sent_on_time_and_a_canceled_one_never(
    pg_runtime: Runtime,
    twilio: TwilioStandIn,
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    org = factories.committed_organization(pg_runtime)
    with pg_runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, pg_runtime.settings, org, factories.phones(1)
        )
    start_worker(SWEEP_INTERVAL=30)  # the scheduler, not the sweeper, must publish it
    wait_until(lambda: bool(main_workers(pg_runtime.redis)), 20, "the worker")
    due = time.time() + 3
    due_monotonic = time.monotonic() + (due - time.time())
    factories.post_to_channel(pg_runtime, org, channel_id, "On time", publish_to_channel_at=due)
    canceled = factories.post_to_channel(
        pg_runtime, org, channel_id, "Never", publish_to_channel_at=due - 1
    )
    with pg_runtime.sessions() as session, session.begin():
        cancel_message(session, factories.org_actor(org), canceled)
    wait_until(lambda: bool(twilio.requests), 10, "the scheduled SMS")
    sent_at = twilio.requests[0].received_at
    assert due_monotonic - 0.05 <= sent_at <= due_monotonic + 1.5
    time.sleep(1)
    assert [m["body"] for m in twilio.sent_to(contact.phone)] == ["On time"]


def test_procfile_worker_listens_to_every_queue(
    pg_settings: Settings,
    redis_client: redis.Redis,
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    lines = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line
    )
    command = lines["worker"].split()
    assert command[:3] == ["python", "-m", "workers"]
    process = start_worker(*command[3:])
    wait_until(lambda: len(Worker.all(connection=redis_client)) >= 2, 20, "its two RQ workers")
    workers = {w.queue_names()[0]: w for w in Worker.all(connection=redis_client)}
    assert sorted(q for w in workers.values() for q in w.queue_names()) == sorted(queues.ALL)
    main, events = workers[queues.MAIN[0]], workers[queues.EVENTS]
    assert main.queue_names() == list(queues.MAIN)  # in priority order
    assert events.queue_names() == [queues.EVENTS]
    assert main.pid == process.pid
    assert events.pid in children(process.pid)  # a process of its own


@pytest.fixture
def standin_process() -> Iterator[str]:
    """The Twilio stand-in in a process of its own (50 ms a request); yields its base URL."""
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
            "0.05",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    yield process.stdout.readline().strip()
    process.terminate()
    process.wait(10)
    process.stdout.close()


def standin_messages(base_url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(base_url + "/_standin/messages", timeout=30) as response:
        return list(json.load(response)["messages"])


def test_fan_out_of_1000_at_concurrency_64_sends_each_recipient_exactly_once(
    pg_runtime: Runtime,
    standin_process: str,
    start_worker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    # With more send threads than pooled connections, this fan-out used to stop part way and
    # fail the same way on every retry (issue 13: 619 of 1,000 at concurrency 32).
    org = factories.committed_organization(pg_runtime)
    with pg_runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, pg_runtime.settings, org, factories.phones(1000)
        )
    start_worker(SEND_CONCURRENCY=64, TWILIO_API_BASE_URL=standin_process, SEND_STALE_AFTER=300)
    message_id = factories.post_to_channel(
        pg_runtime, org, channel_id, "Your parcel is out for delivery"
    )

    def settled() -> bool:
        with pg_runtime.sessions() as session:
            open_ = session.execute(
                select(func.count()).where(
                    Delivery.message_id == message_id, Delivery.status != "sent"
                )
            ).scalar_one()
        return open_ == 0

    wait_until(settled, 90, "every delivery to be sent")
    sent = Counter(str(m["to"]) for m in standin_messages(standin_process))
    assert sent == Counter({contact.phone: 1 for contact in contacts})


def refusal(settings: Settings, concurrency: int) -> str:
    """Start a worker with SEND_CONCURRENCY=`concurrency`; it must refuse: the line naming it."""
    done = subprocess.run(
        [sys.executable, "-m", "workers"],
        cwd=ROOT,
        env=environment(settings, SEND_CONCURRENCY=concurrency),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    heading, line = done.stderr.splitlines()
    assert heading == "worker: refusing to start:"
    return line.strip()


def test_worker_refuses_a_send_concurrency_the_database_cannot_hold(
    pg_runtime: Runtime,
) -> None:
    limit = connection_limit(pg_runtime.engine)
    assert limit is not None
    concurrency = limit - POOL_SPARE + 1  # one connection more than the database accepts
    if concurrency > MAX_SEND_CONCURRENCY:
        pytest.skip(f"this PostgreSQL accepts {limit} connections")
    line = refusal(pg_runtime.settings, concurrency)
    assert line.startswith(
        f"SEND_CONCURRENCY: {concurrency} needs up to {limit + 1} database connections"
    )
    assert f"accepts {limit}" in line


@pytest.mark.parametrize("concurrency", [0, MAX_SEND_CONCURRENCY + 1])
def test_worker_refuses_a_send_concurrency_out_of_range(
    pg_settings: Settings, concurrency: int
) -> None:
    line = refusal(pg_settings, concurrency)
    assert line.startswith("SEND_CONCURRENCY: Input should be")
    assert line.endswith(f"(got '{concurrency}')")
