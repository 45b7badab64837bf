"""What travels by SMS: a delivery of a message to one recipient, and every inbound SMS."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridge.db import Base, UTCDateTime, utcnow
from bridge.models.base import BigId, Sequenced, Timestamped, partial_index, stored_as_text


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    UNKNOWN = "unknown"


# Deliveries that may still send an SMS; the index on them must match the query's filter exactly.
OPEN_STATUSES_SQL = "status IN ('pending', 'sending', 'unknown')"


class Lane(enum.StrEnum):
    """The line a delivery waits in: conversation ahead of bulk notifications.

    Stored on each delivery; the workers run one queue per lane, named after it.
    """

    TEXT = "text"
    NOTIFICATIONS = "notifications"  # tracking updates and pickup reminders


class InboundStatus(enum.StrEnum):
    RECEIVED = "received"  # stored by the webhook; a worker matches it (DESIGN 5.5)
    MATCHED = "matched"
    UNMATCHED = "unmatched"
    KEYWORD = "keyword"


class Delivery(Timestamped, Base):
    """One SMS (one part of one message) to one recipient, and what became of it."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "subscriber_id", "part"),
        Index("ix_deliveries_status_updated", "status", "updated_at"),
        Index("ix_deliveries_to_order", "to_phone", "publish_seq", "part"),
        # The hot path's two lookups, each over the few rows still in play rather than every
        # delivery ever made: an earlier SMS to the same phone still on its way (the per-contact
        # order rule), and a message's deliveries left to claim.
        partial_index(
            "ix_deliveries_open_to_order",
            "to_phone",
            "publish_seq",
            "part",
            where=OPEN_STATUSES_SQL,
        ),
        partial_index(
            "ix_deliveries_pending",
            "message_id",
            "subscriber_id",
            "part",
            where="status = 'pending'",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), index=True)
    organization_id: Mapped[str] = mapped_column(String(40))
    channel_id: Mapped[str] = mapped_column(String(40))
    subscriber_id: Mapped[str] = mapped_column(String(40))
    to_phone: Mapped[str] = mapped_column(String(20))
    from_phone: Mapped[str | None] = mapped_column(String(20))
    messaging_service_sid: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text, default="")
    media_urls: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[DeliveryStatus] = mapped_column(
        stored_as_text(DeliveryStatus, 16), default=DeliveryStatus.PENDING
    )
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    twilio_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    part: Mapped[int] = mapped_column(Integer, default=1)
    parts: Mapped[int] = mapped_column(Integer, default=1)
    segments: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queue: Mapped[Lane] = mapped_column(stored_as_text(Lane, 32), default=Lane.TEXT)
    publish_seq: Mapped[int] = mapped_column(BigId, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InboundSms(Sequenced, Base):
    """Every inbound SMS Twilio posted, matched or not: nothing is dropped."""

    __tablename__ = "inbound_sms"
    __table_args__ = (
        Index("ix_inbound_sms_org_status", "organization_id", "status", "seq"),
        # The SMS stored by the webhook and not processed yet: few, and what the sweeper looks at.
        partial_index("ix_inbound_sms_received", "received_at", where="status = 'received'"),
    )

    message_sid: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_token: Mapped[str | None] = mapped_column(String(200), unique=True)
    organization_id: Mapped[str | None] = mapped_column(String(40))
    from_phone: Mapped[str] = mapped_column(String(64))
    to_phone: Mapped[str] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[InboundStatus] = mapped_column(
        stored_as_text(InboundStatus, 16), default=InboundStatus.RECEIVED
    )
    keyword: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(40))
    channel_id: Mapped[str | None] = mapped_column(String(40))
    response_twiml: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
