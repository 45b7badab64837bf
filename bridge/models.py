"""The bridge's tables: the seed's models made real, plus deliveries, inbound SMS and opt-outs.

Ids are opaque prefixed strings (DESIGN section 3). Messages and inbound SMS also carry an integer
`seq`, their primary key, which orders them and backs cursor pagination.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridge.db import Base, UTCDateTime, utcnow
from bridge.ids import new_id

if TYPE_CHECKING:
    from bridge.actors import Actor

BigId = BigInteger().with_variant(Integer, "sqlite")


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index of only the rows `where` holds, on PostgreSQL and SQLite alike."""
    return Index(name, *columns, postgresql_where=text(where), sqlite_where=text(where))


def stored_as_text(kind: type[enum.StrEnum], length: int) -> Enum:
    """A column of `kind` stored as the enum's values in a VARCHAR(`length`), as it always was.

    No native enum type and no CHECK constraint: the schema stays what the migrations made, and a
    value is read back as its enum member.
    """
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
    )


class Sequenced:
    """A row with a database-wide order (`seq`, the primary key) and a public id."""

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)


class Timestamped:
    """A row that keeps when it was created and last changed: the same moment for a new row."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __init__(self, **values: Any) -> None:
        values.setdefault("created_at", utcnow())
        values.setdefault("updated_at", values["created_at"])
        super().__init__(**values)


class MessageType(enum.StrEnum):
    TEXT = "text"
    META = "meta"
    TRACKING_UPDATE = "tracking_update"
    PICKUP_REMINDER = "pickup_reminder"


class SubscriberType(enum.StrEnum):
    USER = "user"
    API_KEY = "api_key"
    CONTACT = "contact"


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


class Organization(Timestamped, Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    help_text: Mapped[str | None] = mapped_column(Text)
    messaging_service_sid: Mapped[str | None] = mapped_column(String(64))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Kept to the minute, not per request (bridge.keys.note_key_used).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SenderNumber(Base):
    """A number the organization sends from; it also tells which organization an inbound `To` is."""

    __tablename__ = "sender_numbers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("organization_id", "phone_hash"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(20))
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The contact's last START: a status callback about an SMS sent before it cannot opt them out.
    opted_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OptOut(Base):
    """A phone that said STOP to an organization; START removes the row."""

    __tablename__ = "opt_outs"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    opted_out_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32), default="keyword")


class Thread(Timestamped, Base):
    """The conversation about one resource: `thrd_<resource_id>`, unique within its organization."""

    __tablename__ = "threads"
    __table_args__ = (UniqueConstraint("organization_id", "resource_id"),)

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(140), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(128))
    location_id: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(200))


# A thread is named by its organization and its id together: every reference carries both.
_THREAD_KEY = ["threads.organization_id", "threads.id"]


class ThreadSubscriber(Base):
    __tablename__ = "thread_subscribers"
    __table_args__ = (ForeignKeyConstraint(["organization_id", "thread_id"], _THREAD_KEY),)

    organization_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(140), primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[SubscriberType] = mapped_column(stored_as_text(SubscriberType, 16))
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False)
    viewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Channel(Timestamped, Base):
    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    subscriber_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text, default="")


class ChannelSubscriber(Base):
    __tablename__ = "channel_subscribers"
    __table_args__ = (Index("ix_channel_subscribers_sender", "subscriber_id", "sender_phone"),)

    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"), primary_key=True)
    subscriber_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[SubscriberType] = mapped_column(stored_as_text(SubscriberType, 16))
    position: Mapped[int] = mapped_column(Integer, default=0)
    # The pool number this contact hears the channel from (DESIGN 5.6); null for non-contacts.
    sender_phone: Mapped[str | None] = mapped_column(String(20))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChannelPhoneHash(Base):
    """The index from a contact's phone hash to the channels it is in."""

    __tablename__ = "channel_phone_hashes"
    __table_args__ = (Index("ix_channel_phone_hashes_lookup", "organization_id", "phone_hash"),)

    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"), primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(40))


class ChannelPublisher(Base):
    """A thread (by resource id) that has published to a channel."""

    __tablename__ = "channel_publishers"

    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(140))
    first_published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_seq: Mapped[int] = mapped_column(BigId, default=0)
    last_seq: Mapped[int] = mapped_column(BigId, default=0)


class Message(Sequenced, Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_thread_seq", "organization_id", "thread_id", "seq"),
        ForeignKeyConstraint(["organization_id", "thread_id"], _THREAD_KEY),
        Index("ix_messages_channel_seq", "channel_id", "seq"),
        Index("ix_messages_due", "published_at", "canceled_at", "publish_to_channel_at"),
    )

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    thread_id: Mapped[str | None] = mapped_column(String(140))
    channel_id: Mapped[str | None] = mapped_column(ForeignKey("channels.id"))
    subscriber_id: Mapped[str] = mapped_column(String(40))
    author_type: Mapped[SubscriberType] = mapped_column(stored_as_text(SubscriberType, 16))
    text: Mapped[str | None] = mapped_column(Text)
    type: Mapped[MessageType] = mapped_column(
        stored_as_text(MessageType, 32), default=MessageType.TEXT
    )
    event: Mapped[str | None] = mapped_column(String(64))
    media_urls: Mapped[list[Any]] = mapped_column(default=list)
    reactions: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    publish_to_channel_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Order of publishing in the channel: SMS to one contact leave in this order.
    publish_seq: Mapped[int | None] = mapped_column(BigId)

    @classmethod
    def new(
        cls,
        author: Actor,
        text: str,
        now: datetime,
        *,
        thread_id: str | None = None,
        channel_id: str | None = None,
        type: MessageType = MessageType.TEXT,
        event: str | None = None,
        media_urls: Sequence[str] = (),
        publish_to_channel_at: datetime | None = None,
    ) -> Message:
        """A new message by `author`, not yet published: posted, relayed from SMS, or meta."""
        return cls(
            id=new_id("msg"),
            organization_id=author.organization_id,
            thread_id=thread_id,
            channel_id=channel_id,
            subscriber_id=author.subscriber_id,
            author_type=author.type,
            text=text,
            type=type,
            event=event,
            media_urls=list(media_urls),
            reactions=[],
            created_at=now,
            publish_to_channel_at=publish_to_channel_at,
        )


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


# Events out (DESIGN 5.8) ------------------------------------------------------------------------


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
    status: Mapped[str] = mapped_column(String(16), default=EventDeliveryStatus.PENDING.value)
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
