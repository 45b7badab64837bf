"""Sending events to endpoints: claim, attempt, record, retry (DESIGN 5.8).

At least once, never lost, rests on the same three steps as SMS deliveries (`bridge.sending`):

1. claim: a batch of an endpoint's due deliveries `pending -> sending` in one transaction;
2. post: one request per event (`bridge.events_sender`);
3. record: the attempt saved, and the delivery `succeeded`, retried later or `failed`.

A worker killed between 1 and 3 leaves deliveries `sending`; once their claim is older than the
lease they can be claimed again (and the event is sent again: receivers deduplicate on
`webhook-id`). After a failed attempt the endpoint's other due deliveries wait with it, so a dead
endpoint is probed by one request per retry instead of one per event.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.db import transaction, utcnow
from bridge.events import event_body
from bridge.events_sender import AttemptResult, OutgoingEvent
from bridge.ids import new_id
from bridge.models import (
    Event,
    EventDelivery,
    EventDeliveryStatus,
    WebhookAttempt,
    WebhookEndpoint,
)
from bridge.settings import Settings
from bridge.webhook_endpoints import note_outcome, signing_secrets

# DESIGN 5.8: retried after about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, then failed.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.1  # each delay is drawn within 10% of the schedule's, so retries do not stampede
BATCH = 25  # deliveries one claim takes (and one transaction records)


def retry_delay(attempts: int, rng: random.Random | None = None) -> timedelta | None:
    """How long after the `attempts`-th failed attempt to try again; None when it was the last."""
    if attempts > len(RETRY_SCHEDULE):
        return None
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return RETRY_SCHEDULE[attempts - 1] * spread


def claim_lease(settings: Settings) -> timedelta:
    """How old a claim must be before another worker may take it over (a killed worker's)."""
    return timedelta(seconds=BATCH * settings.webhook_timeout + 60)


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery with what its POST needs."""

    delivery_id: str
    event_id: str
    body: str
    url: str
    secrets: tuple[str, ...]

    def outgoing(self, now: datetime) -> OutgoingEvent:
        """The request to send now (the signature's timestamp is the time of sending)."""
        return OutgoingEvent(self.url, self.event_id, self.body, self.secrets, now)


def _due(settings: Settings, now: datetime) -> object:
    return or_(
        and_(
            EventDelivery.status == EventDeliveryStatus.PENDING,
            EventDelivery.next_attempt_at <= now,
        ),
        and_(
            EventDelivery.status == EventDeliveryStatus.SENDING,
            EventDelivery.claimed_at < now - claim_lease(settings),
        ),
    )


def claim_due(
    sessions: sessionmaker[Session],
    settings: Settings,
    endpoint_id: str,
    now: datetime | None = None,
    limit: int = BATCH,
) -> list[Claimed]:
    """Claim up to `limit` of the endpoint's due deliveries (and stale claims) for this worker."""
    now = now or utcnow()
    with transaction(sessions) as session:
        endpoint = session.execute(
            select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        ).scalar_one_or_none()
        if endpoint is None or not endpoint.enabled:
            return []
        rows = list(
            session.execute(
                select(EventDelivery)
                .where(EventDelivery.endpoint_id == endpoint_id, _due(settings, now))  # type: ignore[arg-type]
                # The most-retried first: its growing delay paces a failing endpoint.
                .order_by(EventDelivery.next_attempt_at, EventDelivery.attempts.desc())
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not rows:
            return []
        events = {
            e.id: e
            for e in session.execute(
                select(Event).where(Event.id.in_([r.event_id for r in rows]))
            ).scalars()
        }
        secrets = tuple(signing_secrets(endpoint, now))
        claimed = []
        for row in rows:
            row.status = EventDeliveryStatus.SENDING
            row.claimed_at = now
            row.updated_at = now
            event = events[row.event_id]
            claimed.append(Claimed(row.id, event.id, event_body(event), endpoint.url, secrets))
    return claimed


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt decided."""

    status: str
    next_attempt_at: datetime | None
    endpoint_disabled: bool


@dataclass(frozen=True)
class Outcome:
    """One attempt made: the delivery, what came of it and when it started."""

    claimed: Claimed
    result: AttemptResult
    attempted_at: datetime


def record_attempt(
    sessions: sessionmaker[Session],
    claimed: Claimed,
    result: AttemptResult,
    attempted_at: datetime,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Recorded:
    """Save one attempt and settle its delivery (see `record_attempts`)."""
    return record_attempts(sessions, [Outcome(claimed, result, attempted_at)], now, rng)[0]


def record_attempts(
    sessions: sessionmaker[Session],
    outcomes: Sequence[Outcome],
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> list[Recorded]:
    """Save a batch's attempts in one transaction and settle each delivery: succeeded, pending
    again after its retry delay, or failed after the last one. The endpoints' failure clocks move
    with them, and an endpoint failing for 5 days is disabled."""
    now = now or utcnow()
    if not outcomes:
        return []
    with transaction(sessions) as session:
        ids = [o.claimed.delivery_id for o in outcomes]
        deliveries = {
            d.id: d
            for d in session.execute(
                select(EventDelivery).where(EventDelivery.id.in_(ids)).with_for_update()
            ).scalars()
        }
        endpoints = {
            e.id: e
            for e in session.execute(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id.in_({d.endpoint_id for d in deliveries.values()}))
                .with_for_update()
            ).scalars()
        }
        recorded = []
        for outcome in outcomes:
            delivery = deliveries.get(outcome.claimed.delivery_id)
            if delivery is None:
                recorded.append(Recorded("deleted", None, False))  # its endpoint was deleted
                continue
            endpoint = endpoints[delivery.endpoint_id]
            recorded.append(_settle(session, delivery, endpoint, outcome, now, rng))
    return recorded


def _settle(
    session: Session,
    delivery: EventDelivery,
    endpoint: WebhookEndpoint,
    outcome: Outcome,
    now: datetime,
    rng: random.Random | None,
) -> Recorded:
    result = outcome.result
    attempts = delivery.attempts + 1
    next_at = None
    if result.ok:
        status = EventDeliveryStatus.SUCCEEDED
    else:
        delay = retry_delay(attempts, rng)
        next_at = None if delay is None else now + delay
        status = EventDeliveryStatus.FAILED if next_at is None else EventDeliveryStatus.PENDING
    if delivery.status == EventDeliveryStatus.SENDING:  # not canceled (endpoint disabled) meanwhile
        delivery.status = status
        delivery.attempts = attempts
        delivery.next_attempt_at = next_at
        delivery.claimed_at = None
        delivery.updated_at = now
    session.add(
        WebhookAttempt(
            id=new_id("wha"),
            delivery_id=delivery.id,
            event_id=delivery.event_id,
            endpoint_id=delivery.endpoint_id,
            organization_id=delivery.organization_id,
            attempted_at=outcome.attempted_at,
            succeeded=result.ok,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
            next_retry_at=next_at,
            response_body=result.response_body,
        )
    )
    disabled = note_outcome(session, endpoint, result.ok, now)
    if not result.ok and next_at is not None and not disabled:
        _hold_others(session, delivery, next_at)
    return Recorded(status, next_at, disabled)


def _hold_others(session: Session, delivery: EventDelivery, until: datetime) -> None:
    # The endpoint's other due deliveries wait for this one's retry rather than each probing.
    session.flush()
    session.execute(
        update(EventDelivery)
        .where(
            EventDelivery.endpoint_id == delivery.endpoint_id,
            EventDelivery.status == EventDeliveryStatus.PENDING,
            EventDelivery.next_attempt_at < until,
            EventDelivery.id != delivery.id,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )


def release(
    sessions: sessionmaker[Session], delivery_ids: Sequence[str], not_before: datetime | None
) -> None:
    """Give back claimed deliveries that were not attempted, due again at `not_before` if given.

    No attempt is counted: after a failed attempt they wait for its retry (see `record_attempt`).
    """
    if not delivery_ids:
        return
    values: dict[str, object] = {"status": EventDeliveryStatus.PENDING, "claimed_at": None}
    if not_before is not None:
        values["next_attempt_at"] = not_before
    with transaction(sessions) as session:
        session.execute(
            update(EventDelivery)
            .where(
                EventDelivery.id.in_(delivery_ids),
                EventDelivery.status == EventDeliveryStatus.SENDING,
            )
            .values(**values)
        )


def next_due_at(session: Session, endpoint_id: str) -> datetime | None:
    """When the endpoint's next pending delivery is due, or None."""
    when: datetime | None = session.execute(
        select(func.min(EventDelivery.next_attempt_at)).where(
            EventDelivery.endpoint_id == endpoint_id,
            EventDelivery.status == EventDeliveryStatus.PENDING,
        )
    ).scalar_one()
    return when


def overdue_endpoints(
    session: Session, settings: Settings, overdue_before: datetime, now: datetime
) -> list[str]:
    """Endpoints with deliveries due before `overdue_before` or claims past the lease."""
    query = (
        select(EventDelivery.endpoint_id)
        .where(
            or_(
                and_(
                    EventDelivery.status == EventDeliveryStatus.PENDING,
                    EventDelivery.next_attempt_at < overdue_before,
                ),
                and_(
                    EventDelivery.status == EventDeliveryStatus.SENDING,
                    EventDelivery.claimed_at < now - claim_lease(settings),
                ),
            )
        )
        .distinct()
        .limit(1000)
    )
    return list(session.execute(query).scalars())
