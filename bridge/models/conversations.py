"""Threads, channels and their messages: the seed's models (DESIGN 3)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridge.db import Base, UTCDateTime, utcnow
from bridge.ids import new_id
from bridge.models.base import BigId, Sequenced, Timestamped, stored_as_text

if TYPE_CHECKING:
    from bridge.actors import Actor


class MessageType(enum.StrEnum):
    TEXT = "text"
    META = "meta"
    TRACKING_UPDATE = "tracking_update"
    PICKUP_REMINDER = "pickup_reminder"


class SubscriberType(enum.StrEnum):
    USER = "user"
    API_KEY = "api_key"
    CONTACT = "contact"


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
