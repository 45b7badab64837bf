"""Delivery records: listing, finding by id or SID, and monotonic status updates (DESIGN 5.4)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session

from bridge.db import transaction
from bridge.deliveries import apply_status, find_delivery, list_deliveries
from bridge.errors import NotFound
from bridge.messages import Draft, post_message
from bridge.models import Contact, Delivery, DeliveryStatus
from bridge.organizations import is_opted_out
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.threads import create_thread
from tests import factories


def _delivery(session: Session, settings: Settings) -> tuple[Delivery, str]:
    org, _ = factories.organization(session, settings)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(
        session, settings, factories.org_actor(org), "order-1", subscribers=[cora.id]
    )
    message = post_message(
        session, settings, factories.org_actor(org), thread.id, Draft.of("hi")
    ).message
    session.commit()
    [delivery] = list_deliveries(session, org.id, message.id)
    return delivery, org.id


def test_list_and_find(session: Session, settings: Settings) -> None:
    delivery, _ = _delivery(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    with pytest.raises(NotFound):
        list_deliveries(session, other.id, delivery.message_id)
    assert find_delivery(session, delivery.id, None) is delivery
    assert find_delivery(session, "dlv_unknown", None) is None
    apply_status(session, delivery, "queued", message_sid="SM1")
    session.commit()
    assert find_delivery(session, "dlv_unknown", "SM1") is delivery
    assert find_delivery(session, None, None) is None


@pytest.mark.parametrize(
    ("callbacks", "final"),
    [
        (["sent", "delivered"], "delivered"),
        (["delivered", "sent"], "delivered"),  # a late `sent` never overwrites `delivered`
        (["queued", "failed", "sent"], "failed"),
        (["undelivered", "delivered"], "undelivered"),
        (["sending", "mystery"], "sent"),
    ],
)
def test_status_moves_only_forward(
    session: Session, settings: Settings, callbacks: list[str], final: str
) -> None:
    delivery, _ = _delivery(session, settings)
    for status in callbacks:
        apply_status(session, delivery, status)
    session.commit()
    assert delivery.status == final


def test_an_error_code_is_kept_and_21610_opts_the_contact_out(
    session: Session, settings: Settings
) -> None:
    delivery, org_id = _delivery(session, settings)
    outcome = apply_status(session, delivery, "failed", "SM2", 21610, "Unsubscribed recipient")
    session.commit()
    assert outcome.changed and outcome.opted_out
    assert (delivery.status, delivery.error_code, delivery.twilio_sid) == ("failed", 21610, "SM2")
    phone_hash = session.get_one(Contact, delivery.subscriber_id).phone_hash
    assert is_opted_out(session, org_id, phone_hash)


@pytest.mark.parametrize("by", ["d", "MessageSid"])
def test_a_late_sent_cannot_overwrite_a_delivered_that_commits_in_between(
    runtime: Runtime, settings: Settings, by: str
) -> None:
    with runtime.sessions() as session:
        delivery, _ = _delivery(session, settings)
        delivery.status, delivery.twilio_sid = DeliveryStatus.SENDING, "SM9"
        delivery_id = delivery.id
        session.commit()
    key = (delivery_id, None) if by == "d" else (None, "SM9")
    # Two gunicorn workers: the `sent` callback has read the delivery when `delivered` arrives.
    late = runtime.sessions()
    late.begin()
    found = find_delivery(late, *key)
    assert found is not None and found.status == "sending"

    def deliver() -> None:
        with transaction(runtime.sessions) as session:
            row = find_delivery(session, *key)
            assert row is not None
            apply_status(session, row, "delivered")

    other = threading.Thread(target=deliver)
    other.start()
    other.join(0.5)  # without the row lock it commits `delivered` now, before `sent` writes
    apply_status(late, found, "sent")
    late.commit()
    late.close()
    other.join(10)

    assert not other.is_alive()
    with runtime.sessions() as session:
        assert session.get_one(Delivery, delivery_id).status == "delivered"
