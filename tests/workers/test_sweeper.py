"""The sweeper rebuilds lost work from the database: lost jobs, lost schedules, stale sends."""

from __future__ import annotations

import time
from datetime import timedelta

import redis
from rq import Queue
from rq.job import Job
from sqlalchemy import select

from bridge.claims import claim_deliveries, stale_pending_messages
from bridge.db import utcnow
from bridge.inbound import record_inbound_sms
from bridge.models import Delivery, InboundSms, Message
from bridge.runtime import Runtime
from bridge.sending import outgoing_sms
from tests import factories
from tests.fixtures.twilio import payloads
from tests.standin.twilio import TwilioStandIn
from workers import context, jobs, queues
from workers.enqueue import enqueue_fan_out
from workers.fanout import BLOCKED_RETRY_MAX, blocked_delay, fan_out_message
from workers.inbound import RECEIVED_GRACE
from workers.ratelimit import SendRateLimiter
from workers.sweeper import sweep, sweep_once


def test_redis_flushed_after_publish_the_sweeper_delivers_everything_once(
    runtime: Runtime,
    twilio: TwilioStandIn,
    redis_client: redis.Redis,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, runtime.settings, org, factories.phones(5)
        )
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    redis_client.flushdb()  # the fan-out job is gone
    work()
    assert twilio.requests == []

    factories.fast_stale(runtime)
    time.sleep(0.4)
    counts = sweep(runtime)
    assert counts["requeued"] == 1
    assert sweep(runtime)["requeued"] == 0  # not twice within the window
    work()
    assert {d.status for d in factories.deliveries(runtime, message_id)} == {"sent"}
    for contact in contacts:
        assert len(twilio.sent_to(contact.phone)) == 1


def test_sweeper_publishes_due_scheduled_messages_redis_lost(
    runtime: Runtime,
    twilio: TwilioStandIn,
    redis_client: redis.Redis,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    message_id = factories.post_to_channel(
        runtime, org, channel_id, "Later", publish_to_channel_at=time.time() + 0.5
    )
    redis_client.flushdb()
    assert sweep(runtime)["published"] == 0
    time.sleep(0.6)
    assert sweep(runtime)["published"] == 1
    work()
    assert [d.status for d in factories.deliveries(runtime, message_id)] == ["sent"]
    assert len(twilio.sent_to(contact.phone)) == 1


def test_stale_sending_is_settled_by_asking_twilio_first(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [went, lost] = factories.channel_of(
            session, runtime.settings, org, factories.phones(2)
        )
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    # A worker claims both, sends one, and is killed before saving its SID.
    with runtime.sessions() as session, session.begin():
        claimed = {d.subscriber_id: d for d in claim_deliveries(session, message_id, 10)}
    runtime.sender.send(outgoing_sms(runtime.settings, claimed[went.id]))
    factories.fast_stale(runtime)
    time.sleep(0.4)
    counts = sweep(runtime)
    assert (counts["stale_found"], counts["stale_resent"]) == (1, 1)
    work()

    rows = {d.subscriber_id: d for d in factories.deliveries(runtime, message_id)}
    assert rows[went.id].status == "sent"
    assert rows[went.id].twilio_sid == twilio.sent_to(went.phone)[0]["sid"]
    assert len(twilio.sent_to(went.phone)) == 1
    assert len(twilio.sent_to(lost.phone)) == 1 and rows[lost.id].status == "sent"
    assert rows[lost.id].attempts == 2


def test_a_read_timeout_is_unknown_until_twilio_is_asked(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"twilio_timeout": 0.3})
    context.install(runtime)
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    twilio.set_latency(0.6)  # the SMS is created, the answer comes too late
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    work()
    [row] = factories.deliveries(runtime, message_id)
    assert row.status == "unknown" and row.twilio_sid is None
    twilio.set_latency(0)
    factories.fast_stale(runtime)
    time.sleep(0.7)  # the stand-in creates the message after its latency
    assert sweep(runtime)["stale_found"] == 1
    [row] = factories.deliveries(runtime, message_id)
    assert row.status == "sent" and row.twilio_sid == twilio.sent_to(contact.phone)[0]["sid"]
    assert len(twilio.sent_to(contact.phone)) == 1


def test_pending_waiting_for_a_retry_is_not_stale(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    with runtime.sessions() as session, session.begin():
        row = session.execute(
            select(Delivery).where(Delivery.message_id == message_id)
        ).scalar_one()
        row.not_before = utcnow() + timedelta(hours=1)
    factories.fast_stale(runtime)
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


def test_rate_limiter_gives_a_slot_only_when_due_and_saves_none_up(
    redis_client: redis.Redis,
) -> None:
    limiter = SendRateLimiter(redis_client, rate=2.0)
    assert limiter.try_take("+16280000001", 1) == (True, 0.0)
    granted, retry_in = limiter.try_take("+16280000001", 1)
    assert not granted and 0.4 < retry_in <= 0.5
    # Taken late (an idle sender, or a send held up), a slot still keeps the next 1/rate away.
    time.sleep(0.8)
    assert limiter.try_take("+16280000001", 1) == (True, 0.0)
    granted, retry_in = limiter.try_take("+16280000001", 1)
    assert not granted and 0.4 < retry_in <= 0.5


def _script_calls(connection: redis.Redis) -> int:
    return int(connection.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_rate_limiter_takes_slots_in_batches_only_above_a_thousand_a_second(
    redis_client: redis.Redis,
) -> None:
    unlimited = SendRateLimiter(redis_client, rate=1_000_000)
    before = _script_calls(redis_client)
    for _ in range(64):
        assert unlimited.take("+16280000002", 1)
    assert _script_calls(redis_client) - before <= 4  # 32 slots a call
    limited = SendRateLimiter(redis_client, rate=1_000)
    before = _script_calls(redis_client)
    for _ in range(10):
        assert limited.take("+16280000003", 1)
    assert _script_calls(redis_client) - before >= 10  # one slot a call, taken when due


def test_a_queued_sms_without_date_sent_is_found_not_sent_again(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    with runtime.sessions() as session, session.begin():
        [claimed] = claim_deliveries(session, message_id, 10)
    sent = runtime.sender.send(outgoing_sms(runtime.settings, claimed))  # then the worker dies
    assert twilio.message(sent.sid)["date_sent"] is None  # Twilio still has it queued
    factories.fast_stale(runtime)
    time.sleep(0.4)
    assert sweep(runtime)["stale_found"] == 1
    work()
    [row] = factories.deliveries(runtime, message_id)
    assert (row.status, row.twilio_sid) == ("sent", sent.sid)
    assert len(twilio.sent_to(contact.phone)) == 1


def waiting_fan_outs(connection: redis.Redis, name: str = queues.TEXT) -> tuple[int, int]:
    queue = Queue(name, connection=connection)
    return queue.count, queue.scheduled_job_registry.count


def test_at_most_one_fan_out_per_message_waits_in_rq(redis_client: redis.Redis) -> None:
    assert enqueue_fan_out(redis_client, "msg_1", queues.TEXT)
    assert enqueue_fan_out(redis_client, "msg_1", queues.TEXT)  # already queued: not again
    later = utcnow() + timedelta(minutes=5)
    assert enqueue_fan_out(redis_client, "msg_1", queues.TEXT, at=later)  # the queued one is sooner
    assert waiting_fan_outs(redis_client) == (1, 0)
    assert enqueue_fan_out(redis_client, "msg_2", queues.TEXT, at=later)
    assert enqueue_fan_out(redis_client, "msg_2", queues.TEXT, at=later + timedelta(minutes=1))
    assert waiting_fan_outs(redis_client) == (1, 1)
    [job] = Queue(queues.TEXT, connection=redis_client).jobs
    assert (job.args, job.kwargs["queue"]) == (("msg_1",), queues.TEXT)


def test_a_sooner_fan_out_supersedes_a_later_one(runtime: Runtime, twilio: TwilioStandIn) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")  # queued now
    redis_client = runtime.redis
    redis_client.flushdb()
    later = utcnow() + timedelta(minutes=5)
    enqueue_fan_out(redis_client, message_id, queues.TEXT, at=later)
    enqueue_fan_out(redis_client, message_id, queues.TEXT)  # sooner: replaces the later one
    assert waiting_fan_outs(redis_client) == (1, 1)
    registry = Queue(queues.TEXT, connection=redis_client).scheduled_job_registry
    [scheduled] = [Job.fetch(i, connection=redis_client) for i in registry.get_job_ids()]
    [queued] = Queue(queues.TEXT, connection=redis_client).jobs
    # Run early (a worker picks it up first), the replaced one sees the sooner one waiting.
    assert jobs.fan_out(*scheduled.args, **scheduled.kwargs) == {"superseded": 1}
    assert jobs.fan_out(*queued.args, **queued.kwargs) == {"sent": 1}
    # Once nothing waits, a leftover one runs and finds nothing left to send.
    assert jobs.fan_out(*scheduled.args, **scheduled.kwargs) == {}
    assert len(twilio.sent_to(contact.phone)) == 1


def test_a_held_back_message_is_neither_stale_nor_looked_at_every_second(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    first = factories.post_to_channel(runtime, org, channel_id, "first")
    second = factories.post_to_channel(runtime, org, channel_id, "second")
    with runtime.sessions() as session, session.begin():
        # The first one failed once and waits for its retry; the second waits behind it.
        row = session.execute(select(Delivery).where(Delivery.message_id == first)).scalar_one()
        row.attempts, row.not_before = 1, utcnow() + timedelta(hours=1)
    factories.fast_stale(runtime)
    time.sleep(0.4)
    with runtime.sessions() as session:
        assert stale_pending_messages(session, runtime.settings) == {}
    assert sweep(runtime)["requeued"] == 0

    for rounds, seconds in enumerate([1, 2, 4, 8]):
        start = utcnow()
        result = fan_out_message(runtime, second, rounds=rounds)
        end = utcnow()
        assert result.next_at is not None and result.rounds == rounds + 1
        # next_at is "now + delay" taken during the call: between start + delay and end + delay.
        delay = timedelta(seconds=seconds)
        assert start + delay <= result.next_at <= end + delay
    assert blocked_delay(30) == timedelta(seconds=BLOCKED_RETRY_MAX)


def test_one_worker_sweeps_per_interval_and_a_failed_sweep_is_survived(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    first = sweep_once(runtime, interval=5)
    assert first is not None and set(first) >= {"published", "requeued"}
    assert sweep_once(runtime, interval=5) is None  # another worker swept in this interval
    redis_client.delete("bridge:sweeper:lock")
    runtime.engine.dispose()
    broken = Runtime(
        runtime.settings.model_copy(
            update={"database_url": "postgresql://postgres@127.0.0.1:1/none"}
        )
    )
    try:
        assert sweep_once(broken, interval=5) is None  # logged, not raised: the loop goes on
    finally:
        broken.close()


def test_an_inbound_sms_whose_matching_job_redis_lost_is_processed_by_the_sweeper(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    world = factories.conversation(runtime, runtime.settings)
    with runtime.sessions() as session, session.begin():
        payload = payloads.inbound(world.jane.phone, world.to, "Still waiting")
        outcome = record_inbound_sms(session, runtime.settings, payload, defer=True)
    assert outcome.pending  # its job would go to Redis now; it never gets there

    assert sweep(runtime)["inbound_redriven"] == 0, "not before the grace period"
    counts = sweep(runtime, utcnow() + RECEIVED_GRACE + timedelta(seconds=1))

    assert counts["inbound_redriven"] == 1
    with runtime.sessions() as session:
        inbound = session.get_one(InboundSms, outcome.inbound.seq)
        assert inbound.status == "matched"
        message = session.scalars(select(Message).where(Message.id == inbound.message_id)).one()
        assert (message.text, message.subscriber_id) == ("Still waiting", world.jane.id)
