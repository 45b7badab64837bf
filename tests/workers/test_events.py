"""Events out through real RQ workers to a real local receiver (DESIGN 5.8).

Time is moved, never slept: a test moves a retry's due time (or a rotation's or a failure's
start) into the past in the database, as the clock would have.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from rq import Queue
from sqlalchemy import func, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bridge.db import transaction, utcnow
from bridge.event_sending import claim_lease
from bridge.events import EVENT_OBJECTS, record_event
from bridge.models import (
    Event,
    EventDelivery,
    EventDeliveryStatus,
    Organization,
    WebhookAttempt,
    WebhookEndpoint,
)
from bridge.runtime import Runtime
from bridge.webhook_endpoints import create_endpoint, get_endpoint, rotate_secret
from tests import factories
from tests.standin.receiver import Receiver
from workers import context, queues
from workers.enqueue import DISPATCH_EVENTS, install_enqueue_on_commit
from workers.events import (
    IN_FLIGHT_KEY,
    MAX_IN_FLIGHT_PER_ENDPOINT,
    deliver_events,
    dispatch,
)
from workers.sweeper import sweep
from workers.worker import Worker


@pytest.fixture
def events_runtime(runtime: Runtime) -> Runtime:
    """The worker runtime with a short webhook timeout, queueing dispatch after each commit."""
    runtime.settings = runtime.settings.model_copy(update={"webhook_timeout": 0.5})
    install_enqueue_on_commit(runtime)
    return runtime


def work_events(connection: redis.Redis) -> None:
    """Run what the `events` queue holds now (scheduled retries stay scheduled: time is moved)."""
    Worker([Queue(queues.EVENTS, connection=connection)], connection=connection).work(burst=True)


def endpoint_for(
    rt: Runtime, org: Organization, url: str, events: list[str] | None = None
) -> WebhookEndpoint:
    with transaction(rt.sessions) as session:
        return create_endpoint(session, rt.settings, org.id, url, events or ["*"])


def record(
    rt: Runtime, org: Organization, n: int = 1, type: str = "contact.opted_out"
) -> list[str]:
    with transaction(rt.sessions) as session:
        ids = [
            record_event(session, org.id, type, {"object": EVENT_OBJECTS[type], "n": i}).id
            for i in range(n)
        ]
    return ids


def move_time(rt: Runtime, seconds: float) -> None:
    """Everything the database waits for comes `seconds` sooner: retries, claims, failures."""
    back = timedelta(seconds=seconds)
    with transaction(rt.sessions) as session:
        for d in session.execute(select(EventDelivery)).scalars():
            if d.next_attempt_at is not None:
                d.next_attempt_at -= back
            if d.claimed_at is not None:
                d.claimed_at -= back
        for e in session.execute(select(WebhookEndpoint)).scalars():
            e.created_at -= back
            if e.failing_since is not None:
                e.failing_since -= back
            if e.previous_secret_expires_at is not None:
                e.previous_secret_expires_at -= back
        for ev in session.execute(select(Event)).scalars():
            ev.created_at -= back


def attempts(rt: Runtime, endpoint_id: str) -> list[WebhookAttempt]:
    with rt.sessions() as session:
        return list(
            session.execute(
                select(WebhookAttempt)
                .where(WebhookAttempt.endpoint_id == endpoint_id)
                .order_by(WebhookAttempt.seq)
            ).scalars()
        )


def test_every_event_type_arrives_once_signed(events_runtime: Runtime, receiver: Receiver) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    ids = [record(rt, org, type=t)[0] for t in EVENT_OBJECTS]
    work_events(rt.redis)
    got = receiver.wait_for(len(ids))
    time.sleep(0.2)
    assert sorted(receiver.event_ids()) == sorted(ids)  # each once
    for item in got:
        event = Webhook(endpoint.secret).verify(item.body, item.headers)
        assert event["id"] == item.headers["webhook-id"]
        assert event["object"] == "event" and event["organization_id"] == org.id
        assert event["data"]["object"]["object"] == EVENT_OBJECTS[event["type"]]
        with pytest.raises(WebhookVerificationError):
            Webhook(endpoint.secret).verify(item.body.replace(b'"n":0', b'"n":1'), item.headers)
    assert {r.event["type"] for r in got} == set(EVENT_OBJECTS)
    assert all(a.succeeded and a.status_code == 200 for a in attempts(rt, endpoint.id))


def test_receiver_down_then_up_gets_everything_after_the_retries(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    receiver.down()
    ids = record(rt, org, 3)
    work_events(rt.redis)
    assert [a.succeeded for a in attempts(rt, endpoint.id)] == [False]  # one probe, not three
    move_time(rt, 6)  # the 5 s retry is due
    deliver_events(endpoint.id)
    assert [a.succeeded for a in attempts(rt, endpoint.id)] == [False, False]
    receiver.up()
    move_time(rt, 6 * 60)  # the 5 min retry is due
    deliver_events(endpoint.id)
    assert sorted(receiver.event_ids()) == sorted(ids)
    made = attempts(rt, endpoint.id)
    assert [a.succeeded for a in made] == [False, False, True, True, True]
    assert made[0].error == "could not connect (connection refused or reset)"
    assert made[0].next_retry_at is not None and made[0].status_code is None
    with rt.sessions() as session:
        assert set(session.execute(select(EventDelivery.status)).scalars()) == {"succeeded"}


def test_a_hanging_receiver_is_cut_at_the_timeout(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    receiver.hang(30)
    record(rt, org)
    started = time.monotonic()
    work_events(rt.redis)
    # Cut long before the 30 s hang ends (the margin is for a loaded machine's worker start).
    assert time.monotonic() - started < 10
    (made,) = attempts(rt, endpoint.id)
    assert not made.succeeded and made.error == "no answer within 0.5 s"
    assert 400 <= made.duration_ms < 2000


def test_two_endpoints_one_dead_the_live_one_gets_everything(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    with Receiver().start() as dead:
        dead.hang(10)
        dead_endpoint = endpoint_for(rt, org, dead.url)
        live_endpoint = endpoint_for(rt, org, receiver.url)
        ids = record(rt, org, 20)
        started = time.monotonic()
        work_events(rt.redis)
        elapsed = time.monotonic() - started
    assert sorted(receiver.event_ids()) == sorted(ids)
    # The dead one cost one timeout, not one per event.
    assert elapsed < 3
    assert len(attempts(rt, dead_endpoint.id)) == 1
    assert len(attempts(rt, live_endpoint.id)) == 20


def test_rotation_signs_with_both_secrets_for_24_hours_then_the_new_one(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    old = endpoint.secret
    with transaction(rt.sessions) as session:
        _, new = rotate_secret(session, org.id, endpoint.id)
    record(rt, org)
    work_events(rt.redis)
    (first,) = receiver.wait_for(1)
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(first.body, first.headers)
    assert Webhook(old).verify(first.body, first.headers)
    move_time(rt, 24 * 3600 - 60)  # 23h59 later: still both
    record(rt, org)
    work_events(rt.redis)
    second = receiver.wait_for(2)[1]
    assert Webhook(old).verify(second.body, second.headers)
    move_time(rt, 120)  # 24h01 later: the new one only
    record(rt, org)
    work_events(rt.redis)
    third = receiver.wait_for(3)[2]
    assert len(third.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(third.body, third.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(third.body, third.headers)


def test_one_dispatch_job_takes_the_events_of_every_commit_before_it(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint_for(rt, org, receiver.url)
    queue = Queue(queues.EVENTS, connection=rt.redis)
    first = record(rt, org, 2) + record(rt, org, 1)  # two commits
    assert [j.func_name for j in queue.get_jobs()] == [DISPATCH_EVENTS]
    work_events(rt.redis)
    assert sorted(receiver.event_ids()) == sorted(first)
    later = record(rt, org, 1)  # after that job took its events: a job of its own
    assert [j.func_name for j in queue.get_jobs()] == [DISPATCH_EVENTS]
    work_events(rt.redis)
    assert sorted(receiver.event_ids()) == sorted(first + later)


def test_redis_flushed_undelivered_events_are_redriven_by_the_sweeper(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint_for(rt, org, receiver.url)
    ids = record(rt, org, 3)  # dispatch queued...
    rt.redis.flushdb()  # ...and lost
    assert sweep(rt)["events_dispatched"] == 0  # not yet overdue
    move_time(rt, 60)
    counts = sweep(rt)
    assert counts["events_dispatched"] == 3 and counts["event_drains"] == 1
    work_events(rt.redis)
    assert sorted(receiver.event_ids()) == sorted(ids)

    # Dispatched, but the drain lost: the overdue deliveries are redriven.
    receiver.down()
    more = record(rt, org, 2)
    work_events(rt.redis)  # the drain's probe fails; its retry is scheduled in Redis
    rt.redis.flushdb()
    receiver.up()
    move_time(rt, 60)
    assert sweep(rt)["event_drains"] == 1
    work_events(rt.redis)
    assert sorted(receiver.event_ids()) == sorted(ids + more)


def test_commits_share_one_dispatch_job_and_events_without_endpoint_go_nowhere(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    events = Queue(queues.EVENTS, connection=rt.redis)
    quiet = factories.committed_organization(rt)
    subscribed = factories.committed_organization(rt)
    endpoint_for(rt, subscribed, receiver.url)
    for _ in range(3):
        record(rt, quiet, 1)
    ids = record(rt, subscribed, 2)
    assert events.count == 1, "one dispatch job for every commit before it starts, not one each"
    work_events(rt.redis)
    assert sorted(receiver.event_ids()) == sorted(ids)
    with rt.sessions() as session:
        waiting = session.scalar(
            select(func.count()).select_from(Event).where(Event.dispatched_at.is_(None))
        )
    assert waiting == 0, "the organization without an endpoint's events are dispatched to nobody"
    move_time(rt, 60)
    assert sweep(rt)["events_dispatched"] == 0


def test_a_transaction_rolled_back_writes_and_queues_no_event(events_runtime: Runtime) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    with pytest.raises(RuntimeError), transaction(rt.sessions) as session:
        record_event(session, org.id, "contact.opted_out", {"object": "contact"})
        raise RuntimeError("the change fails")
    with transaction(rt.sessions):
        pass  # the next commit of the factory must not carry the rolled-back event either
    with rt.sessions() as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar_one() == 0
    assert Queue(queues.EVENTS, connection=rt.redis).count == 0


def test_an_endpoint_failing_for_5_days_is_disabled(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    receiver.answer(503, "maintenance")
    record(rt, org)
    work_events(rt.redis)
    move_time(rt, 5 * 24 * 3600)
    deliver_events(endpoint.id)
    with rt.sessions() as session:
        row = get_endpoint(session, org.id, endpoint.id)
        statuses = set(session.execute(select(EventDelivery.status)).scalars())
    assert not row.enabled and row.disabled_reason == "every attempt failed for 5 days"
    assert statuses == {"canceled"}
    made = attempts(rt, endpoint.id)
    assert [(a.status_code, a.response_body) for a in made] == [(503, "maintenance")] * 2
    record(rt, org)  # a disabled endpoint receives nothing more
    work_events(rt.redis)
    assert len(receiver.received) == 2


def test_an_endpoint_has_a_cap_on_drains_in_flight(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    far = time.time() + 600
    rt.redis.zadd(
        IN_FLIGHT_KEY + endpoint.id, {f"other{i}": far for i in range(MAX_IN_FLIGHT_PER_ENDPOINT)}
    )
    record(rt, org)
    work_events(rt.redis)
    assert receiver.received == []  # as many as allowed are at it already
    rt.redis.delete(IN_FLIGHT_KEY + endpoint.id)  # they end
    assert deliver_events(endpoint.id) == {"succeeded": 1, "failed": 0}
    assert len(receiver.received) == 1


def test_a_claim_left_by_a_killed_worker_is_sent_again_after_the_lease(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint_for(rt, org, receiver.url)
    (event_id,) = record(rt, org)
    work_events(rt.redis)
    receiver.wait_for(1)
    with transaction(rt.sessions) as session:  # as if a worker had claimed it and died
        delivery = session.execute(select(EventDelivery)).scalar_one()
        delivery.status, delivery.claimed_at = EventDeliveryStatus.SENDING, utcnow()
    rt.redis.flushdb()
    move_time(rt, claim_lease(rt.settings).total_seconds() + 1)
    assert sweep(rt)["event_drains"] == 1
    work_events(rt.redis)
    assert receiver.event_ids() == [event_id, event_id]  # at least once: never lost


def test_a_drain_asked_to_stop_ends_after_the_post_in_progress_and_queues_its_sequel(
    events_runtime: Runtime, receiver: Receiver
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    ids = record(rt, org, 30)
    rt.redis.delete(f"rq:queue:{queues.EVENTS}")  # the dispatch is done by hand below
    dispatch(ids)
    context.request_stop()  # SIGTERM, as `Worker.request_stop` passes it on
    counts = deliver_events(endpoint.id)
    assert counts == {"succeeded": 1, "failed": 0, "stopped": 1}
    waiting = Queue(queues.EVENTS, connection=rt.redis).get_jobs()
    assert [j.func_name for j in waiting] == ["workers.events.deliver_events"]  # queued again
    with rt.sessions() as session:
        statuses = list(session.execute(select(EventDelivery.status)).scalars())
    assert sorted(statuses) == ["pending"] * 29 + ["succeeded"]  # none left claimed
    context.uninstall()  # as a worker started anew
    context.install(rt)
    work_events(rt.redis)
    assert sorted(receiver.event_ids()) == sorted(ids)
