"""Publishing to sending, in-process: real Redis, real RQ SimpleWorkers, the stand-in over HTTP."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from rq import Queue
from rq.job import Job
from sqlalchemy import update

from bridge import serialize
from bridge.claims import claim_deliveries
from bridge.db import utcnow
from bridge.deliveries import list_deliveries
from bridge.messages import Draft, post_channel_message
from bridge.models import Delivery
from bridge.organizations import is_opted_out, opt_out
from bridge.runtime import Runtime
from bridge.sending import outgoing_sms
from tests import factories
from tests.standin.twilio import TwilioStandIn, most_within
from workers import queues
from workers.__main__ import preload
from workers.enqueue import enqueue_posted


def test_three_contacts_one_opted_out(
    runtime: Runtime, twilio: TwilioStandIn, work: factories.Work
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, runtime.settings, org, factories.phones(3)
        )
        opt_out(session, org.id, contacts[2].phone_hash)
        senders = {c.id: c for c in contacts}
    message_id = factories.post_to_channel(runtime, org, channel_id, "Your order is on its way")
    work()

    rows = {d.subscriber_id: d for d in factories.deliveries(runtime, message_id)}
    assert rows[contacts[2].id].status == "skipped"
    assert twilio.sent_to(contacts[2].phone) == []
    for contact in contacts[:2]:
        row = rows[contact.id]
        assert row.status == "sent" and row.twilio_sid and row.attempts == 1
        [request] = [r for r in twilio.requests if r.first("To") == contact.phone]
        assert request.first("From") == row.from_phone and row.from_phone is not None
        assert request.first("Body") == "Your order is on its way"
        assert request.first("StatusCallback") == (
            f"https://bridge.example.com/twilio/status?d={row.id}"
        )
        assert request.first("ValidityPeriod") == "14400"
        assert request.sid == row.twilio_sid
    assert len(twilio.requests) == 2 and set(senders) == set(rows)


def test_429_twice_then_success(
    runtime: Runtime, twilio: TwilioStandIn, work: factories.Work
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    twilio.fail_next(2, status=429)
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    work()

    [row] = factories.deliveries(runtime, message_id)
    assert [r.status for r in twilio.requests] == [429, 429, 201]
    assert len(twilio.sent_to(contact.phone)) == 1
    assert (row.status, row.attempts, row.error_code) == ("sent", 3, None)
    assert row.twilio_sid == twilio.requests[-1].sid


def test_21211_fails_at_once_without_retry(
    runtime: Runtime, twilio: TwilioStandIn, work: factories.Work
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, ["+15005550001"])
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    work()

    [row] = factories.deliveries(runtime, message_id)
    assert (row.status, row.attempts, row.error_code) == ("failed", 1, 21211)
    assert "not valid" in (row.error_message or "")
    assert len(twilio.requests) == 1


def test_transient_errors_give_up_after_max_attempts(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    twilio.fail_next(10, status=503)
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    work()

    [row] = factories.deliveries(runtime, message_id)
    attempts = runtime.settings.send_max_attempts
    assert (row.status, row.attempts, row.error_code) == ("failed", attempts, 20503)
    assert len(twilio.requests) == attempts


def test_21610_opts_the_contact_out_and_later_messages_skip(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [blocked, other] = factories.channel_of(
            session, runtime.settings, org, ["+15005550004", factories.phone()]
        )
    first = factories.post_to_channel(runtime, org, channel_id, "One")
    work()
    rows = {d.subscriber_id: d for d in factories.deliveries(runtime, first)}
    assert (rows[blocked.id].status, rows[blocked.id].error_code) == ("failed", 21610)
    with runtime.sessions() as session:
        assert is_opted_out(session, org.id, blocked.phone_hash)

    second = factories.post_to_channel(runtime, org, channel_id, "Two")
    work()
    rows = {d.subscriber_id: d for d in factories.deliveries(runtime, second)}
    assert rows[blocked.id].status == "skipped"
    assert rows[other.id].status == "sent"
    assert len([r for r in twilio.requests if r.first("To") == blocked.phone]) == 1


def test_long_text_parts_segments_and_media_on_the_wire(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    text = " ".join(["word"] * 500)  # 2,499 characters: two parts
    media = ["https://example.com/a.jpg", "https://example.com/b.png"]
    message_id = factories.post_to_channel(runtime, org, channel_id, text, media_urls=media)
    emoji_id = factories.post_to_channel(runtime, org, channel_id, "On its way 🚚")
    work()

    parts = factories.deliveries(runtime, message_id)
    assert [(d.part, d.parts) for d in parts] == [(1, 2), (2, 2)]
    sent = [r for r in twilio.requests if r.first("To") == contact.phone]
    assert [r.first("Body") for r in sent[:2]] == [d.body for d in parts]
    assert " ".join(r.first("Body") or "" for r in sent[:2]) == text
    assert sent[0].form["MediaUrl"] == media and "MediaUrl" not in sent[1].form
    assert sent[0].sid and sent[0].sid.startswith("MM")
    for row, request in zip(parts, sent[:2], strict=True):
        assert row.segments == int(twilio.message(request.sid or "")["num_segments"])
    [emoji] = factories.deliveries(runtime, emoji_id)
    assert emoji.segments == 1 and sent[2].first("Body") == "On its way 🚚"


def test_five_messages_to_one_contact_arrive_in_order(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    # The third one fails once: the later ones must wait for its retry, not overtake it.
    texts = [f"message {i}" for i in range(5)]
    ids = []
    for i, text in enumerate(texts):
        if i == 2:
            twilio.fail_next(1, status=503)
        ids.append(factories.post_to_channel(runtime, org, channel_id, text))
        if i == 2:
            work()  # sends 0, 1; 2 fails and waits for its retry
    work()
    bodies = [m["body"] for m in twilio.sent_to(contact.phone)]
    assert bodies == texts


def test_a_fan_out_keeps_its_sender_to_the_rate_in_every_second_at_twilio(
    runtime: Runtime, twilio: TwilioStandIn, work: factories.Work
) -> None:
    rate = 10
    runtime.settings = runtime.settings.model_copy(update={"send_rate_per_sender": rate})
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, runtime.settings, org, factories.phones(2 * rate + 1)
        )
    preload(runtime)  # as the worker process does: no send waits on a first import
    factories.post_to_channel(runtime, org, channel_id, "Your parcel is on its way")
    work()
    times = [r.received_at for r in twilio.requests]
    assert len(times) == len(contacts)
    # At the stand-in's clock, from one sender number: no window of one second holds more than
    # `rate` SMS, plus the one at its start (8 send threads would send all 21 within it).
    assert most_within(times, 1.0) <= rate + 1


def test_a_later_message_is_not_claimed_while_an_earlier_one_is_on_its_way(
    runtime: Runtime,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(2))
    first = factories.post_to_channel(runtime, org, channel_id, "first " * 300)  # two parts
    second = factories.post_to_channel(runtime, org, channel_id, "second")
    with runtime.sessions() as session, session.begin():
        assert claim_deliveries(session, second, 10) == []
        claimed = claim_deliveries(session, first, 10)
        assert sorted((d.part, d.status) for d in claimed) == [(1, "sending"), (1, "sending")]
        assert claim_deliveries(session, first, 10) == []  # part 2 waits for part 1
    with runtime.sessions() as session, session.begin():
        session.execute(update(Delivery).where(Delivery.message_id == first).values(status="sent"))
    with runtime.sessions() as session, session.begin():
        assert len(claim_deliveries(session, second, 10)) == 2


def test_a_delivery_waits_for_not_before(
    runtime: Runtime, twilio: TwilioStandIn, work: factories.Work
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
        posted = post_channel_message(
            session,
            runtime.settings,
            factories.org_actor(org),
            channel_id,
            Draft.of("Pickup at 9", type="pickup_reminder"),
        )
        # As quiet hours would: the delivery may not go before this.
        not_before = utcnow() + timedelta(seconds=1.5)
        # The stand-in stamps requests with time.monotonic(): the same instant on that clock.
        not_before_monotonic = time.monotonic() + (not_before - utcnow()).total_seconds()
        session.execute(
            update(Delivery)
            .where(Delivery.message_id == posted.message.id)
            .values(not_before=not_before)
        )
    enqueue_posted(runtime.redis, posted)
    work()
    [request] = [r for r in twilio.requests if r.first("To") == contact.phone]
    assert request.received_at >= not_before_monotonic  # at the stand-in, by its clock
    [row] = factories.deliveries(runtime, posted.message.id)
    assert row.status == "sent" and row.sent_at is not None and row.sent_at >= not_before


@pytest.mark.parametrize(("type_", "held"), [("pickup_reminder", True), ("text", False)])
def test_a_notification_published_in_quiet_hours_waits_for_them(
    runtime: Runtime, type_: str, held: bool
) -> None:
    local = datetime.now(ZoneInfo("America/Los_Angeles"))  # +1 415 numbers' zone
    window = f"{local - timedelta(hours=1):%H:%M}-{local + timedelta(hours=1):%H:%M}"
    runtime.settings = runtime.settings.model_copy(update={"quiet_hours": window})
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    message_id = factories.post_to_channel(runtime, org, channel_id, "Pickup at 9", type=type_)
    [row] = factories.deliveries(runtime, message_id)
    if held:
        assert row.not_before is not None and row.not_before > utcnow() + timedelta(minutes=50)
    else:
        assert row.not_before is None


def test_scheduled_publishing_waits_on_the_text_queue_ahead_of_bulk(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    message_id = factories.post_to_channel(
        runtime, org, channel_id, "Later", publish_to_channel_at=time.time() + 60
    )
    assert queues.ALL[0] == queues.TEXT
    registry = Queue(queues.TEXT, connection=runtime.redis).scheduled_job_registry
    [job_id] = registry.get_job_ids()
    job = Job.fetch(job_id, connection=runtime.redis)
    assert (job.func_name, job.args) == ("workers.jobs.publish_scheduled", (message_id,))


def test_deliveries_domain_function_returns_the_delivery_record(
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
    work()
    with runtime.sessions() as session:
        [row] = list_deliveries(session, org.id, message_id)
        body = factories.as_json(serialize.Delivery.of(row))
    assert body["object"] == "delivery" and body["id"].startswith("dlv_")
    assert (body["message_id"], body["subscriber_id"]) == (message_id, contact.id)
    assert (body["to"], body["status"], body["attempts"]) == (contact.phone, "sent", 1)
    assert body["twilio_sid"] == twilio.sent_to(contact.phone)[0]["sid"]
    for name in ("from", "error_code", "error_message", "part", "parts", "segments"):
        assert name in body
    assert isinstance(body["created_at"], int) and isinstance(body["updated_at"], int)


def test_outgoing_sms_uses_the_messaging_service_without_a_number(runtime: Runtime) -> None:
    row = Delivery(
        id="dlv_x",
        to_phone="+14155550100",
        from_phone=None,
        messaging_service_sid="MG" + "a" * 32,
        body="Hi",
        media_urls=[],
    )
    sms = outgoing_sms(runtime.settings, row)
    assert (sms.from_, sms.messaging_service_sid) == (None, "MG" + "a" * 32)
