"""Retention (DESIGN 5.9): with time moved past RETENTION_DAYS, deliveries, inbound SMS records,
events (with their rows per endpoint) and webhook attempts go, in batches; messages, threads,
channels and contacts stay; 0 keeps everything.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from bridge.db import transaction, utcnow
from bridge.event_dispatch import dispatch_events
from bridge.inbound import record_inbound_sms
from bridge.messages import Draft, post_message
from bridge.models import (
    Channel,
    Contact,
    Delivery,
    Event,
    EventDelivery,
    InboundSms,
    Message,
    Thread,
    WebhookAttempt,
)
from bridge.organizations import sender_numbers
from bridge.retention import PURGES, purge_expired
from bridge.runtime import Runtime
from bridge.threads import create_thread
from bridge.webhook_endpoints import create_endpoint
from tests import factories
from tests.fixtures.twilio import payloads

MODELS = (
    Delivery,
    InboundSms,
    Event,
    EventDelivery,
    WebhookAttempt,
    Message,
    Thread,
    Channel,
    Contact,
)
PURGED = ("deliveries", "inbound_sms", "webhook_attempts", "events")


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in MODELS
        }


def conversation(runtime: Runtime, messages: int = 3) -> None:
    """Two contacts, `messages` messages out and one SMS in, relayed: 2n + 1 deliveries."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        org, _ = factories.organization(session, settings)
        create_endpoint(session, settings, org.id, "http://127.0.0.1:9/hook", ["*"])
        session.flush()
        jane = factories.contact(session, settings, org, "Jane")
        omar = factories.contact(session, settings, org, "Omar")
        actor = factories.org_actor(org)
        thread, _ = create_thread(
            session, settings, actor, "order-9", subscribers=[jane.id, omar.id]
        )
        for n in range(messages):
            post_message(session, settings, actor, thread.id, Draft.of(f"Update {n}"))
        to = sender_numbers(session, org.id)[0]
    with transaction(runtime.sessions) as session:
        record_inbound_sms(session, settings, payloads.inbound(jane.phone, to, "Thanks"), None)
    # The events all that recorded go to the endpoint, and each got one attempt.
    with transaction(runtime.sessions) as session:
        dispatch_events(session, session.scalars(select(Event.id)).all(), utcnow())
        session.flush()
        for n, row in enumerate(session.scalars(select(EventDelivery)).all()):
            session.add(
                WebhookAttempt(
                    id=f"wha_{n}",
                    delivery_id=row.id,
                    event_id=row.event_id,
                    endpoint_id=row.endpoint_id,
                    organization_id=row.organization_id,
                    status_code=500,
                )
            )


def purged(before: dict[str, int]) -> dict[str, int]:
    return {table: before[table] for table in PURGED}


def test_records_past_retention_go_and_the_conversation_stays(runtime: Runtime) -> None:
    conversation(runtime)
    before = counts(runtime)
    assert before["deliveries"] == 7 and before["inbound_sms"] == 1
    assert before["events"] >= 5 and before["webhook_attempts"] == before["event_deliveries"] >= 5
    nothing = dict.fromkeys(PURGED, 0)

    assert purge_expired(runtime.engine, runtime.settings) == nothing
    almost = utcnow() + timedelta(days=179)
    assert purge_expired(runtime.engine, runtime.settings, almost) == nothing
    later = utcnow() + timedelta(days=181)
    assert purge_expired(runtime.engine, runtime.settings, later, batch=4) == purged(before)

    after = counts(runtime)
    assert {k: after[k] for k in (*PURGED, "event_deliveries")} == dict.fromkeys(
        (*PURGED, "event_deliveries"), 0
    )
    kept = ("messages", "threads", "channels", "contacts")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}


def test_zero_keeps_everything(runtime: Runtime) -> None:
    conversation(runtime)
    keep_all = runtime.settings.model_copy(update={"retention_days": 0})

    assert purge_expired(runtime.engine, keep_all, utcnow() + timedelta(days=10_000)) == {}
    assert counts(runtime)["deliveries"] == 7


def test_one_statement_deletes_at_most_a_batch(runtime: Runtime) -> None:
    conversation(runtime, messages=5)  # 11 deliveries
    later = utcnow() + timedelta(days=200)
    with runtime.engine.begin() as connection:
        assert PURGES["deliveries"](connection, later - timedelta(days=180), 4) == 4
    assert counts(runtime)["deliveries"] == 7
    before = counts(runtime)
    assert purge_expired(runtime.engine, runtime.settings, later, batch=4, max_batches=1) == {
        "deliveries": 4,
        "inbound_sms": 1,
        "webhook_attempts": min(4, before["webhook_attempts"]),
        "events": min(4, before["events"]),
    }
    assert counts(runtime)["deliveries"] == 3


def test_a_recent_status_keeps_an_old_delivery(runtime: Runtime) -> None:
    conversation(runtime, messages=1)
    later = utcnow() + timedelta(days=181)
    with transaction(runtime.sessions) as session:
        one = session.execute(select(Delivery).limit(1)).scalar_one()
        one.updated_at = later - timedelta(days=1)  # a callback came recently

    assert purge_expired(runtime.engine, runtime.settings, later)["deliveries"] == 2
    with runtime.sessions() as session:
        assert session.scalars(select(Delivery.id)).all() == [one.id]
