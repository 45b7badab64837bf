"""Claiming deliveries: which worker sends what, and in which order (DESIGN 5.4).

A claim is `pending -> sending` by a conditional UPDATE, so one worker alone owns a delivery; a
worker renews it (`still_owned`) right before taking the rate slot it waited for, and the sweeper
may take back one left too long. SMS to one phone leave in the order of (publish_seq, part): a
delivery is claimed only when no earlier one to the same phone is still on its way (pending and
due, retrying, sending or unknown). A notification held by quiet hours does not hold back later
conversational text.
"""

from __future__ import annotations

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
from sqlalchemy.orm import Session, aliased

from bridge.db import epoch, utcnow
from bridge.events import record_deliveries
from bridge.models import Contact, Delivery, DeliveryStatus, OptOut
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
        status_in(earlier.status, PENDING, SENDING, UNKNOWN),
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
            status_in(Delivery.status, PENDING),
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
    sending = _skip_opted_out(session, claimed, now)
    record_deliveries(session, sending)
    return sending


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
    changes = {"status": SKIPPED.value, "error_message": OPTED_OUT, "updated_at": epoch(now)}
    record_deliveries(session, (d for d in claimed if d.id in skip), changes)
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(skip))
        .values(
            status=SKIPPED,
            error_message=OPTED_OUT,
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
