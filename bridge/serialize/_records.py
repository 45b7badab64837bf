"""The responses about the bridge's own records: deliveries, inbound SMS, the organization and its
people, and the pages that list them (DESIGN 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Self

from pydantic import Field
from sqlalchemy.orm import Session

from bridge import models
from bridge.organizations import help_text_for, is_opted_out, sender_numbers
from bridge.serialize._conversations import Channel, Message, Response, Subscriber, Timestamp
from bridge.subscribers import Profile

# The values of bridge.models' enums, as Literals (see _conversations).
DeliveryState = Literal[
    "pending", "sending", "sent", "delivered", "undelivered", "failed", "skipped", "canceled",
    "unknown",
]  # fmt: skip
# "received": stored by the webhook, its matching not done yet (DESIGN 5.5).
InboundState = Literal["received", "matched", "unmatched", "keyword"]


class Delivery(Response):
    """One SMS part to one recipient, and what became of it."""

    object: Literal["delivery"] = "delivery"
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
        from_ = delivery.from_phone or delivery.messaging_service_sid
        return cls.read(delivery, to=delivery.to_phone, from_=from_)


class InboundSms(Response):
    """An SMS a contact sent, matched to a channel or not."""

    object: Literal["inbound_sms"] = "inbound_sms"
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
        return cls.read(inbound, from_=inbound.from_phone, to=inbound.to_phone)


class User(Response):
    """A member of the organization."""

    object: Literal["user"] = "user"
    id: str
    organization_id: str
    name: str
    email: str | None
    phone: str | None
    created_at: Timestamp


class Contact(Response):
    """An external person with a mobile number."""

    object: Literal["contact"] = "contact"
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
        return cls.read(contact, opted_out=opted_out)

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


class ApiKey(Response):
    """One of the organization's active API keys; the key itself is shown only when created."""

    object: Literal["api_key"] = "api_key"
    id: str
    label: str | None
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(
        description="When the key last authenticated a request, to the minute."
    )

    @classmethod
    def of(cls, key: models.ApiKey, **extra: str) -> Self:
        """An API key as listed: never the key itself."""
        return cls.read(key, **extra)


class NewApiKey(ApiKey):
    """A key just created, with the key itself: shown this once, stored only as a hash."""

    api_key: str

    @classmethod
    def issued(cls, key: models.ApiKey, api_key: str) -> Self:
        """The new key's record and the key."""
        return cls.of(key, api_key=api_key)


class ApiKeyList(Page):
    """The organization's active API keys, oldest first."""

    data: list[ApiKey]
