"""Dispatching events: an event becomes one delivery per endpoint that subscribes to it (DESIGN
5.8); `bridge.event_sending` sends them.

An event goes to the endpoints enabled when it is dispatched that subscribe to its type and existed
when it happened. Dispatch runs once per event (`dispatched_at`); the sweeper finds events whose
dispatch job was lost, and an organization may send an event again (a new round of retries).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.events import get_event
from bridge.ids import new_id
from bridge.models import Event, EventDelivery, EventDeliveryStatus, WebhookEndpoint
from bridge.webhook_endpoints import subscribes_to

DISPATCH_BATCH = 500  # events dispatched in one transaction (and redriven by one sweep)


def dispatch_events(session: Session, event_ids: Sequence[str], now: datetime) -> list[str]:
    """Make the per-endpoint deliveries of events not yet dispatched; the endpoints touched.

    An event goes to the endpoints enabled now that subscribe to its type and existed when it
    happened.
    """
    # One UPDATE marks them and returns the four columns dispatching reads, not the events' JSON:
    # a fan-out records two events per SMS, and loading and flushing each as an object cost the
    # worker more than the rest of their dispatch. Rows another dispatch holds are skipped.
    waiting = (
        select(Event.id)
        .where(Event.id.in_(event_ids), Event.dispatched_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    events = session.execute(
        update(Event)
        .where(Event.id.in_(waiting))
        .values(dispatched_at=now)
        .returning(Event.id, Event.organization_id, Event.type, Event.created_at),
        execution_options={"synchronize_session": False},
    ).all()
    if not events:
        return []
    organizations = {e.organization_id for e in events}
    endpoints = list(
        session.execute(
            select(WebhookEndpoint).where(
                WebhookEndpoint.organization_id.in_(organizations), WebhookEndpoint.enabled
            )
        ).scalars()
    )
    touched: set[str] = set()
    for event in events:
        for endpoint in endpoints:
            if (
                endpoint.organization_id == event.organization_id
                and endpoint.created_at <= event.created_at
                and subscribes_to(endpoint, event.type)
            ):
                session.add(_delivery(event.id, event.organization_id, endpoint, now))
                touched.add(endpoint.id)
    session.flush()
    return sorted(touched)


def _delivery(
    event_id: str, organization_id: str, endpoint: WebhookEndpoint, now: datetime
) -> EventDelivery:
    return EventDelivery(
        id=new_id("evd"),
        event_id=event_id,
        endpoint_id=endpoint.id,
        organization_id=organization_id,
        status=EventDeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def undispatched_event_ids(session: Session, created_before: datetime) -> list[str]:
    """Events whose dispatch job was lost (the sweeper's first look)."""
    query = (
        select(Event.id)
        .where(Event.dispatched_at.is_(None), Event.created_at < created_before)
        .order_by(Event.created_at)
        .limit(DISPATCH_BATCH)
    )
    return list(session.execute(query).scalars())


def resend_event(
    session: Session, organization_id: str, event_id: str, now: datetime | None = None
) -> list[str]:
    """Send an event again to every enabled endpoint subscribed to it; the endpoints touched."""
    now = now or utcnow()
    event = get_event(session, organization_id, event_id)
    endpoints = session.execute(
        select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == organization_id, WebhookEndpoint.enabled
        )
    ).scalars()
    existing = {
        d.endpoint_id: d
        for d in session.execute(
            select(EventDelivery).where(EventDelivery.event_id == event.id).with_for_update()
        ).scalars()
    }
    touched = []
    for endpoint in endpoints:
        if not subscribes_to(endpoint, event.type):
            continue
        delivery = existing.get(endpoint.id)
        if delivery is None:
            session.add(_delivery(event.id, event.organization_id, endpoint, now))
        elif delivery.status != EventDeliveryStatus.SENDING:
            # A new round: the whole retry schedule again.
            delivery.status = EventDeliveryStatus.PENDING
            delivery.attempts = 0
            delivery.next_attempt_at = now
            delivery.updated_at = now
        touched.append(endpoint.id)
    if event.dispatched_at is None:
        event.dispatched_at = now
    session.flush()
    return touched
