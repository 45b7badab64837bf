"""At most one waiting job per piece of work: slots and marks, against real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from tests import factories
from tests.services import RedisServer
from workers.slots import enqueue_in_slot, enqueue_once, start_slot, take_all

JOB = "workers.jobs.fan_out"


def _jobs(connection: redis.Redis, queue: str, scheduled: bool = False) -> list[Job]:
    """The queue's jobs waiting to run, or (`scheduled`) those scheduled for later."""
    target = Queue(queue, connection=connection)
    if not scheduled:
        return target.get_jobs()
    ids = ScheduledJobRegistry(queue, connection=connection).get_job_ids()
    return [factories.known(target.fetch_job(job_id)) for job_id in ids]


def _holder(connection: redis.Redis, slot: str) -> str:
    """The token of the job that holds `slot` (its value is "<when>:<token>")."""
    held = connection.get(slot)
    assert isinstance(held, bytes)
    return held.decode().partition(":")[2]


def test_a_mark_keeps_a_second_job_out_and_the_job_takes_all_the_waiting_work(
    redis_client: redis.Redis,
) -> None:
    first = enqueue_once(redis_client, "t:mark", 60, "t-events", JOB, waiting=("t:ids", ["a"]))
    second = enqueue_once(redis_client, "t:mark", 60, "t-events", JOB, waiting=("t:ids", ["b"]))
    assert first and second
    assert len(Queue("t-events", connection=redis_client)) == 1
    assert take_all(redis_client, "t:ids") == ["a", "b"]
    assert take_all(redis_client, "t:ids") == []
    redis_client.delete("t:mark")  # as the job does when it starts
    assert enqueue_once(redis_client, "t:mark", 60, "t-events", JOB)
    assert len(Queue("t-events", connection=redis_client)) == 2


@pytest.fixture
def limited() -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """A Redis of our own and a client allowed only the bridge's keys, not RQ's: enqueues fail."""
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.acl_setuser(
            "bridge", enabled=True, passwords=["+pw"], keys=["bridge:*"], commands=["+@all"]
        )
        client = redis.Redis(port=server.port, username="bridge", password="pw")
        yield admin, client
        client.close()
        admin.close()


def test_a_job_that_could_not_be_queued_clears_its_mark_so_the_next_call_tries(
    limited: tuple[redis.Redis, redis.Redis],
) -> None:
    admin, client = limited
    mark = "bridge:test:queued"
    assert not enqueue_once(client, mark, 60, "events", JOB, waiting=("bridge:test:ids", ["e1"]))
    assert admin.exists(mark) == 0  # not left to keep every later job out for its TTL
    assert admin.lrange("bridge:test:ids", 0, -1) == [b"e1"]  # the work itself is kept
    # With Redis able to queue again, the next call does.
    assert enqueue_once(admin, mark, 60, "events", JOB)
    assert admin.exists(mark) == 1 and len(Queue("events", connection=admin)) == 1


def test_a_slot_queues_one_job_and_a_sooner_one_supersedes_it(redis_client: redis.Redis) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    enqueue_in_slot(redis_client, "t:slot", 60, "t-fan", JOB, ("m1",), job_timeout=60, at=later)
    [late_job] = _jobs(redis_client, "t-fan", scheduled=True)
    late_token = late_job.kwargs["token"]
    assert _holder(redis_client, "t:slot") == late_token
    # As late or later: nothing more is queued, and the first job keeps the slot.
    for at in (later, later + timedelta(minutes=1)):
        enqueue_in_slot(redis_client, "t:slot", 60, "t-fan", JOB, ("m1",), job_timeout=60, at=at)
    assert [j.id for j in _jobs(redis_client, "t-fan", scheduled=True)] == [late_job.id]
    assert _jobs(redis_client, "t-fan") == []
    assert _holder(redis_client, "t:slot") == late_token
    # Now: queued at once, and it holds the slot from here on.
    enqueue_in_slot(redis_client, "t:slot", 60, "t-fan", JOB, ("m1",), job_timeout=60)
    [now_job] = _jobs(redis_client, "t-fan")
    now_token = now_job.kwargs["token"]
    assert tuple(now_job.args) == ("m1",) and _holder(redis_client, "t:slot") == now_token
    assert not start_slot(redis_client, "t:slot", late_token)  # superseded: it does nothing
    assert start_slot(redis_client, "t:slot", now_token)  # the holder frees the slot
    assert redis_client.exists("t:slot") == 0


def test_a_job_due_already_is_queued_at_once_not_scheduled(redis_client: redis.Redis) -> None:
    past = datetime.now(UTC) - timedelta(seconds=30)
    enqueue_in_slot(
        redis_client, "t:slot", 60, "t-fan", JOB, ("m2",), job_timeout=60, at=past, kwargs={"x": 1}
    )
    jobs = _jobs(redis_client, "t-fan")
    assert [(tuple(j.args), j.kwargs["x"]) for j in jobs] == [(("m2",), 1)]
    assert ScheduledJobRegistry("t-fan", connection=redis_client).count == 0
