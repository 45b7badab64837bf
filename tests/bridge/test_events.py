"""Events: the outbox row, the objects events carry, the log, dispatch and the retry schedule."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bridge.channels import get_or_create_channel
from bridge.db import transaction, utcnow
from bridge.errors import NotFound, ValidationError
from bridge.event_dispatch import dispatch_events, resend_event
from bridge.event_sending import (
    RETRY_SCHEDULE,
    claim_due,
    claim_lease,
    record_attempt,
    retry_delay,
)
from bridge.events import (
    EVENT_OBJECTS,
    contact_object,
    delivery_object,
    event_body,
    get_event,
    inbound_object,
    list_events,
    message_object,
    record_event,
    record_events,
    take_recorded,
)
from bridge.events_sender import AttemptResult
from bridge.messages import Draft, post_channel_message
from bridge.models import (
    Delivery,
    Event,
    EventDelivery,
    InboundSms,
    WebhookAttempt,
    WebhookEndpoint,
)
from bridge.organizations import opt_out
from bridge.runtime import Runtime
from bridge.webhook_endpoints import DISABLED_REASON, create_endpoint, get_endpoint
from tests import factories

URL = "http://127.0.0.1:9/hooks"


def test_an_event_is_one_row_committed_with_the_change(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        contact = factories.contact(session, runtime.settings, org)
        event = record_event(session, org.id, "contact.opted_out", contact_object(session, contact))
        assert take_recorded(session) == [event.id]
    with runtime.sessions() as session:
        stored = get_event(session, org.id, event.id)
        data = json.loads(event_body(stored))
    assert data["object"] == "event" and data["id"].startswith("evt_")
    assert data["type"] == "contact.opted_out"
    assert data["organization_id"] == org.id
    assert data["data"]["object"]["id"] == contact.id
    assert isinstance(data["created_at"], int)


def test_a_transaction_rolled_back_writes_no_event(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with pytest.raises(RuntimeError), transaction(runtime.sessions) as session:
        contact = factories.contact(session, runtime.settings, org)
        record_event(session, org.id, "contact.opted_out", contact_object(session, contact))
        raise RuntimeError("the change fails after the event was recorded")
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar_one() == 0


def test_many_events_in_one_insert_commit_together(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    items = [
        ("delivery.updated", {"object": "delivery", "id": f"dlv_{i}", "to": 'Zoë "Z" 🚚'})
        for i in range(3)
    ]
    with pytest.raises(RuntimeError), transaction(runtime.sessions) as session:
        record_events(session, org.id, items)
        raise RuntimeError("rolled back")
    with transaction(runtime.sessions) as session:
        ids = record_events(session, org.id, items)
        assert take_recorded(session) == ids
        with pytest.raises(ValueError, match="carries a delivery"):
            record_events(session, org.id, [("delivery.updated", {"object": "message"})])
    with runtime.sessions() as session:
        rows, _ = list_events(session, org.id, "delivery.updated", 50, None)
    # Newest first: the batch's events in its order, each with its own object as given.
    assert [r.id for r in rows] == ids[::-1]
    assert [r.data for r in rows] == [{"object": o} for _, o in items[::-1]]


def test_an_event_must_carry_the_object_of_its_type(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session:
        with pytest.raises(ValueError, match="unknown event type"):
            record_event(session, org.id, "message.deleted", {"object": "message"})
        with pytest.raises(ValueError, match="carries a message"):
            record_event(session, org.id, "message.created", {"object": "delivery"})


def test_each_event_type_is_built_from_the_objects_the_api_returns(runtime: Runtime) -> None:
    settings = runtime.settings
    org = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        contact = factories.contact(session, settings, org)
        channel, _ = get_or_create_channel(session, org.id, [contact.id])
        posted = post_channel_message(
            session, settings, factories.org_actor(org), channel.id, Draft.of("Your order shipped")
        )
        session.flush()
        message = posted.message
        delivery = session.execute(
            select(Delivery).where(Delivery.message_id == message.id)
        ).scalar_one()
        inbound = InboundSms(
            id="in_test1",
            message_sid="SM" + "1" * 32,
            organization_id=org.id,
            from_phone=contact.phone,
            to_phone="+16280000000",
            body="STOP",
            status="keyword",
            keyword="STOP",
        )
        session.add(inbound)
        session.flush()
        objects = {
            "message.created": message_object(session, message),
            "message.updated": message_object(session, message),
            "delivery.updated": delivery_object(delivery),
            "inbound.received": inbound_object(inbound),
            "contact.opted_in": contact_object(session, contact),
        }
        opt_out(session, org.id, contact.phone_hash)
        objects["contact.opted_out"] = contact_object(session, contact)
        events = {t: record_event(session, org.id, t, o) for t, o in objects.items()}
    assert set(events) == set(EVENT_OBJECTS)
    with runtime.sessions() as session:
        stored = {
            t: json.loads(event_body(get_event(session, org.id, e.id))) for t, e in events.items()
        }
    assert stored["message.created"]["data"]["object"]["id"] == message.id
    assert stored["message.created"]["data"]["object"]["channel_id"] == channel.id
    assert stored["delivery.updated"]["data"]["object"]["status"] == "pending"
    assert stored["inbound.received"]["data"]["object"]["keyword"] == "STOP"
    assert stored["contact.opted_in"]["data"]["object"]["opted_out"] is False
    assert stored["contact.opted_out"]["data"]["object"]["opted_out"] is True
    for event_type, data in stored.items():
        assert data["data"]["object"]["object"] == EVENT_OBJECTS[event_type]


def test_the_log_is_newest_first_with_a_type_filter_and_a_cursor(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    other = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        contact = factories.contact(session, runtime.settings, org)
        obj = contact_object(session, contact)
        ids = [
            record_event(session, org.id, t, obj).id
            for t in ("contact.opted_out", "contact.opted_in", "contact.opted_out")
        ]
        foreign = record_event(session, other.id, "contact.opted_out", {"object": "contact"}).id
    with runtime.sessions() as session:
        rows, more = list_events(session, org.id, None, 2, None)
        assert [r.id for r in rows] == ids[::-1][:2] and more
        rows, more = list_events(session, org.id, None, 2, rows[-1].id)
        assert [r.id for r in rows] == [ids[0]] and not more
        rows, _ = list_events(session, org.id, "contact.opted_out", 50, None)
        assert [r.id for r in rows] == [ids[2], ids[0]]
        with pytest.raises(ValidationError) as bad:
            list_events(session, org.id, "nope", 50, None)
        assert bad.value.param == "type"
        with pytest.raises(NotFound) as missing:  # another list's cursor names nothing here
            list_events(session, org.id, None, 50, foreign)
        assert missing.value.param == "before"
        with pytest.raises(NotFound):
            get_event(session, org.id, foreign)


def test_dispatch_goes_to_enabled_subscribed_endpoints_that_existed_then(
    runtime: Runtime,
) -> None:
    settings = runtime.settings
    org = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        every = create_endpoint(session, settings, org.id, URL, ["*"])
        opted = create_endpoint(session, settings, org.id, URL, ["contact.opted_out"])
        messages_only = create_endpoint(session, settings, org.id, URL, ["message.created"])
        disabled = create_endpoint(session, settings, org.id, URL, ["*"], enabled=False)
    with transaction(runtime.sessions) as session:
        event = record_event(session, org.id, "contact.opted_out", {"object": "contact"})
    with transaction(runtime.sessions) as session:
        later = create_endpoint(session, settings, org.id, URL, ["*"])
    with transaction(runtime.sessions) as session:
        touched = dispatch_events(session, [event.id], utcnow())
        assert dispatch_events(session, [event.id], utcnow()) == []  # once only
    assert touched == sorted([every.id, opted.id])
    assert messages_only.id not in touched and disabled.id not in touched
    assert later.id not in touched


def test_the_retry_schedule_with_jitter_then_failed() -> None:
    rng = random.Random(7)
    assert [d.total_seconds() for d in RETRY_SCHEDULE] == [
        5, 300, 1800, 7200, 18000, 36000, 36000,
    ]  # fmt: skip
    for attempts, base in enumerate(RETRY_SCHEDULE, start=1):
        for _ in range(20):
            delay = retry_delay(attempts, rng)
            assert delay is not None and base * 0.9 <= delay <= base * 1.1
    assert retry_delay(len(RETRY_SCHEDULE) + 1, rng) is None


def _one_event(
    runtime: Runtime, org_id: str, events: list[str] | None = None
) -> tuple[WebhookEndpoint, Event]:
    with transaction(runtime.sessions) as session:
        endpoint = create_endpoint(session, runtime.settings, org_id, URL, events or ["*"])
    with transaction(runtime.sessions) as session:
        event = record_event(session, org_id, "contact.opted_out", {"object": "contact"})
    with transaction(runtime.sessions) as session:
        dispatch_events(session, [event.id], utcnow())
    return endpoint, event


FAIL = AttemptResult(False, 500, "HTTP 500", 12, "boom")
OK = AttemptResult(True, 204, None, 3, None)


def test_eight_failed_attempts_fail_the_delivery_each_recorded(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    endpoint, event = _one_event(runtime, org.id)
    now = utcnow()
    for attempt in range(1, 9):
        (claimed,) = claim_due(runtime.sessions, runtime.settings, endpoint.id, now)
        recorded = record_attempt(runtime.sessions, claimed, FAIL, now, now)
        if attempt <= 7:
            assert recorded.status == "pending"
            assert recorded.next_attempt_at is not None
            assert claim_due(runtime.sessions, runtime.settings, endpoint.id, now) == []
            now = recorded.next_attempt_at  # time moved, not slept
        else:
            assert recorded.status == "failed" and recorded.next_attempt_at is None
    with runtime.sessions() as session:
        attempts = session.execute(select(WebhookAttempt)).scalars().all()
        delivery = session.execute(select(EventDelivery)).scalar_one()
    assert len(attempts) == 8 and {a.status_code for a in attempts} == {500}
    assert all(a.response_body == "boom" and a.event_id == event.id for a in attempts)
    assert delivery.status == "failed" and delivery.attempts == 8


def test_an_endpoint_failing_for_5_days_is_disabled(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    endpoint, _ = _one_event(runtime, org.id)
    with transaction(runtime.sessions) as session:
        second = record_event(session, org.id, "contact.opted_in", {"object": "contact"})
    with transaction(runtime.sessions) as session:
        dispatch_events(session, [second.id], utcnow())
    start = utcnow()
    (claimed, other) = claim_due(runtime.sessions, runtime.settings, endpoint.id, start)
    record_attempt(runtime.sessions, claimed, FAIL, start, start)
    later = start + timedelta(days=4, hours=23)
    record_attempt(runtime.sessions, other, FAIL, later, later)
    with runtime.sessions() as session:
        assert get_endpoint(session, org.id, endpoint.id).enabled
    claimed, *_ = claim_due(
        runtime.sessions, runtime.settings, endpoint.id, later + timedelta(hours=3)
    )
    moved = start + timedelta(days=5, minutes=1)
    assert record_attempt(runtime.sessions, claimed, FAIL, moved, moved).endpoint_disabled
    with runtime.sessions() as session:
        disabled = get_endpoint(session, org.id, endpoint.id)
        statuses = set(session.execute(select(EventDelivery.status)).scalars())
    assert not disabled.enabled and disabled.disabled_reason == DISABLED_REASON
    assert statuses == {"canceled"}


def test_a_success_resets_the_failure_clock(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    endpoint, _ = _one_event(runtime, org.id)
    start = utcnow()
    (claimed,) = claim_due(runtime.sessions, runtime.settings, endpoint.id, start)
    record_attempt(runtime.sessions, claimed, FAIL, start, start)
    retry = start + timedelta(seconds=6)
    (claimed,) = claim_due(runtime.sessions, runtime.settings, endpoint.id, retry)
    assert record_attempt(runtime.sessions, claimed, OK, retry, retry).status == "succeeded"
    with runtime.sessions() as session:
        assert get_endpoint(session, org.id, endpoint.id).failing_since is None


def test_after_a_failure_the_endpoints_other_events_wait_for_the_retry(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    endpoint, _ = _one_event(runtime, org.id)
    with transaction(runtime.sessions) as session:
        more = [record_event(session, org.id, "contact.opted_in", {"object": "contact"}).id]
    with transaction(runtime.sessions) as session:
        dispatch_events(session, more, utcnow())
    now = utcnow()
    (first,) = claim_due(runtime.sessions, runtime.settings, endpoint.id, now, limit=1)
    recorded = record_attempt(runtime.sessions, first, FAIL, now, now)
    assert claim_due(runtime.sessions, runtime.settings, endpoint.id, now) == []
    assert recorded.next_attempt_at is not None
    due = claim_due(runtime.sessions, runtime.settings, endpoint.id, recorded.next_attempt_at)
    assert len(due) == 2


def test_a_claim_left_by_a_killed_worker_is_taken_again_after_the_lease(
    runtime: Runtime,
) -> None:
    org = factories.committed_organization(runtime)
    endpoint, _ = _one_event(runtime, org.id)
    now = utcnow()
    assert len(claim_due(runtime.sessions, runtime.settings, endpoint.id, now)) == 1
    # The worker dies here: nothing recorded. Within the lease nobody else takes it...
    assert claim_due(runtime.sessions, runtime.settings, endpoint.id, now) == []
    # ...after it, another worker does.
    later = now + claim_lease(runtime.settings) + timedelta(seconds=1)
    assert len(claim_due(runtime.sessions, runtime.settings, endpoint.id, later)) == 1


def test_resend_starts_a_new_round_for_each_subscribed_endpoint(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    endpoint, event = _one_event(runtime, org.id)
    now = utcnow()
    (claimed,) = claim_due(runtime.sessions, runtime.settings, endpoint.id, now)
    record_attempt(runtime.sessions, claimed, OK, now, now)
    with transaction(runtime.sessions) as session:
        assert resend_event(session, org.id, event.id) == [endpoint.id]
    with runtime.sessions() as session:
        delivery = session.execute(select(EventDelivery)).scalar_one()
    assert delivery.status == "pending" and delivery.attempts == 0
    other = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session, pytest.raises(NotFound):
        resend_event(session, other.id, event.id)
