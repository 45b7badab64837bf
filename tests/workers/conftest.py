"""Worker fixtures: a Twilio stand-in over real HTTP, settings pointing at it, RQ bursts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from rq import Queue

from bridge.runtime import Runtime
from bridge.settings import Settings
from tests.standin.twilio import TwilioStandIn
from workers import context, queues
from workers.worker import Worker

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "standin-auth-token-0123456789ab"


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    """A Twilio stand-in on a free port."""
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, queued_without_date_sent=True).start() as standin:
        yield standin


@pytest.fixture
def settings(settings: Settings, twilio: TwilioStandIn) -> Settings:
    """The suite's settings, sending through the stand-in, fast: no rate limit, tiny retry base."""
    return settings.model_copy(
        update={
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base_url": twilio.base_url,
            "twilio_timeout": 5.0,
            "send_rate_per_sender": 100_000.0,
            "send_retry_base": 0.05,
            "send_concurrency": 8,
        }
    )


@pytest.fixture
def runtime(runtime: Runtime, redis_client: redis.Redis) -> Iterator[Runtime]:
    """The test's runtime, installed as the one jobs use; Redis flushed."""
    context.install(runtime)
    yield runtime
    if "sender" in runtime.__dict__:
        runtime.sender.close()
    context.uninstall()


def run_jobs(connection: redis.Redis, timeout: float = 20.0) -> None:
    """Work every queue in bursts, with RQ's scheduler, until nothing is queued or scheduled."""
    deadline = time.monotonic() + timeout
    while True:
        qs = [Queue(name, connection=connection) for name in queues.ALL]
        Worker(qs, connection=connection).work(burst=True, with_scheduler=True)
        if all(q.count == 0 and q.scheduled_job_registry.count == 0 for q in qs):
            return
        if time.monotonic() > deadline:
            raise AssertionError("jobs still queued or scheduled after the timeout")
        time.sleep(0.05)


@pytest.fixture
def work(redis_url: str) -> Iterator[Callable[..., None]]:
    """Run queued (and scheduled) jobs in-process with the worker process's RQ worker (`Worker`)."""
    connection = redis.Redis.from_url(redis_url)
    yield lambda timeout=20.0: run_jobs(connection, timeout)
    connection.close()
