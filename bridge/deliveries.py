"""Delivery records: listing them, and Twilio's status callbacks applied monotonically."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.events import record_deliveries
from bridge.messages import get_message
from bridge.models import Contact, Delivery, DeliveryStatus
from bridge.organizations import opt_out
from bridge.twilio_client import UNSUBSCRIBED_CODE, UNSUBSCRIBED_SOURCE
from bridge.twilio_webhooks import Params, first_param, storable_params

log = logging.getLogger(__name__)

# What a status callback's `d` and MessageSid can be; anything else is treated as absent.
_DELIVERY_ID = re.compile(r"\Adlv_[A-Za-z0-9]{1,36}\Z")
_MESSAGE_SID = re.compile(r"\A[A-Za-z0-9]{2,64}\Z")
_MAX_INT32 = 2**31 - 1  # deliveries.error_code is a 32-bit integer

# How far along each state is; a callback only ever moves a delivery forward.
RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.UNKNOWN: 2,
    DeliveryStatus.SENT: 3,
    DeliveryStatus.DELIVERED: 4,
    DeliveryStatus.UNDELIVERED: 4,
    DeliveryStatus.FAILED: 4,
    DeliveryStatus.SKIPPED: 5,
    DeliveryStatus.CANCELED: 5,
}

# Twilio's MessageStatus values and the delivery state each means.
TWILIO_STATUS = {
    "accepted": DeliveryStatus.SENT,
    "scheduled": DeliveryStatus.SENT,
    "queued": DeliveryStatus.SENT,
    "sending": DeliveryStatus.SENT,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "canceled": DeliveryStatus.FAILED,
}


def list_deliveries(session: Session, organization_id: str, message_id: str) -> list[Delivery]:
    """The per-recipient delivery records of one of the organization's messages."""
    message = get_message(session, organization_id, message_id)
    return list(
        session.execute(
            select(Delivery)
            .where(Delivery.message_id == message.id)
            .order_by(Delivery.subscriber_id, Delivery.part)
        ).scalars()
    )


def find_delivery(
    session: Session, delivery_id: str | None, message_sid: str | None
) -> Delivery | None:
    """The delivery a status callback names, by our id (`d`) first, then Twilio's SID, locked.

    The row stays locked (FOR UPDATE on PostgreSQL; SQLite's writers are serialized already) until
    the transaction ends: Twilio posts `sent` and `delivered` milliseconds apart, and two workers
    that both read the old state before either writes would let the late `sent` win.
    """
    if delivery_id:
        # populate_existing: a row already in this session must be read again, under the lock.
        delivery = session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
        if delivery is not None:
            return delivery
    if message_sid:
        return session.execute(
            select(Delivery)
            .where(Delivery.twilio_sid == message_sid)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
    return None


@dataclass(frozen=True)
class StatusOutcome:
    delivery: Delivery
    changed: bool
    opted_out: bool


def apply_status(
    session: Session,
    delivery: Delivery,
    twilio_status: str,
    message_sid: str | None = None,
    error_code: int | None = None,
    error_message: str | None = None,
) -> StatusOutcome:
    """Apply a Twilio status to a delivery, never backwards; error 21610 opts the contact out.

    Twilio's signatures carry no time, so a captured callback can be posted again at any moment.
    Its status moves the delivery at most once (a state is never entered twice), and only that
    first move may opt the contact out, and only about an SMS sent after their last START.
    """
    target = TWILIO_STATUS.get((twilio_status or "").lower())
    changed = moved = False
    if message_sid and delivery.twilio_sid is None:
        delivery.twilio_sid = message_sid
        changed = True
    if target is not None and RANK[target] > RANK.get(delivery.status, 0):
        delivery.status = target
        changed = moved = True
        if error_code is not None:
            delivery.error_code = error_code
            delivery.error_message = error_message or f"Twilio error {error_code}"
    opted = False
    if error_code == UNSUBSCRIBED_CODE and moved:
        contact = session.get(Contact, delivery.subscriber_id)
        if contact is not None and not _sent_before_opt_in(delivery, contact):
            opted = opt_out(
                session, contact.organization_id, contact.phone_hash, UNSUBSCRIBED_SOURCE
            )
    if changed:
        delivery.updated_at = utcnow()
        record_deliveries(session, [delivery])
    return StatusOutcome(delivery, changed, opted)


def _sent_before_opt_in(delivery: Delivery, contact: Contact) -> bool:
    # A STOP that Twilio reports about an SMS sent before the contact's START is older news than
    # the START: the START wins. (The callback's own arrival time says nothing: a replay is new.)
    if contact.opted_in_at is None:
        return False
    sent = delivery.sent_at or delivery.claimed_at or delivery.created_at
    return sent <= contact.opted_in_at


def record_status_callback(session: Session, delivery_id: str | None, params: Params) -> str:
    """Apply a status callback to its delivery; returns `applied`, `ignored` or `unknown`.

    A `d` or MessageSid that cannot be one is treated as absent, and an ErrorCode that is no
    32-bit number is dropped (the status still applies): a callback never fails on its values.
    """
    params = storable_params(params)
    if delivery_id is not None and not _DELIVERY_ID.match(delivery_id):
        delivery_id = None
    sid = first_param(params, "MessageSid") or first_param(params, "SmsSid")
    if sid is not None and not _MESSAGE_SID.match(sid):
        sid = None
    delivery = find_delivery(session, delivery_id, sid)
    if delivery is None:
        # Answered 200 all the same: a retry cannot find it either.
        log.info("status callback for an unknown delivery", extra={"delivery_id": delivery_id})
        return "unknown"
    status = first_param(params, "MessageStatus") or first_param(params, "SmsStatus") or ""
    try:
        code: int | None = int(first_param(params, "ErrorCode") or "")
    except ValueError:
        code = None
    if code is not None and not 0 < code <= _MAX_INT32:
        code = None
    outcome = apply_status(
        session, delivery, status, sid, code, first_param(params, "ErrorMessage") or None
    )
    return "applied" if outcome.changed or outcome.opted_out else "ignored"
