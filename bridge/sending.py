"""Sending deliveries: claim, send, record, retry, settle what a killed worker left (DESIGN 5.4).

Exactly one SMS per (message, recipient, part) rests on three steps, each its own transaction:

1. claim: `pending -> sending` by a conditional UPDATE, so one worker alone owns a delivery;
2. send: one request to Twilio;
3. record: the SID saved at once (`sent`; a fan-out saves those of the sends that finished within
   a few milliseconds in one transaction), or the error classified (retry later, or `failed`).

A worker killed between 1 and 3 leaves the delivery `sending`. A request whose answer was lost (a
read timeout) may have reached Twilio, so it becomes `unknown` rather than being retried blindly.
Both are settled by `resolve_stale`, which asks Twilio's Messages list before sending again.

SMS to one phone leave in the order of (publish_seq, part): a delivery is claimed only when no
earlier one to the same phone is still on its way (pending and due, retrying, sending or unknown).
A notification held by quiet hours does not hold back later conversational text.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, sessionmaker

from bridge.channels import QUEUE_NOTIFICATIONS
from bridge.db import transaction, utcnow
from bridge.deliveries import RANK, UNSUBSCRIBED_CODE
from bridge.errors import PermanentSendError, SendError
from bridge.metrics import SEND_LATENCY, SENDS
from bridge.models import Contact, Delivery, DeliveryStatus, OptOut
from bridge.organizations import opt_out
from bridge.phones import phone_time_zones
from bridge.quiet_hours import quiet_until
from bridge.settings import Settings
from bridge.twilio_client import OutgoingSms, Sender, SendResult

log = logging.getLogger(__name__)

PENDING = DeliveryStatus.PENDING.value
SENDING = DeliveryStatus.SENDING.value
UNKNOWN = DeliveryStatus.UNKNOWN.value
SENT = DeliveryStatus.SENT.value
FAILED = DeliveryStatus.FAILED.value
SKIPPED = DeliveryStatus.SKIPPED.value
# Not a delivery status: what `send_claimed` reports when the sweeper took the claim back.
RELEASED = "released"
NO_SENDER = (
    "the organization has no sender number and no Messaging Service SID to send from; add a sender"
)

MAX_RETRY_DELAY = 600.0  # DESIGN 5.4: retries at most ten minutes apart
# Twilio's dates have whole seconds and its clock is not ours: look a little before the claim.
FIND_SLACK = timedelta(seconds=60)

# Waits until a send of `segments` segments from `sender_key` is within the rate limit.
Pace = Callable[[str, int], object]


def _no_pace(sender_key: str, segments: int) -> None:
    return None


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


def _status_in(column: Any, *statuses: str) -> ColumnElement[bool]:
    """`column IN ('a', ...)` with the values written out, not bound.

    A partial index serves a query only when the planner can see that the query's filter implies
    the index's (SQLite never looks into bound parameters): these match `ix_deliveries_pending`
    and `ix_deliveries_open_to_order` word for word.
    """
    return column.in_([literal_column(f"'{s}'") for s in statuses])


# The two statements every delivery runs, built once as Core statements on the table: per SMS
# they cost a cached compile and one round trip, not an ORM load (the GIL serializes that work
# across the send threads, so it bounds how fast one worker sends).
_deliveries = cast(Table, Delivery.__table__)
_col = _deliveries.c
_TIME = _col.updated_at.type

_RENEW = (
    update(_deliveries)
    .where(
        _col.id == bindparam("d_id"),
        _col.status == SENDING,
        _col.claimed_at == bindparam("d_claimed_at", type_=_TIME),
    )
    .values(claimed_at=bindparam("d_now", type_=_TIME), updated_at=bindparam("d_now", type_=_TIME))
)

# The monotonic rule of `bridge.deliveries.apply_status`, in SQL: only a state ranked below
# `sent` becomes `sent`, so a status callback that came before the SID is not moved back. One
# UPDATE evaluates it on the row as it is when locked, with no SELECT ... FOR UPDATE first.
_BEFORE_SENT = _status_in(_col.status, *(s for s, rank in RANK.items() if rank < RANK[SENT]))
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


def _blocked_by_earlier(now: datetime) -> Any:
    """An earlier delivery to the same phone is still on its way (the per-contact order rule)."""
    earlier = aliased(Delivery)
    return exists().where(
        earlier.to_phone == Delivery.to_phone,
        # Another organization's SMS come from other numbers: they do not order this one's.
        earlier.organization_id == Delivery.organization_id,
        or_(
            earlier.publish_seq < Delivery.publish_seq,
            and_(earlier.publish_seq == Delivery.publish_seq, earlier.part < Delivery.part),
        ),
        _status_in(earlier.status, PENDING, SENDING, UNKNOWN),
        # A first attempt held by quiet hours does not block; a retrying one does.
        or_(earlier.attempts > 0, earlier.not_before.is_(None), earlier.not_before <= now),
    )


def claim_deliveries(
    session: Session, message_id: str, limit: int, now: datetime | None = None
) -> list[Delivery]:
    """Claim up to `limit` due deliveries of a message (`pending -> sending`), in send order.

    Deliveries whose contact opted out since publishing are marked `skipped` instead.
    """
    now = now or utcnow()
    candidates = (
        select(Delivery.id)
        .where(
            Delivery.message_id == message_id,
            _status_in(Delivery.status, PENDING),
            or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
            ~_blocked_by_earlier(now),
        )
        .order_by(Delivery.subscriber_id, Delivery.part)
        .limit(limit)
    )
    ids = list(session.execute(candidates).scalars())
    if not ids:
        return []
    # The status condition makes the claim exclusive: a row another worker took is not returned.
    claimed = list(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == PENDING)
            .values(
                status=SENDING,
                claimed_at=now,
                attempts=Delivery.attempts + 1,
                updated_at=now,
            )
            .returning(Delivery),
            execution_options={"synchronize_session": False},
        )
    )
    return _skip_opted_out(session, claimed, now)


def _skip_opted_out(session: Session, claimed: list[Delivery], now: datetime) -> list[Delivery]:
    if not claimed:
        return claimed
    opted = set(
        session.execute(
            select(Contact.id)
            .join(
                OptOut,
                and_(
                    OptOut.organization_id == Contact.organization_id,
                    OptOut.phone_hash == Contact.phone_hash,
                ),
            )
            .where(Contact.id.in_({d.subscriber_id for d in claimed}))
        ).scalars()
    )
    if not opted:
        return claimed
    skip = [d.id for d in claimed if d.subscriber_id in opted]
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(skip))
        .values(
            status=SKIPPED,
            error_message="the contact opted out of SMS from this organization",
            updated_at=now,
        )
    )
    return [d for d in claimed if d.subscriber_id not in opted]


def next_attempt_at(
    session: Session, message_id: str, now: datetime | None = None
) -> datetime | None:
    """When the message's next pending delivery may go (now if one is due); None when none is."""
    now = now or utcnow()
    due = or_(Delivery.not_before.is_(None), Delivery.not_before <= now)
    pending, due_now, earliest = session.execute(
        select(
            func.count(),
            func.count(case((due, 1))),
            func.min(Delivery.not_before),
        ).where(Delivery.message_id == message_id, Delivery.status == PENDING)
    ).one()
    if pending == 0:
        return None
    return now if due_now else earliest


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
    return None if row is None else str(row.status)


def record_sends(
    connection: Connection, sent: list[tuple[str, SendResult]], now: datetime | None = None
) -> None:
    """Save the SIDs of several accepted sends in one statement batch (see `record_sent`)."""
    if sent:
        now = now or utcnow()
        connection.execute(_RECORD, [_record_params(d, result, now) for d, result in sent])


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
    return delivery


def resume_at(settings: Settings, delivery: Delivery, at: datetime) -> datetime:
    """When a delivery put back to `pending` may go: `at`, or later if quiet hours hold it."""
    if delivery.queue != QUEUE_NOTIFICATIONS:
        return at  # conversational text is never held by quiet hours
    window = settings.quiet_window
    quiet = quiet_until(at, phone_time_zones(delivery.to_phone), window) if window else None
    return max(at, quiet) if quiet else at


def fail_later_parts(session: Session, delivery: Delivery, now: datetime) -> int:
    """Fail the parts after a part that failed for good: a message missing its start is noise."""
    result = session.execute(
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
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _opt_out_recipient(session: Session, delivery: Delivery) -> None:
    contact = session.get(Contact, delivery.subscriber_id)
    if contact is not None:
        opt_out(session, contact.organization_id, contact.phone_hash, "twilio-21610")


def still_owned(db: Engine | Connection, delivery: Delivery) -> bool:
    """Renew the claim after waiting for a rate slot; False if the sweeper took it back meanwhile.

    A send can wait on the rate limit longer than SEND_STALE_AFTER; by then `resolve_stale` may
    have put the delivery back to `pending` for another worker. Only the claim it still matches
    (same `claimed_at`) may send; the renewed `claimed_at` keeps the sweeper off during the send.
    The renewal is committed on `db` at once; a connection in autocommit mode saves the
    BEGIN and COMMIT round trips (the one UPDATE is its own transaction).
    """
    if isinstance(db, Engine):
        with db.connect() as connection:
            return still_owned(connection.execution_options(isolation_level="AUTOCOMMIT"), delivery)
    now = utcnow()
    result = db.execute(
        _RENEW, {"d_id": delivery.id, "d_claimed_at": delivery.claimed_at, "d_now": now}
    )
    # Under autocommit a no-op; SQLite's engine begins a transaction for every statement anyway.
    db.commit()
    owned = bool(result.rowcount)
    if owned:
        delivery.claimed_at = now
    return owned


def send_unrecorded(
    db: Engine | Connection,
    sessions: sessionmaker[Session],
    settings: Settings,
    sender: Sender,
    delivery: Delivery,
    pace: Pace = _no_pace,
) -> SendResult | str:
    """Send one claimed delivery; a failure is recorded here and its new status returned.

    An accepted send returns its `SendResult`, which the caller must save at once with
    `record_sent` or `record_sends` (until then the delivery stays `sending`, which the sweeper
    settles through Twilio should the worker die). `db` renews the claim (see `still_owned`).
    """
    pace(sender_key(delivery), max(1, delivery.segments))
    if not still_owned(db, delivery):
        log.info(
            "claim taken back while waiting for a rate slot", extra={"delivery_id": delivery.id}
        )
        return RELEASED
    started = time.perf_counter()
    try:
        # No retry can fix a request that cannot be built: fail it for good, never leave it stuck.
        if not delivery.from_phone and not delivery.messaging_service_sid:
            raise PermanentSendError(NO_SENDER)
        try:
            sms = outgoing_sms(settings, delivery)
        except ValueError as exc:
            raise PermanentSendError(f"cannot send: {exc}") from exc
        result = sender.send(sms)
    except SendError as error:
        SEND_LATENCY.observe(time.perf_counter() - started)
        SENDS.labels(result="transient" if error.retryable else "permanent").inc()
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
    SEND_LATENCY.observe(time.perf_counter() - started)
    SENDS.labels(result="sent").inc()
    return result


def send_claimed(
    sessions: sessionmaker[Session],
    settings: Settings,
    sender: Sender,
    delivery: Delivery,
    pace: Pace = _no_pace,
) -> str:
    """Send one claimed delivery and record the outcome; returns the delivery's new status."""
    engine: Engine = sessions.kw["bind"]
    outcome = send_unrecorded(engine, sessions, settings, sender, delivery, pace)
    if isinstance(outcome, str):
        return outcome
    with transaction(sessions) as session:
        return record_sent(session, delivery.id, outcome) or SENT


@dataclass
class StaleOutcome:
    """What `resolve_stale` did: SIDs found at Twilio, deliveries put back to send, given up."""

    found: int = 0
    resend: int = 0
    failed: int = 0
    unresolved: int = 0
    messages: dict[str, str] = field(default_factory=dict)  # message id -> queue, to enqueue


def stale_sending(
    session: Session, settings: Settings, now: datetime, limit: int = 200
) -> list[Delivery]:
    """Deliveries left `sending` or `unknown` for longer than SEND_STALE_AFTER."""
    cutoff = now - timedelta(seconds=settings.send_stale_after)
    return list(
        session.execute(
            select(Delivery)
            .where(Delivery.status.in_((SENDING, UNKNOWN)), Delivery.claimed_at < cutoff)
            .order_by(Delivery.claimed_at)
            .limit(limit)
        ).scalars()
    )


def resolve_stale(
    sessions: sessionmaker[Session], settings: Settings, sender: Sender, now: datetime | None = None
) -> StaleOutcome:
    """Settle stale `sending`/`unknown` deliveries: record the SID Twilio has, else send again."""
    now = now or utcnow()
    outcome = StaleOutcome()
    with sessions() as session:
        stale = stale_sending(session, settings, now)
    for delivery in stale:
        try:
            sid = _find_at_twilio(sessions, sender, delivery)
        except SendError as error:
            # Twilio cannot answer now; the next sweep asks again. Never send blind.
            log.warning("could not ask Twilio about a stale send: %s", error.reason)
            outcome.unresolved += 1
            continue
        with transaction(sessions) as session:
            row = session.get(Delivery, delivery.id, with_for_update=True)
            if (
                row is None
                or row.status not in (SENDING, UNKNOWN)
                or row.claimed_at != delivery.claimed_at
            ):
                continue  # settled meanwhile (a callback, another sweeper)
            if sid is not None:
                record_sent(
                    session, row.id, SendResult(sid=sid, status="sent", num_segments=None), now
                )
                outcome.found += 1
            elif row.attempts >= settings.send_max_attempts:
                row.status = FAILED
                row.error_message = f"gave up after {row.attempts} attempts: not found at Twilio"
                row.updated_at = now
                fail_later_parts(session, row, now)
                outcome.failed += 1
            else:
                row.status = PENDING
                later = resume_at(settings, row, now)
                row.not_before = later if later > now else None
                row.updated_at = now
                outcome.resend += 1
                outcome.messages[row.message_id] = row.queue
    return outcome


def _find_at_twilio(
    sessions: sessionmaker[Session], sender: Sender, delivery: Delivery
) -> str | None:
    since = (delivery.claimed_at or utcnow()) - FIND_SLACK
    with sessions() as session:
        known = {
            sid
            for sid in session.execute(
                select(Delivery.twilio_sid).where(
                    Delivery.to_phone == delivery.to_phone,
                    Delivery.twilio_sid.is_not(None),
                    Delivery.sent_at >= since - FIND_SLACK,
                )
            ).scalars()
            if sid is not None
        }
    return sender.find_sent(
        delivery.to_phone,
        delivery.from_phone,
        since,
        delivery.body or None,
        messaging_service_sid=None if delivery.from_phone else delivery.messaging_service_sid,
        exclude_sids=known,
    )


def stale_pending_messages(
    session: Session, settings: Settings, now: datetime | None = None, limit: int = 500
) -> dict[str, str]:
    """Messages with deliveries `pending` past SEND_STALE_AFTER (job lost), as id -> queue.

    A delivery held back by the per-phone order is not counted: its own row never changes while
    it waits, and counting it would re-enqueue its fan-out every sweep.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.send_stale_after)
    rows = session.execute(
        select(Delivery.message_id, Delivery.queue)
        .where(
            Delivery.status == PENDING,
            Delivery.updated_at < cutoff,
            or_(Delivery.not_before.is_(None), Delivery.not_before < cutoff),
            # Held back by an earlier SMS to the same phone: its fan-out is waiting, not lost.
            ~_blocked_by_earlier(now),
        )
        .group_by(Delivery.message_id, Delivery.queue)
        .limit(limit)
    ).all()
    return {message_id: queue for message_id, queue in rows}
