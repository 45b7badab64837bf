"""Events recorded by the domain functions that make each change, delivered to a real receiver.

Each change goes through the function the web or worker process calls (posting, claiming, the
Twilio status callback, an inbound SMS, a failed send), the events it recorded go out through the
`events` queue to `tests/standin/receiver.py`, and each arrives once, signed so `standardwebhooks`
accepts it, carrying the object exactly as the API returns it.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from rq import Queue
from sqlalchemy import func, select
from standardwebhooks import Webhook

from bridge.claims import claim_deliveries
from bridge.db import transaction, utcnow
from bridge.deliveries import apply_status
from bridge.errors import PermanentSendError
from bridge.events import EVENT_OBJECTS
from bridge.inbound import record_inbound_sms
from bridge.messages import Draft, edit_message, get_message, post_channel_message
from bridge.models import Delivery, Event, SenderNumber
from bridge.organizations import opt_out
from bridge.runtime import Runtime
from bridge.sending import UNSUBSCRIBED_CODE, record_failure, record_sent
from bridge.serialize import Delivery as DeliveryModel
from bridge.serialize import load_message
from bridge.twilio_client import SendResult
from tests import factories
from tests.standin.receiver import Receiver
from tests.standin.twilio import TwilioStandIn
from tests.workers.test_events import (  # noqa: F401  (fixtures)
    endpoint_for,
    events_runtime,
    work_events,
)
from workers import queues
from workers.jobs import publish_scheduled


def test_every_change_records_its_event_and_each_arrives_once_signed(
    events_runtime: Runtime,  # noqa: F811
    receiver: Receiver,
) -> None:
    rt, settings = events_runtime, events_runtime.settings
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    with transaction(rt.sessions) as session:
        channel_id, (_, dora) = factories.channel_of(session, settings, org, factories.phones(2))
        to_phone = session.execute(
            select(SenderNumber.phone).where(SenderNumber.organization_id == org.id)
        ).scalar_one()
    actor = factories.org_actor(org)
    with transaction(rt.sessions) as session:  # message.created
        message = post_channel_message(
            session, settings, actor, channel_id, Draft.of("Shipped")
        ).message
    with transaction(rt.sessions) as session:  # message.updated
        edit_message(session, actor, message.id, {"text": "Shipped today"})
    with transaction(rt.sessions) as session:  # delivery.updated: pending -> sending
        claimed = claim_deliveries(session, message.id, 10)
    assert len(claimed) == 2
    first, second = sorted(claimed, key=lambda d: d.subscriber_id == dora.id)
    with transaction(rt.sessions) as session:  # delivery.updated: sent, then delivered
        record_sent(
            session, first.id, SendResult(sid="SM" + "a" * 32, status="queued", num_segments=1)
        )
        row = session.get_one(Delivery, first.id)
        apply_status(session, row, "delivered")
    with transaction(rt.sessions) as session:  # delivery.updated (failed) + contact.opted_out
        record_failure(session, settings, second.id, PermanentSendError("no", UNSUBSCRIBED_CODE))
    with transaction(rt.sessions) as session:  # inbound.received + contact.opted_in + meta
        params = {"MessageSid": "SM" + "b" * 32, "From": dora.phone, "To": to_phone}
        record_inbound_sms(session, settings, {**params, "Body": "START"})
    with transaction(rt.sessions) as session:  # a repeated MessageSid records nothing
        record_inbound_sms(session, settings, {**params, "Body": "START"})
    with transaction(rt.sessions) as session:
        stored = get_message(session, org.id, message.id)
        message_json = factories.as_json(load_message(session, stored))
        delivery_json = factories.as_json(DeliveryModel.of(session.get_one(Delivery, first.id)))
        recorded = Counter(session.execute(select(Event.type)).scalars())

    assert set(recorded) == set(EVENT_OBJECTS)
    assert recorded["inbound.received"] == 1 and recorded["contact.opted_in"] == 1
    assert recorded["contact.opted_out"] == 1
    assert recorded["message.created"] == 2  # the post, and the START's meta message
    assert recorded["message.updated"] == 1
    # claimed (2), sent, delivered, failed
    assert recorded["delivery.updated"] == 5

    work_events(rt.redis)
    got = receiver.wait_for(sum(recorded.values()))
    time.sleep(0.2)
    assert len(receiver.event_ids()) == len(set(receiver.event_ids())) == sum(recorded.values())
    verified = [Webhook(endpoint.secret).verify(r.body, r.headers) for r in got]
    assert Counter(e["type"] for e in verified) == recorded
    by_type = {e["type"]: e["data"]["object"] for e in verified}
    assert by_type["contact.opted_out"]["id"] == dora.id
    assert by_type["contact.opted_out"]["opted_out"] is True
    assert by_type["contact.opted_in"]["opted_out"] is False
    assert by_type["inbound.received"]["status"] == "keyword"
    assert by_type["message.updated"] == message_json  # what GET /v1/messages/<id> answers
    delivered = [
        e["data"]["object"]
        for e in verified
        if e["type"] == "delivery.updated" and e["data"]["object"]["status"] == "delivered"
    ]
    assert delivered == [delivery_json]


def test_a_change_rolled_back_records_no_event(events_runtime: Runtime) -> None:  # noqa: F811
    rt, settings = events_runtime, events_runtime.settings
    org = factories.committed_organization(rt)
    with transaction(rt.sessions) as session:
        channel_id, _ = factories.channel_of(session, settings, org, factories.phones(1))
    with pytest.raises(RuntimeError), transaction(rt.sessions) as session:
        post_channel_message(
            session, settings, factories.org_actor(org), channel_id, Draft.of("Hi")
        )
        raise RuntimeError("the request fails after the change")
    with rt.sessions() as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar_one() == 0
    assert Queue(queues.EVENTS, connection=rt.redis).count == 0  # and no dispatch was queued


def test_a_fan_out_reports_its_deliveries_in_bulk(
    events_runtime: Runtime,  # noqa: F811
    receiver: Receiver,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url, ["delivery.updated"])
    with transaction(rt.sessions) as session:
        channel_id, contacts = factories.channel_of(session, rt.settings, org, factories.phones(21))
        opt_out(session, org.id, contacts[0].phone_hash)
    with factories.statements(rt.engine) as statements:
        factories.post_to_channel(rt, org, channel_id, "Your order is on its way")
        work()
    inserts = [s for s in statements if s.startswith("INSERT INTO events")]

    assert len(twilio.requests) == 20
    # The skipped row at publish, then each SMS claimed (sending) and saved (sent).
    got = receiver.wait_for(1 + 20 + 20)
    time.sleep(0.2)
    assert len(receiver.event_ids()) == len(set(receiver.event_ids())) == 41
    statuses = Counter(
        Webhook(endpoint.secret).verify(r.body, r.headers)["data"]["object"]["status"] for r in got
    )
    assert statuses == {"skipped": 1, "sending": 20, "sent": 20}
    # Recorded a batch at a time (a claim, a batch of saved SIDs), not an INSERT per SMS.
    assert len(inserts) < 20


def test_a_scheduled_message_published_by_its_job_is_updated(
    events_runtime: Runtime,  # noqa: F811
) -> None:
    rt = events_runtime
    org = factories.committed_organization(rt)
    with transaction(rt.sessions) as session:
        channel_id, _ = factories.channel_of(session, rt.settings, org, factories.phones(1))
    message_id = factories.post_to_channel(
        rt, org, channel_id, "Later", publish_to_channel_at=time.time() + 60
    )
    with transaction(rt.sessions) as session:
        message = get_message(session, org.id, message_id)
        message.publish_to_channel_at = utcnow() - timedelta(seconds=1)
    assert publish_scheduled(message_id) == "published"
    with rt.sessions() as session:
        events = list(session.execute(select(Event).order_by(Event.seq)).scalars())
    assert [e.type for e in events][:2] == ["message.created", "message.updated"]
    assert events[0].data["object"]["published_at"] is None
    assert events[1].data["object"]["published_at"] is not None
