"""Sending deliveries: one send, its record, its retry (DESIGN 5.4).

Exactly one SMS per (message, recipient, part) rests on three steps, each its own transaction:

1. claim: `pending -> sending`, so one worker alone owns a delivery (`bridge.claims`);
2. send: one request to Twilio (`send_unrecorded`);
3. record: the SID saved at once (`sent`; a fan-out saves those of the sends that finished within
   a few milliseconds in one transaction), or the error classified (retry later, or `failed`).

A worker killed between 1 and 3 leaves the delivery `sending`. A request whose answer was lost (a
read timeout) may have reached Twilio, so it becomes `unknown` rather than being retried blindly.
Both are settled by `bridge.stale.resolve_stale`, which asks Twilio before sending again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Table,
    bindparam,
    case,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from bridge.claims import status_in, still_owned
from bridge.db import transaction, utcnow
from bridge.deliveries import RANK
from bridge.errors import PermanentSendError, SendError
from bridge.events import record_deliveries
from bridge.metrics import SEND_LATENCY, SENDS
from bridge.models import Contact, Delivery, DeliveryStatus, Lane
from bridge.organizations import opt_out
from bridge.phones import phone_time_zones
from bridge.quiet_hours import quiet_until
from bridge.settings import Settings
from bridge.twilio_client import (
    UNSUBSCRIBED_CODE,
    UNSUBSCRIBED_SOURCE,
    OutgoingSms,
    Sender,
    SendResult,
)

log = logging.getLogger(__name__)

PENDING = DeliveryStatus.PENDING
SENDING = DeliveryStatus.SENDING
UNKNOWN = DeliveryStatus.UNKNOWN
SENT = DeliveryStatus.SENT
FAILED = DeliveryStatus.FAILED
# Not a delivery status: what a send reports when the sweeper took the claim back meanwhile.
RELEASED = "released"
NO_SENDER = (
    "the organization has no sender number and no Messaging Service SID to send from; add a sender"
)

MAX_RETRY_DELAY = 600.0  # DESIGN 5.4: retries at most ten minutes apart

# Waits for the rate-limit slot of a send of `segments` segments from `sender_key` and takes it,
# calling `ready()` right before (False: the send may not go, the slot is left; returns False).
Pace = Callable[[str, int, Callable[[], bool]], bool]


def _no_pace(sender_key: str, segments: int, ready: Callable[[], bool]) -> bool:
    return ready()


def retry_delay(settings: Settings, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before retry `attempts`: SEND_RETRY_BASE doubling, jittered, at most 10 minutes."""
    base = settings.send_retry_base * (2 ** max(0, attempts - 1))
    # Jitter spreads retries of a fan-out that hit the same 429 so they do not come back together.
    jittered = base * (rng or random).uniform(0.75, 1.25)
    return min(MAX_RETRY_DELAY, jittered)


def sender_key(delivery: Delivery) -> str:
    """What the rate limit counts against: the sender number, or the Messaging Service."""
    return delivery.from_phone or delivery.messaging_service_sid or "default"


def outgoing_sms(settings: Settings, delivery: Delivery) -> OutgoingSms:
    """The request for one delivery, with its StatusCallback and ValidityPeriod."""
    return OutgoingSms(
        to=delivery.to_phone,
        body=delivery.body,
        from_=delivery.from_phone,
        messaging_service_sid=None if delivery.from_phone else delivery.messaging_service_sid,
        media_urls=tuple(delivery.media_urls or ()),
        status_callback=f"{settings.public_base_url}/twilio/status?d={delivery.id}",
        validity_period=settings.send_validity,
    )


# The statement that records every accepted send, built once as a Core statement on the table: per
# SMS it costs a cached compile and one round trip, not an ORM load (the GIL serializes that work
# across the send threads, so it bounds how fast one worker sends).
_deliveries = cast(Table, Delivery.__table__)
_col = _deliveries.c
_TIME = _col.updated_at.type

# The monotonic rule of `bridge.deliveries.apply_status`, in SQL: only a state ranked below
# `sent` becomes `sent`, so a status callback that came before the SID is not moved back. One
# UPDATE evaluates it on the row as it is when locked, with no SELECT ... FOR UPDATE first.
_BEFORE_SENT = status_in(_col.status, *(s for s, rank in RANK.items() if rank < RANK[SENT]))
_RECORD = (
    update(_deliveries)
    .where(_col.id == bindparam("d_id"))
    .values(
        twilio_sid=func.coalesce(_col.twilio_sid, bindparam("d_sid", type_=_col.twilio_sid.type)),
        sent_at=func.coalesce(_col.sent_at, bindparam("d_now", type_=_TIME)),
        status=case((_BEFORE_SENT, SENT), else_=_col.status),
        error_code=case((_BEFORE_SENT, None), else_=_col.error_code),
        error_message=case((_BEFORE_SENT, None), else_=_col.error_message),
        segments=func.coalesce(bindparam("d_segments", type_=_col.segments.type), _col.segments),
        updated_at=bindparam("d_now", type_=_TIME),
    )
)


# The same rule for a batch in one statement on PostgreSQL: the batch's ids, SIDs and segment counts
# go as three arrays, unnested into a table the UPDATE joins. One statement and three parameters
# instead of one statement per SMS: a fan-out spent a third of its time preparing those.
_BATCH = (
    func.unnest(
        bindparam("d_ids", type_=ARRAY(String)),
        bindparam("d_sids", type_=ARRAY(String)),
        bindparam("d_segments", type_=ARRAY(Integer)),
    )
    .table_valued("id", "sid", "segments")
    .render_derived(name="batch")
)
_RECORD_BATCH = (
    update(Delivery)
    .where(Delivery.id == _BATCH.c.id)
    .values(
        twilio_sid=func.coalesce(_col.twilio_sid, _BATCH.c.sid),
        sent_at=func.coalesce(_col.sent_at, bindparam("d_now", type_=_TIME)),
        status=case((_BEFORE_SENT, SENT), else_=_col.status),
        error_code=case((_BEFORE_SENT, None), else_=_col.error_code),
        error_message=case((_BEFORE_SENT, None), else_=_col.error_message),
        segments=func.coalesce(_BATCH.c.segments, _col.segments),
        updated_at=bindparam("d_now", type_=_TIME),
    )
)


# Built once: a statement built at each call had its cache key worked out again each time.
_RECORD_BATCH_RETURNING = _RECORD_BATCH.returning(Delivery)


def _record_params(delivery_id: str, result: SendResult, now: datetime) -> dict[str, object]:
    return {
        "d_id": delivery_id,
        "d_sid": result.sid,
        "d_now": now,
        "d_segments": result.num_segments or None,
    }


def record_sent(
    session: Session, delivery_id: str, result: SendResult, now: datetime | None = None
) -> str | None:
    """Save the SID of an accepted send; returns the delivery's status (None: no such delivery).

    A status callback that came first is not moved back.
    """
    row = (
        session.connection()
        .execute(
            _RECORD.returning(_col.status), _record_params(delivery_id, result, now or utcnow())
        )
        .first()
    )
    if row is not None:
        _report_saved(session, [delivery_id])
    return None if row is None else str(row.status)


def record_sends(
    session: Session, sent: list[tuple[str, SendResult]], now: datetime | None = None
) -> None:
    """Save the SIDs of several accepted sends in one statement (see `record_sent`)."""
    if not sent:
        return
    now = now or utcnow()
    if session.get_bind().dialect.name != "postgresql":
        session.connection().execute(
            _RECORD, [_record_params(d, result, now) for d, result in sent]
        )
        _report_saved(session, [d for d, _ in sent])
        return
    # One statement whose RETURNING gives the rows as written for the events, no SELECT after.
    saved = session.scalars(
        _RECORD_BATCH_RETURNING,
        {
            "d_ids": [d for d, _ in sent],
            "d_sids": [result.sid for _, result in sent],
            "d_segments": [result.num_segments or None for _, result in sent],
            "d_now": now,
        },
        execution_options={"synchronize_session": False, "populate_existing": True},
    )
    record_deliveries(session, saved)


def _report_saved(session: Session, delivery_ids: list[str]) -> None:
    # The batch's UPDATE cannot return rows, so one SELECT for the whole batch reads what it
    # wrote (a status callback that came first keeps its state), and one INSERT reports it.
    saved = session.scalars(
        select(Delivery)
        .where(Delivery.id.in_(delivery_ids))
        .execution_options(populate_existing=True)
    )
    record_deliveries(session, saved)


def record_failure(
    session: Session,
    settings: Settings,
    delivery_id: str,
    error: SendError,
    now: datetime | None = None,
) -> Delivery | None:
    """Record a failed send: `unknown` if it may have gone, a later retry, or `failed` for good."""
    now = now or utcnow()
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.status != SENDING:
        return delivery  # a status callback already said it went; nothing to undo
    delivery.error_code = error.code
    delivery.error_message = error.reason
    delivery.updated_at = now
    if error.may_have_sent:
        delivery.status = UNKNOWN  # resolve_stale asks Twilio before any second send
    elif error.retryable and delivery.attempts < settings.send_max_attempts:
        delivery.status = PENDING
        delay = timedelta(seconds=retry_delay(settings, delivery.attempts))
        delivery.not_before = resume_at(settings, delivery, now + delay)
    else:
        delivery.status = FAILED
        if error.retryable:
            delivery.error_message = f"gave up after {delivery.attempts} attempts: {error.reason}"
        if error.code == UNSUBSCRIBED_CODE:
            _opt_out_recipient(session, delivery)
        fail_later_parts(session, delivery, now)
    record_deliveries(session, [delivery])
    return delivery


def resume_at(settings: Settings, delivery: Delivery, at: datetime) -> datetime:
    """When a delivery put back to `pending` may go: `at`, or later if quiet hours hold it."""
    if delivery.queue != Lane.NOTIFICATIONS:
        return at  # conversational text is never held by quiet hours
    window = settings.quiet_window
    quiet = quiet_until(at, phone_time_zones(delivery.to_phone), window) if window else None
    return max(at, quiet) if quiet else at


def fail_later_parts(session: Session, delivery: Delivery, now: datetime) -> int:
    """Fail the parts after a part that failed for good: a message missing its start is noise."""
    failed = list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.message_id == delivery.message_id,
                Delivery.subscriber_id == delivery.subscriber_id,
                Delivery.part > delivery.part,
                Delivery.status == PENDING,
            )
            .values(
                status=FAILED,
                error_code=delivery.error_code,
                error_message="an earlier part failed",
                updated_at=now,
            )
            .returning(Delivery),
            execution_options={"synchronize_session": False},
        )
    )
    record_deliveries(session, failed)
    return len(failed)


def _opt_out_recipient(session: Session, delivery: Delivery) -> None:
    contact = session.get(Contact, delivery.subscriber_id)
    if contact is not None:
        opt_out(session, contact.organization_id, contact.phone_hash, UNSUBSCRIBED_SOURCE)


@dataclass(frozen=True)
class SendOutcome:
    """One send's outcome: accepted by Twilio (`result`, still to record), or its status now.

    `status` is the delivery's status after a failure was recorded (`pending` to retry, `unknown`,
    `failed`), or RELEASED when the sweeper took the claim back before the send; None if accepted.
    """

    delivery_id: str
    result: SendResult | None = None
    status: str | None = None


def send_unrecorded(
    db: Engine | Connection,
    sessions: sessionmaker[Session],
    settings: Settings,
    sender: Sender,
    delivery: Delivery,
    pace: Pace = _no_pace,
    claimed: float | None = None,
) -> SendOutcome:
    """Send one claimed delivery; a failure is recorded here, an accepted send is not.

    The caller must save an accepted send's `result` at once with `record_sent` or `record_sends`
    (until then the delivery stays `sending`, which the sweeper settles through Twilio should the
    worker die). `pace` holds the send to its sender's rate; the request leaves the moment its slot
    is taken. Just before, `db` renews the claim (see `bridge.claims.still_owned`) unless it is
    surely still this worker's: for half of SEND_STALE_AFTER after it was made (`claimed`, a
    `time.monotonic()` taken before the claim) or last renewed.
    """
    try:
        request = _request(settings, delivery)
    except SendError as error:
        return _failed(sessions, settings, delivery, error)
    # The sweeper takes a claim back only once SEND_STALE_AFTER has passed since its `claimed_at`;
    # the half left over covers clocks that disagree. A fan-out sends most of its claims within
    # a second or two: renewing each (an UPDATE per SMS) bought nothing.
    owned_until = None if claimed is None else claimed + settings.send_stale_after / 2

    def owned() -> bool:
        nonlocal owned_until
        if owned_until is not None and time.monotonic() < owned_until:
            return True
        if not still_owned(db, delivery):
            return False
        owned_until = time.monotonic() + settings.send_stale_after / 2
        return True

    if not pace(sender_key(delivery), max(1, delivery.segments), owned):
        log.info(
            "claim taken back while waiting for a rate slot", extra={"delivery_id": delivery.id}
        )
        return SendOutcome(delivery.id, status=RELEASED)
    started = time.perf_counter()
    try:
        result = sender.send(request)
    except SendError as error:
        SEND_LATENCY.observe(time.perf_counter() - started)
        return _failed(sessions, settings, delivery, error)
    SEND_LATENCY.observe(time.perf_counter() - started)
    SENDS.labels(result="sent").inc()
    return SendOutcome(delivery.id, result=result)


def _request(settings: Settings, delivery: Delivery) -> OutgoingSms:
    # No retry can fix a request that cannot be built: fail it for good, never leave it stuck.
    if not delivery.from_phone and not delivery.messaging_service_sid:
        raise PermanentSendError(NO_SENDER)
    try:
        return outgoing_sms(settings, delivery)
    except ValueError as exc:
        raise PermanentSendError(f"cannot send: {exc}") from exc


def _failed(
    sessions: sessionmaker[Session], settings: Settings, delivery: Delivery, error: SendError
) -> SendOutcome:
    SENDS.labels(result="transient" if error.retryable else "permanent").inc()
    return SendOutcome(delivery.id, status=_record_error(sessions, settings, delivery, error))


def _record_error(
    sessions: sessionmaker[Session], settings: Settings, delivery: Delivery, error: SendError
) -> str:
    with transaction(sessions) as session:
        recorded = record_failure(session, settings, delivery.id, error)
        status = recorded.status if recorded else FAILED
    log.info(
        "send failed",
        extra={
            "delivery_id": delivery.id,
            "to": delivery.to_phone,  # the log formatter masks it
            "twilio_code": error.code,
            "status": status,
        },
    )
    return status
