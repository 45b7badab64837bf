"""POST /twilio/status: found by `d` or MessageSid, applied monotonically, duplicates harmless."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from bridge.db import transaction
from bridge.messages import Draft, post_message
from bridge.models import Contact, Delivery, DeliveryStatus
from bridge.organizations import is_opted_out, sender_numbers
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.threads import create_thread
from tests import factories
from tests.fixtures.twilio import payloads

AUTH_TOKEN = "test-auth-token-status-77aa"
BASE = factories.BASE_URL
SID = "SM" + "5" * 32


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with Twilio credentials."""
    return factories.with_twilio(settings, AUTH_TOKEN)


@pytest.fixture
def delivery(runtime: Runtime, settings: Settings) -> Delivery:
    """One pending delivery to Jane, with the Twilio SID its send got."""
    with transaction(runtime.sessions) as session:
        org, _ = factories.organization(session, settings)
        jane = factories.contact(session, settings, org)
        actor = factories.org_actor(org)
        thread, _ = create_thread(session, settings, actor, "order-9", subscribers=[jane.id])
        post_message(session, settings, actor, thread.id, Draft.of("Out for delivery"))
        row = session.execute(select(Delivery)).scalar_one()
        row.twilio_sid = SID
        row.status = DeliveryStatus.SENDING
    return row


def post_status(client: FlaskClient, status: str, delivery_id: str | None, sid: str = SID) -> int:
    path = f"/twilio/status?d={delivery_id}" if delivery_id else "/twilio/status"
    payload = payloads.load(f"status_{status}", MessageSid=sid, SmsSid=sid)
    return factories.post_signed(client, AUTH_TOKEN, path, payload).status_code


def current(runtime: Runtime, delivery_id: str) -> Delivery:
    with runtime.sessions() as session:
        row = session.get_one(Delivery, delivery_id)
        return row


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("bridge_status_callbacks_total", {"outcome": outcome})
    return value or 0.0


SEQUENCES = [
    ("in order", ["queued", "sending", "sent", "delivered"], "delivered", None),
    ("reversed", ["delivered", "sent", "sending", "queued"], "delivered", None),
    ("duplicated", ["sent", "sent", "delivered", "delivered", "sent"], "delivered", None),
    ("read receipt", ["sent", "read", "delivered"], "delivered", None),
    ("undelivered, then late ones", ["undelivered", "sent", "queued"], "undelivered", 30003),
    ("failed, duplicated", ["sent", "failed", "failed", "sent"], "failed", 30007),
    ("failed after delivered", ["delivered", "failed"], "delivered", None),
]


@pytest.mark.parametrize("by", ["d", "MessageSid"])
@pytest.mark.parametrize(
    ("case", "statuses", "final", "code"), SEQUENCES, ids=[s[0] for s in SEQUENCES]
)
def test_callbacks_end_in_the_right_state_whatever_their_order(
    client: FlaskClient,
    runtime: Runtime,
    delivery: Delivery,
    by: str,
    case: str,
    statuses: list[str],
    final: str,
    code: int | None,
) -> None:
    delivery_id = delivery.id if by == "d" else None

    answers = [post_status(client, status, delivery_id) for status in statuses]

    assert answers == [200] * len(statuses)
    row = current(runtime, delivery.id)
    assert (row.status, row.error_code, row.twilio_sid) == (final, code, SID), case
    if code is not None:
        assert row.error_message


def test_the_d_parameter_finds_a_delivery_before_its_sid_was_saved(
    client: FlaskClient, runtime: Runtime, delivery: Delivery
) -> None:
    with transaction(runtime.sessions) as session:
        session.get_one(Delivery, delivery.id).twilio_sid = None

    assert post_status(client, "sent", delivery.id, sid="SM" + "6" * 32) == 200

    row = current(runtime, delivery.id)
    assert (row.status, row.twilio_sid) == ("sent", "SM" + "6" * 32)


def test_21610_opts_the_contact_out(
    client: FlaskClient, runtime: Runtime, delivery: Delivery
) -> None:
    path = f"/twilio/status?d={delivery.id}"
    payload = payloads.load("status_failed", MessageSid=SID, SmsSid=SID, ErrorCode="21610")
    assert factories.post_signed(client, AUTH_TOKEN, path, payload).status_code == 200

    row = current(runtime, delivery.id)
    assert (row.status, row.error_code) == ("failed", 21610)
    with runtime.sessions() as session:
        contact = session.get_one(Contact, row.subscriber_id)
        assert is_opted_out(session, row.organization_id, contact.phone_hash)


def _opted_out(runtime: Runtime, delivery: Delivery) -> bool:
    with runtime.sessions() as session:
        contact = session.get_one(Contact, delivery.subscriber_id)
        return is_opted_out(session, delivery.organization_id, contact.phone_hash)


def _start(runtime: Runtime, settings: Settings, client: FlaskClient, delivery: Delivery) -> None:
    # The contact texts START to the organization's number, through the real webhook.
    with runtime.sessions() as session:
        contact = session.get_one(Contact, delivery.subscriber_id)
        [to] = sender_numbers(session, delivery.organization_id)
    payload = payloads.inbound(contact.phone, to, "START")
    assert factories.post_signed(client, AUTH_TOKEN, "/twilio/sms", payload).status_code == 200


def test_a_captured_21610_replayed_after_start_does_not_opt_out_again(
    client: FlaskClient, runtime: Runtime, settings: Settings, delivery: Delivery
) -> None:
    path = f"/twilio/status?d={delivery.id}"
    captured = payloads.load("status_failed", MessageSid=SID, SmsSid=SID, ErrorCode="21610")
    assert factories.post_signed(client, AUTH_TOKEN, path, captured).status_code == 200
    assert _opted_out(runtime, delivery)
    _start(runtime, settings, client, delivery)
    assert not _opted_out(runtime, delivery)

    for _ in range(2):  # replayed, signature and all, by the way it was sent or by its SID
        assert factories.post_signed(client, AUTH_TOKEN, path, captured).status_code == 200
        assert (
            factories.post_signed(client, AUTH_TOKEN, "/twilio/status", captured).status_code == 200
        )

    assert not _opted_out(runtime, delivery)
    assert (current(runtime, delivery.id).status, current(runtime, delivery.id).error_code) == (
        "failed",
        21610,
    )


def test_a_late_21610_about_an_sms_sent_before_start_does_not_opt_out(
    client: FlaskClient, runtime: Runtime, settings: Settings, delivery: Delivery
) -> None:
    # The first word about the SMS, but the contact has said START since it was sent.
    _start(runtime, settings, client, delivery)
    path = f"/twilio/status?d={delivery.id}"
    payload = payloads.load("status_failed", MessageSid=SID, SmsSid=SID, ErrorCode="21610")
    assert factories.post_signed(client, AUTH_TOKEN, path, payload).status_code == 200
    assert current(runtime, delivery.id).status == "failed"
    assert not _opted_out(runtime, delivery)


def test_an_unknown_delivery_is_answered_200_and_counted(
    client: FlaskClient, runtime: Runtime, delivery: Delivery
) -> None:
    before = counted("unknown")

    assert post_status(client, "delivered", "dlv_nope", sid="SM" + "7" * 32) == 200
    assert post_status(client, "delivered", None, sid="SM" + "8" * 32) == 200

    assert counted("unknown") == before + 2
    assert current(runtime, delivery.id).status == "sending"


@pytest.mark.parametrize("signature", ["missing", "other token", "other delivery"])
def test_a_bad_signature_is_403_and_changes_nothing(
    client: FlaskClient, runtime: Runtime, delivery: Delivery, signature: str
) -> None:
    path = f"/twilio/status?d={delivery.id}"
    payload = payloads.load("status_delivered", MessageSid=SID, SmsSid=SID)
    signed_path = "/twilio/status?d=dlv_other" if signature == "other delivery" else path
    token = "wrong" if signature == "other token" else AUTH_TOKEN
    body, headers = payloads.signed(token, BASE, signed_path, payload)
    if signature == "missing":
        headers.pop("X-Twilio-Signature")
    before = counted("rejected")

    answer = client.post(path, data=body, headers=headers)

    assert answer.status_code == 403
    assert answer.get_json()["error"]["param"] == "X-Twilio-Signature"
    assert current(runtime, delivery.id).status == "sending"
    assert counted("rejected") == before + 1


def test_every_recorded_status_payload_is_accepted(
    client: FlaskClient, runtime: Runtime, delivery: Delivery
) -> None:
    for status in ["queued", "sending", "sent", "delivered", "undelivered", "failed", "read"]:
        assert post_status(client, status, delivery.id) == 200, status
    assert current(runtime, delivery.id).status == "delivered"


@pytest.mark.parametrize(
    ("query", "changes", "final", "code"),
    [
        ("?d=dlv_%00x", {}, "failed", 30007),  # a `d` that is no delivery id: found by SID
        (f"?d=dlv_{'9' * 200}", {}, "failed", 30007),
        ("", {"ErrorCode": "99999999999"}, "failed", None),  # beyond 32 bits: dropped, status kept
        ("", {"ErrorCode": "-2147483649"}, "failed", None),
        ("", {"ErrorCode": "3\x000007", "ErrorMessage": "bad\x00news"}, "failed", None),
        ("", {"MessageSid": "SM\x00", "SmsSid": "SM\x00"}, "sending", None),  # unknown: 200
        ("", {"MessageSid": "SM" + "5" * 80, "SmsSid": "x"}, "sending", None),
    ],
)
def test_odd_values_in_a_callback_never_make_a_500(
    client: FlaskClient,
    runtime: Runtime,
    delivery: Delivery,
    query: str,
    changes: dict[str, str],
    final: str,
    code: int | None,
) -> None:
    path = f"/twilio/status{query}"
    payload = payloads.load("status_failed", **{"MessageSid": SID, "SmsSid": SID, **changes})
    assert factories.post_signed(client, AUTH_TOKEN, path, payload).status_code == 200

    row = current(runtime, delivery.id)
    assert (row.status, row.error_code, row.twilio_sid) == (final, code, SID)
