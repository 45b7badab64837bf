"""Claiming deliveries: which worker sends what, and in which order (DESIGN 5.4).

A claim is `pending -> sending` by a conditional UPDATE, so one worker alone owns a delivery; a
worker renews it (`still_owned`) right before taking the rate slot it waited for, and the sweeper
may take back one left too long. SMS to one phone leave in the order of (publish_seq, part): a
delivery is claimed only when no earlier one to the same phone is still on its way (pending and
due, retrying, sending or unknown). A notification held by quiet hours does not hold back later
conversational text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from bridge.db import epoch, utcnow
from bridge.events import record_deliveries
from bridge.models import Contact, Delivery, DeliveryStatus, Lane, OptOut
from bridge.publishing import OPTED_OUT
from bridge.settings import Settings

PENDING = DeliveryStatus.PENDING
SENDING = DeliveryStatus.SENDING
UNKNOWN = DeliveryStatus.UNKNOWN
SKIPPED = DeliveryStatus.SKIPPED


def status_in(column: Any, *statuses: str) -> ColumnElement[bool]:
    """`column IN ('a', ...)` with the values written out, not bound.

    A partial index serves a query only when the planner can see that the query's filter implies
    the index's (SQLite never looks into bound parameters): these match `ix_deliveries_pending`
    and `ix_deliveries_open_to_order` word for word.
    """
    return column.in_([literal_column(f"'{s}'") for s in statuses])


# The claim's renewal runs for every SMS: a Core statement on the table, built once, costs a cached
# compile and one round trip, not an ORM load.
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


def _blocked_by_earlier(now: datetime | BindParameter[Any], of: Any = Delivery) -> Any:
    """An earlier delivery to the same phone is still on its way (the per-contact order rule)."""
    earlier = aliased(Delivery)
    return exists().where(
        earlier.to_phone == of.to_phone,
        # Another organization's SMS come from other numbers: they do not order this one's.
        earlier.organization_id == of.organization_id,
        or_(
            earlier.publish_seq < of.publish_seq,
            and_(earlier.publish_seq == of.publish_seq, earlier.part < of.part),
        ),
        status_in(earlier.status, PENDING, SENDING, UNKNOWN),
        # A first attempt held by quiet hours does not block; a retrying one does.
        or_(earlier.attempts > 0, earlier.not_before.is_(None), earlier.not_before <= now),
    )


# A contact's opt-out: its organization's, for its phone hash.
_CONTACT_OPT_OUT = and_(
    OptOut.organization_id == Contact.organization_id, OptOut.phone_hash == Contact.phone_hash
)
# Whether a delivery's contact has opted out (since publishing), read with the claim's RETURNING.
_OPTED_OUT = (
    select(OptOut.phone_hash)
    .join(Contact, _CONTACT_OPT_OUT)
    .where(Contact.id == Delivery.subscriber_id)
    .exists()
    .label("opted_out")
)


# The claim, built once: `c_message_ids`, `c_now` and `c_limit` are bound at each execution. Built
# anew each time, its aliases, columns and cache key cost the fan-out's loop more than running it.
_NOW = bindparam("c_now", type_=_TIME)
_candidate = aliased(Delivery, name="candidate")
_CANDIDATES = (
    select(_candidate.id)
    .where(
        _candidate.message_id.in_(bindparam("c_message_ids", expanding=True)),
        status_in(_candidate.status, PENDING),
        or_(_candidate.not_before.is_(None), _candidate.not_before <= _NOW),
        ~_blocked_by_earlier(_NOW, _candidate),
    )
    .order_by(_candidate.publish_seq, _candidate.subscriber_id, _candidate.part)
    .limit(bindparam("c_limit", type_=Integer))
)
# One statement picks, claims and returns them (on PostgreSQL with whether each contact opted
# out): a list of ids sent back in an IN (...) cost the worker a compiled parameter per delivery.
# The status condition makes the claim exclusive: a row another worker took is not returned.
_CLAIM = (
    update(Delivery)
    .where(Delivery.id.in_(_CANDIDATES), Delivery.status == PENDING)
    .values(status=SENDING, claimed_at=_NOW, attempts=Delivery.attempts + 1, updated_at=_NOW)
)
# SQLite's RETURNING names columns without their table, so it cannot say who opted out.
_CLAIM_POSTGRES = _CLAIM.returning(Delivery, _OPTED_OUT)
_CLAIM_SQLITE = _CLAIM.returning(Delivery, literal(False))


def claim_deliveries(
    session: Session, message_id: str | Sequence[str], limit: int, now: datetime | None = None
) -> list[Delivery]:
    """Claim up to `limit` due deliveries of a message (`pending -> sending`), in send order.

    Given several messages (relays sent together), their deliveries in the order they were
    published. Deliveries whose contact opted out since publishing are marked `skipped` instead.
    """
    now = now or utcnow()
    messages = [message_id] if isinstance(message_id, str) else list(message_id)
    postgres = session.get_bind().dialect.name == "postgresql"
    claimed = session.execute(
        _CLAIM_POSTGRES if postgres else _CLAIM_SQLITE,
        {"c_message_ids": messages, "c_now": now, "c_limit": limit},
        execution_options={"synchronize_session": False},
    ).all()
    if not claimed:
        return []
    rows = sorted(
        ((delivery, bool(opted_out)) for delivery, opted_out in claimed),
        key=lambda row: (row[0].publish_seq, row[0].subscriber_id, row[0].part),
    )
    if not postgres:
        opted = _opted_out(session, [delivery for delivery, _ in rows])
        rows = [(delivery, delivery.subscriber_id in opted) for delivery, _ in rows]
    skipped = [delivery for delivery, opted_out in rows if opted_out]
    if skipped:
        _skip(session, skipped, now)
    sending = [delivery for delivery, opted_out in rows if not opted_out]
    record_deliveries(session, sending)
    return sending


def _opted_out(session: Session, claimed: list[Delivery]) -> set[str]:
    return set(
        session.execute(
            select(Contact.id)
            .join(OptOut, _CONTACT_OPT_OUT)
            .where(Contact.id.in_({d.subscriber_id for d in claimed}))
        ).scalars()
    )


def _skip(session: Session, deliveries: list[Delivery], now: datetime) -> None:
    changes = {"status": SKIPPED, "error_message": OPTED_OUT, "updated_at": epoch(now)}
    record_deliveries(session, deliveries, changes)
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_([d.id for d in deliveries]))
        .values(
            status=SKIPPED,
            error_message=OPTED_OUT,
            updated_at=now,
        )
    )


def next_attempt_at(
    session: Session, message_id: str, now: datetime | None = None
) -> datetime | None:
    """When the message's next pending delivery may go (now if one is due); None when none is."""
    return next_attempts(session, [message_id], now).get(message_id)


def next_attempts(
    session: Session, message_ids: Sequence[str], now: datetime | None = None
) -> dict[str, datetime]:
    """`next_attempt_at` for several messages in one query; those with nothing pending are left
    out."""
    now = now or utcnow()
    due = or_(Delivery.not_before.is_(None), Delivery.not_before <= now)
    rows = session.execute(
        select(Delivery.message_id, func.count(case((due, 1))), func.min(Delivery.not_before))
        .where(Delivery.message_id.in_(message_ids), Delivery.status == PENDING)
        .group_by(Delivery.message_id)
    )
    # With none due, every pending one has a not_before: the earliest is when the next may go.
    return {m: earliest if not due_now and earliest else now for m, due_now, earliest in rows}


def stale_pending_messages(
    session: Session, settings: Settings, now: datetime | None = None, limit: int = 500
) -> dict[str, Lane]:
    """Messages with deliveries `pending` past SEND_STALE_AFTER (job lost), as id -> lane.

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


def still_owned(db: Engine | Connection, delivery: Delivery) -> bool:
    """Renew the claim before taking a rate slot; False if the sweeper took it back meanwhile.

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
