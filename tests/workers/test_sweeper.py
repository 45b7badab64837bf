"""The sweeper rebuilds lost work from the database: lost jobs, lost schedules, stale sends."""

from __future__ import annotations

import time
from datetime import timedelta

import redis
from sqlalchemy import select

from bridge.db import utcnow
from bridge.models import Delivery
from bridge.runtime import Runtime
from bridge.sending import claim_deliveries, outgoing_sms
from tests.standin.twilio import TwilioStandIn
from tests.workers.conftest import channel_of, phones
from tests.workers.test_delivery import deliveries, make_org, post
from workers import context
from workers.ratelimit import SendRateLimiter
from workers.sweeper import sweep


def fast_stale(runtime: Runtime) -> Runtime:
    """The same runtime with SEND_STALE_AFTER of a fraction of a second."""
    runtime.settings = runtime.settings.model_copy(update={"send_stale_after": 0.3})
    return runtime


def test_redis_flushed_after_publish_the_sweeper_delivers_everything_once(
    runtime: Runtime,
    twilio: TwilioStandIn,
    redis_client: redis.Redis,
    work,  # type: ignore[no-untyped-def]
) -> None:
    org = make_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, contacts = channel_of(session, runtime.settings, org, phones(5))
    message_id = post(runtime, org, channel_id, "Hello")
    redis_client.flushdb()  # the fan-out job is gone
    work()
    assert twilio.requests == []

    fast_stale(runtime)
    time.sleep(0.4)
    counts = sweep(runtime)
    assert counts["requeued"] == 1
    assert sweep(runtime)["requeued"] == 0  # not twice within the window
    work()
    assert {d.status for d in deliveries(runtime, message_id)} == {"sent"}
    for contact in contacts:
        assert len(twilio.sent_to(contact.phone)) == 1


def test_sweeper_publishes_due_scheduled_messages_redis_lost(
    runtime: Runtime,
    twilio: TwilioStandIn,
    redis_client: redis.Redis,
    work,  # type: ignore[no-untyped-def]
) -> None:
    org = make_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = channel_of(session, runtime.settings, org, phones(1))
    message_id = post(runtime, org, channel_id, "Later", publish_to_channel_at=time.time() + 0.5)
    redis_client.flushdb()
    assert sweep(runtime)["published"] == 0
    time.sleep(0.6)
    assert sweep(runtime)["published"] == 1
    work()
    assert [d.status for d in deliveries(runtime, message_id)] == ["sent"]
    assert len(twilio.sent_to(contact.phone)) == 1


def test_stale_sending_is_settled_by_asking_twilio_first(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work,  # type: ignore[no-untyped-def]
) -> None:
    org = make_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [went, lost] = channel_of(session, runtime.settings, org, phones(2))
    message_id = post(runtime, org, channel_id, "Hello")
    # A worker claims both, sends one, and is killed before saving its SID.
    with runtime.sessions() as session, session.begin():
        claimed = {d.subscriber_id: d for d in claim_deliveries(session, message_id, 10)}
    runtime.sender.send(outgoing_sms(runtime.settings, claimed[went.id]))
    fast_stale(runtime)
    time.sleep(0.4)
    counts = sweep(runtime)
    assert (counts["stale_found"], counts["stale_resent"]) == (1, 1)
    work()

    rows = {d.subscriber_id: d for d in deliveries(runtime, message_id)}
    assert rows[went.id].status == "sent"
    assert rows[went.id].twilio_sid == twilio.sent_to(went.phone)[0]["sid"]
    assert len(twilio.sent_to(went.phone)) == 1
    assert len(twilio.sent_to(lost.phone)) == 1 and rows[lost.id].status == "sent"
    assert rows[lost.id].attempts == 2


def test_a_read_timeout_is_unknown_until_twilio_is_asked(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work,  # type: ignore[no-untyped-def]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"twilio_timeout": 0.3})
    context.install(runtime)
    org = make_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = channel_of(session, runtime.settings, org, phones(1))
    twilio.set_latency(0.6)  # the SMS is created, the answer comes too late
    message_id = post(runtime, org, channel_id, "Hello")
    work()
    [row] = deliveries(runtime, message_id)
    assert row.status == "unknown" and row.twilio_sid is None
    twilio.set_latency(0)
    fast_stale(runtime)
    time.sleep(0.7)  # the stand-in creates the message after its latency
    assert sweep(runtime)["stale_found"] == 1
    [row] = deliveries(runtime, message_id)
    assert row.status == "sent" and row.twilio_sid == twilio.sent_to(contact.phone)[0]["sid"]
    assert len(twilio.sent_to(contact.phone)) == 1


def test_pending_waiting_for_a_retry_is_not_stale(runtime: Runtime) -> None:
    org = make_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = channel_of(session, runtime.settings, org, phones(1))
    message_id = post(runtime, org, channel_id, "Hello")
    with runtime.sessions() as session, session.begin():
        row = session.execute(
            select(Delivery).where(Delivery.message_id == message_id)
        ).scalar_one()
        row.not_before = utcnow() + timedelta(hours=1)
    fast_stale(runtime)
    time.sleep(0.4)
    assert sweep(runtime)["requeued"] == 0


def test_rate_limiter_spaces_sends_by_segments(redis_client: redis.Redis) -> None:
    limiter = SendRateLimiter(redis_client, rate=10.0)
    start = time.monotonic()
    for _ in range(5):
        limiter.wait("+16280000000", 1)
    limiter.wait("+16280000000", 3)  # 3 segments: the next send waits 0.3 s
    limiter.wait("+16280000000", 1)
    elapsed = time.monotonic() - start
    assert 0.75 <= elapsed < 1.2  # 6 slots of 0.1 s, then 0.3 s for the three segments
    other = time.monotonic()
    limiter.wait("+16289999999", 1)  # another sender is not held back
    assert time.monotonic() - other < 0.05


def test_rate_limiter_never_reserves_far_ahead(redis_client: redis.Redis) -> None:
    limiter = SendRateLimiter(redis_client, rate=1.0, max_ahead=0.5)
    assert limiter.reserve("+16280000001", 1) == (True, 0.0)
    granted, retry_in = limiter.reserve("+16280000001", 1)
    assert not granted and 0.4 < retry_in <= 0.5
