"""Events out to the organization's own application (DESIGN 5.8): endpoints, events, their
deliveries and each attempt.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridge.db import Base, UTCDateTime, utcnow
from bridge.models.base import Sequenced, Timestamped, partial_index, stored_as_text


class EventDeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # claimed by a worker at claimed_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt of the schedule failed
    CANCELED = "canceled"  # the endpoint was disabled or deleted first


class WebhookEndpoint(Sequenced, Timestamped, Base):
    """A URL of the organization's own application that events are POSTed to."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_org_seq", "organization_id", "seq"),)

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(100))
    # After a rotation the old secret signs too, until this time (24 hours).
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The first failed attempt since the last success: 5 days of failures disable the endpoint.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Sequenced, Base):
    """Something that happened, written in the transaction of the change it reports (an outbox)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_org_seq", "organization_id", "seq"),
        Index("ix_events_org_type_seq", "organization_id", "type", "seq"),
        # What the sweeper looks for: events whose endpoints have not been resolved yet.
        partial_index("ix_events_undispatched", "created_at", where="dispatched_at IS NULL"),
    )

    organization_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set once a worker has made the event's per-endpoint delivery rows.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EventDelivery(Timestamped, Base):
    """One event to one endpoint, and where its attempts stand."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        Index("ix_event_deliveries_due", "endpoint_id", "status", "next_attempt_at"),
        Index("ix_event_deliveries_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    organization_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[EventDeliveryStatus] = mapped_column(
        stored_as_text(EventDeliveryStatus, 16), default=EventDeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Sequenced, Base):
    """One POST of an event to an endpoint: when, what came back, how long it took, what next."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint_seq", "endpoint_id", "seq"),)

    delivery_id: Mapped[str] = mapped_column(String(40), index=True)
    event_id: Mapped[str] = mapped_column(String(40))
    endpoint_id: Mapped[str] = mapped_column(String(40))
    organization_id: Mapped[str] = mapped_column(String(40))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_body: Mapped[str | None] = mapped_column(Text)  # at most 1 KiB of it
