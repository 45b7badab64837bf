"""Settling sends a killed worker left `sending`, or whose answer was lost (`unknown`).

Such a send may have reached Twilio, so it is never sent again blind: `resolve_stale` (run by the
sweeper) asks Twilio's Messages list first. Found, its SID is recorded; not found, it goes back to
`pending` for another attempt, or fails once its attempts are spent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bridge.db import transaction, utcnow
from bridge.errors import SendError
from bridge.events import record_deliveries
from bridge.models import Delivery, DeliveryStatus, Lane
from bridge.sending import fail_later_parts, record_sent, resume_at
from bridge.settings import Settings
from bridge.twilio_client import Sender, SendResult, SentQuery

log = logging.getLogger(__name__)

PENDING = DeliveryStatus.PENDING
SENDING = DeliveryStatus.SENDING
UNKNOWN = DeliveryStatus.UNKNOWN
FAILED = DeliveryStatus.FAILED
# Twilio's dates have whole seconds and its clock is not ours: look a little before the claim.
FIND_SLACK = timedelta(seconds=60)


@dataclass
class StaleOutcome:
    """What `resolve_stale` did: SIDs found at Twilio, deliveries put back to send, given up."""

    found: int = 0
    resend: int = 0
    failed: int = 0
    unresolved: int = 0
    messages: dict[str, Lane] = field(default_factory=dict)  # message id -> lane, to enqueue


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
                record_deliveries(session, [row])
                outcome.failed += 1
            else:
                row.status = PENDING
                later = resume_at(settings, row, now)
                row.not_before = later if later > now else None
                row.updated_at = now
                record_deliveries(session, [row])
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
        SentQuery(
            delivery.to_phone,
            delivery.from_phone,
            since,
            delivery.body or None,
            messaging_service_sid=None if delivery.from_phone else delivery.messaging_service_sid,
            exclude_sids=known,
        )
    )
