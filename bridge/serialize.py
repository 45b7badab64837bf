"""The API's responses, each defined once: the JSON of DESIGN section 4 as pydantic models.

Each model is at once the wire format, the schema the OpenAPI description is generated from, and
(through its `of` builder) the serializer: a view builds the model and the web layer dumps it. The
models forbid extra fields and are validated as they are built, so a response that drifts from its
description fails loudly in the tests instead of quietly in a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import models
from bridge.channel_views import ChannelView
from bridge.organizations import help_text_for, is_opted_out, sender_numbers
from bridge.subscribers import Profile
from bridge.threads import ThreadView

# The values of bridge.models' enums, as Literals so the description lists them inline. The builders
# cast the columns to them; validation checks the cast as each response is built.
MessageKind = Literal["text", "meta", "tracking_update", "pickup_reminder"]
SubscriberKind = Literal["user", "api_key", "contact"]
DeliveryState = Literal[
    "pending", "sending", "sent", "delivered", "undelivered", "failed", "skipped", "canceled",
    "unknown",
]  # fmt: skip
InboundState = Literal["received", "matched", "unmatched", "keyword"]

EPOCH = "Epoch seconds (UTC)."
Epoch = Annotated[int, Field(description=EPOCH)]
# A stored time, shown as epoch seconds: the same schema as `Epoch`, built from the datetime.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: int(value.timestamp()), return_type=int),
    Field(description=EPOCH),
]


class Response(BaseModel):
    """The base of every response: no field beyond the declared ones."""

    model_config = ConfigDict(extra="forbid")


class Reaction(Response):
    """An emoji a subscriber put on a message."""

    emoji: str
    subscriber_id: str
    created_at: Epoch


class Message(Response):
    """A single message in a thread or channel."""

    object: Literal["message"]
    id: str
    thread_id: str | None
    channel_id: str | None = Field(description="The channel it is published to (added).")
    resource_id: str | None
    subscriber_id: str = Field(description="The author.")
    text: str | None
    type: MessageKind
    event: str | None
    media_urls: list[str]
    reactions: list[Reaction]
    name: str | None = Field(description="The name of its thread (or channel, if it has none).")
    created_at: Timestamp
    edited_at: Timestamp | None
    publish_to_channel_at: Timestamp | None
    published_at: Timestamp | None = Field(description="When it went to the channel (added).")

    @classmethod
    def of(cls, message: models.Message, name: str | None, resource_id: str | None) -> Self:
        """A message; `name` is its thread's name (or its channel's, for a channel-only one)."""
        return cls(
            object="message",
            id=message.id,
            thread_id=message.thread_id,
            channel_id=message.channel_id,
            resource_id=resource_id,
            subscriber_id=message.subscriber_id,
            text=message.text,
            type=cast(MessageKind, message.type),
            event=message.event,
            media_urls=list(message.media_urls or []),
            reactions=list(message.reactions or []),
            name=name,
            created_at=message.created_at,
            edited_at=message.edited_at,
            publish_to_channel_at=message.publish_to_channel_at,
            published_at=message.published_at,
        )


class Subscriber(Response):
    """A user, organization or contact on a thread or channel."""

    id: str
    type: SubscriberKind
    name: str | None
    email: str | None
    phone: str | None = Field(description="E.164.")
    is_archived: bool
    viewed_at: Timestamp | None = Field(description="Always null for contacts.")

    @classmethod
    def of(
        cls,
        row: models.ThreadSubscriber | models.ChannelSubscriber | None,
        profile: Profile | None,
        subscriber_id: str,
    ) -> Self:
        """A subscriber; `viewed_at` is always null for contacts."""
        kind = profile.type if profile else (row.type if row else None)
        viewed = getattr(row, "viewed_at", None) if kind != models.SubscriberType.CONTACT else None
        return cls(
            id=subscriber_id,
            type=cast(SubscriberKind, kind),
            name=profile.name if profile else None,
            email=profile.email if profile else None,
            phone=profile.phone if profile else None,
            is_archived=bool(getattr(row, "is_archived", False)),
            viewed_at=viewed,
        )


class Thread(Response):
    """The conversation about one resource; its id is `thrd_` + the resource id."""

    object: Literal["thread"]
    id: str
    resource_id: str
    organization_id: str
    location_id: str | None
    name: str | None
    recent_messages: list[Message] = Field(description="At most the 150 newest, oldest first.")
    has_more: bool
    subscriber_ids: list[str] = Field(description="Active subscribers.")
    subscribers: list[Subscriber] = Field(description="Active and archived subscribers.")
    unread_by: list[str]
    updated_at: Timestamp

    @classmethod
    def of(cls, view: ThreadView) -> Self:
        """A thread with its recent messages, subscribers and unread state."""
        thread = view.thread
        return cls(
            object="thread",
            id=thread.id,
            resource_id=thread.resource_id,
            organization_id=thread.organization_id,
            location_id=thread.location_id,
            name=thread.name,
            recent_messages=[
                Message.of(m, thread.name, thread.resource_id) for m in view.recent_messages
            ],
            has_more=view.has_more,
            subscriber_ids=[r.subscriber_id for r in view.subscribers if not r.is_archived],
            subscribers=[
                Subscriber.of(r, view.profiles.get(r.subscriber_id), r.subscriber_id)
                for r in view.subscribers
            ],
            unread_by=view.unread_by,
            updated_at=thread.updated_at,
        )


class Channel(Response):
    """The SMS conversation between the organization and one set of contacts."""

    object: Literal["channel"]
    id: str
    name: str
    organization_id: str
    recent_messages: list[Message] = Field(description="At most the 150 newest published.")
    has_more: bool
    pending_messages: list[Message] = Field(description="Waiting for publish_to_channel_at.")
    phone_hashes: list[str]
    publisher_ids: list[str] = Field(
        description="Resource ids of publishing threads, oldest first."
    )
    scheduled_publish_at: Timestamp | None
    subscriber_hash: str
    subscriber_ids: list[str]
    subscribers: list[Subscriber]
    updated_at: Timestamp

    @classmethod
    def of(cls, view: ChannelView) -> Self:
        """A channel with its subscribers, hashes, publishers, recent and pending messages."""
        channel = view.channel
        pending_times = [
            m.publish_to_channel_at for m in view.pending_messages if m.publish_to_channel_at
        ]
        return cls(
            object="channel",
            id=channel.id,
            name=channel.name,
            organization_id=channel.organization_id,
            recent_messages=[_in_channel(view, m) for m in view.recent_messages],
            has_more=view.has_more,
            pending_messages=[_in_channel(view, m) for m in view.pending_messages],
            phone_hashes=view.phone_hashes,
            publisher_ids=view.publisher_ids,
            scheduled_publish_at=min(pending_times) if pending_times else None,
            subscriber_hash=channel.subscriber_hash,
            subscriber_ids=[r.subscriber_id for r in view.subscribers],
            subscribers=[
                Subscriber.of(r, view.profiles.get(r.subscriber_id), r.subscriber_id)
                for r in view.subscribers
            ],
            updated_at=channel.updated_at,
        )


def _in_channel(view: ChannelView, message: models.Message) -> Message:
    # A message as a channel shows it: named after its thread, or else the channel.
    if message.thread_id:
        return Message.of(
            message,
            view.thread_names.get(message.thread_id),
            view.thread_resources.get(message.thread_id),
        )
    return Message.of(message, view.channel.name, None)


class Delivery(Response):
    """One SMS part to one recipient, and what became of it."""

    object: Literal["delivery"]
    id: str
    message_id: str
    subscriber_id: str
    to: str
    from_: str | None = Field(
        serialization_alias="from", description="Sender number or Messaging Service SID."
    )
    status: DeliveryState
    error_code: int | None
    error_message: str | None
    twilio_sid: str | None
    part: int
    parts: int
    segments: int
    attempts: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, delivery: models.Delivery) -> Self:
        """A delivery: one SMS part to one recipient."""
        return cls(
            object="delivery",
            id=delivery.id,
            message_id=delivery.message_id,
            subscriber_id=delivery.subscriber_id,
            to=delivery.to_phone,
            from_=delivery.from_phone or delivery.messaging_service_sid,
            status=cast(DeliveryState, delivery.status),
            error_code=delivery.error_code,
            error_message=delivery.error_message,
            twilio_sid=delivery.twilio_sid,
            part=delivery.part,
            parts=delivery.parts,
            segments=delivery.segments,
            attempts=delivery.attempts,
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
        )


class InboundSms(Response):
    """An SMS a contact sent, matched to a channel or not."""

    object: Literal["inbound_sms"]
    id: str
    message_sid: str
    from_: str = Field(serialization_alias="from")
    to: str
    status: InboundState
    keyword: str | None
    message_id: str | None
    channel_id: str | None
    received_at: Timestamp

    @classmethod
    def of(cls, inbound: models.InboundSms) -> Self:
        """An inbound SMS record, matched or not."""
        return cls(
            object="inbound_sms",
            id=inbound.id,
            message_sid=inbound.message_sid,
            from_=inbound.from_phone,
            to=inbound.to_phone,
            status=cast(InboundState, inbound.status),
            keyword=inbound.keyword,
            message_id=inbound.message_id,
            channel_id=inbound.channel_id,
            received_at=inbound.received_at,
        )


class User(Response):
    """A member of the organization."""

    object: Literal["user"]
    id: str
    organization_id: str
    name: str
    email: str | None
    phone: str | None
    created_at: Timestamp

    @classmethod
    def of(cls, user: models.User) -> Self:
        """A user of the organization."""
        return cls(
            object="user",
            id=user.id,
            organization_id=user.organization_id,
            name=user.name,
            email=user.email,
            phone=user.phone,
            created_at=user.created_at,
        )


class Contact(Response):
    """An external person with a mobile number."""

    object: Literal["contact"]
    id: str
    organization_id: str
    name: str | None
    email: str | None
    phone: str
    phone_hash: str
    opted_out: bool
    created_at: Timestamp

    @classmethod
    def of(cls, contact: models.Contact, opted_out: bool) -> Self:
        """A contact of the organization, with whether it has opted out of SMS."""
        return cls(
            object="contact",
            id=contact.id,
            organization_id=contact.organization_id,
            name=contact.name,
            email=contact.email,
            phone=contact.phone,
            phone_hash=contact.phone_hash,
            opted_out=opted_out,
            created_at=contact.created_at,
        )

    @classmethod
    def load(cls, session: Session, contact: models.Contact) -> Self:
        """A contact, looking up whether it has opted out of the organization's SMS."""
        return cls.of(contact, is_opted_out(session, contact.organization_id, contact.phone_hash))


class Organization(Response):
    """The organization the API key names."""

    object: Literal["organization"]
    id: str
    name: str
    senders: list[str]
    messaging_service_sid: str | None
    help_text: str
    subscriber: Subscriber
    created_at: Timestamp

    @classmethod
    def of(cls, org: models.Organization, senders: list[str], help_text: str) -> Self:
        """The organization, its senders and its subscriber record."""
        profile = Profile(org.id, models.SubscriberType.API_KEY, org.name, None, None)
        return cls(
            object="organization",
            id=org.id,
            name=org.name,
            senders=senders,
            messaging_service_sid=org.messaging_service_sid,
            help_text=help_text,
            subscriber=Subscriber.of(None, profile, org.id),
            created_at=org.created_at,
        )

    @classmethod
    def load(cls, session: Session, org: models.Organization) -> Self:
        """The organization, looking up its sender numbers."""
        return cls.of(org, sender_numbers(session, org.id), help_text_for(org))


def load_messages(session: Session, messages: Sequence[models.Message]) -> list[Message]:
    """These messages, each named after its thread or else its channel, in at most two queries."""
    thread_ids = {m.thread_id for m in messages if m.thread_id}
    channel_ids = {m.channel_id for m in messages if not m.thread_id and m.channel_id}
    threads: dict[str, tuple[str | None, str]] = {}
    if thread_ids:
        rows = session.execute(
            select(models.Thread.id, models.Thread.name, models.Thread.resource_id).where(
                models.Thread.id.in_(thread_ids)
            )
        )
        threads = {tid: (name, rid) for tid, name, rid in rows}
    channels: dict[str, str] = {}
    if channel_ids:
        rows2 = session.execute(
            select(models.Channel.id, models.Channel.name).where(models.Channel.id.in_(channel_ids))
        )
        channels = {cid: name for cid, name in rows2}
    result = []
    for m in messages:
        if m.thread_id:
            name, resource_id = threads.get(m.thread_id, (None, None))
            result.append(Message.of(m, name, resource_id))
        else:
            result.append(Message.of(m, channels.get(m.channel_id or ""), None))
    return result


def load_message(session: Session, message: models.Message) -> Message:
    """One message, named after its thread or else its channel."""
    return load_messages(session, [message])[0]


class Page(Response):
    """A page of a list: `{"object": "list", "data", "has_more"}`; subclasses type `data`."""

    object: Literal["list"]
    data: Sequence[Response]
    has_more: bool

    @classmethod
    def of(cls, data: Sequence[Response], has_more: bool = False) -> Self:
        """A page holding `data`."""
        return cls(object="list", data=data, has_more=has_more)


class MessageList(Page):
    """A page of messages, newest first."""

    data: list[Message]


class DeliveryList(Page):
    """The deliveries of one message."""

    data: list[Delivery]


class ChannelList(Page):
    """Channels, most recently updated first."""

    data: list[Channel]


class ContactList(Page):
    """Contacts."""

    data: list[Contact]


class InboundSmsList(Page):
    """Inbound SMS records, newest first."""

    data: list[InboundSms]
