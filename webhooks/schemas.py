"""The API's request and response bodies as pydantic models: they validate, shape and document.

Response models mirror `bridge.serialize` field for field (DESIGN section 4) and forbid extra
fields, so a response that drifts from its description fails loudly in the tests instead of
quietly in a client. Request models are strict (no "5" for 5) and forbid unknown fields, so a typo
in a field name is a 422 instead of an ignored value. The domain functions keep the final word on
every rule; the constraints here repeat the ones a schema can express, so the OpenAPI tells the
truth about them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.messages import MAX_MEDIA, MAX_TEXT_LENGTH, MAX_URL_LENGTH
from bridge.pages import MAX_PAGE

MessageKind = Literal["text", "meta", "tracking_update", "pickup_reminder"]
PostableKind = Literal["text", "tracking_update", "pickup_reminder"]
SubscriberKind = Literal["user", "api_key", "contact"]
DeliveryState = Literal[
    "pending", "sending", "sent", "delivered", "undelivered", "failed", "skipped", "canceled",
    "unknown",
]  # fmt: skip
InboundState = Literal["received", "matched", "unmatched", "keyword"]

# DESIGN section 3: 1 to 128 letters, digits and `_ - . :` (bridge.ids.RESOURCE_ID decides).
RESOURCE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

Epoch = Annotated[int, Field(description="Epoch seconds (UTC).")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Label = Annotated[str, Field(max_length=128)]
Phone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="E.164, or the national format of DEFAULT_REGION.",
        examples=["+14155550123"],
    ),
]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"@")]
MediaUrl = Annotated[str, Field(max_length=MAX_URL_LENGTH, pattern=r"^https://\S+$")]
SubscriberId = Annotated[
    str, Field(min_length=5, max_length=64, pattern=r"^(usr|cnt|org)_[A-Za-z0-9]+$")
]


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# Responses: the seed's models -------------------------------------------------------------------


class Reaction(_Response):
    """An emoji a subscriber put on a message."""

    emoji: str
    subscriber_id: str
    created_at: Epoch


class Message(_Response):
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
    created_at: Epoch
    edited_at: Epoch | None
    publish_to_channel_at: Epoch | None
    published_at: Epoch | None = Field(description="When it went to the channel (added).")


class Subscriber(_Response):
    """A user, organization or contact on a thread or channel."""

    id: str
    type: SubscriberKind
    name: str | None
    email: str | None
    phone: str | None = Field(description="E.164.")
    is_archived: bool
    viewed_at: Epoch | None = Field(description="Always null for contacts.")


class Thread(_Response):
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
    updated_at: Epoch


class Channel(_Response):
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
    scheduled_publish_at: Epoch | None
    subscriber_hash: str
    subscriber_ids: list[str]
    subscribers: list[Subscriber]
    updated_at: Epoch


# Responses: the bridge's own records ------------------------------------------------------------


class Delivery(_Response):
    """One SMS part to one recipient, and what became of it."""

    object: Literal["delivery"]
    id: str
    message_id: str
    subscriber_id: str
    to: str
    from_: str | None = Field(alias="from", description="Sender number or Messaging Service SID.")
    status: DeliveryState
    error_code: int | None
    error_message: str | None
    twilio_sid: str | None
    part: int
    parts: int
    segments: int
    attempts: int
    created_at: Epoch
    updated_at: Epoch


class InboundSms(_Response):
    """An SMS a contact sent, matched to a channel or not."""

    object: Literal["inbound_sms"]
    id: str
    message_sid: str
    from_: str = Field(alias="from")
    to: str
    status: InboundState
    keyword: str | None
    message_id: str | None
    channel_id: str | None
    received_at: Epoch


class User(_Response):
    """A member of the organization."""

    object: Literal["user"]
    id: str
    organization_id: str
    name: str
    email: str | None
    phone: str | None
    created_at: Epoch


class Contact(_Response):
    """An external person with a mobile number."""

    object: Literal["contact"]
    id: str
    organization_id: str
    name: str | None
    email: str | None
    phone: str
    phone_hash: str
    opted_out: bool
    created_at: Epoch


class Organization(_Response):
    """The organization the API key names."""

    object: Literal["organization"]
    id: str
    name: str
    senders: list[str]
    messaging_service_sid: str | None
    help_text: str
    subscriber: Subscriber
    created_at: Epoch


class MessageList(_Response):
    """A page of messages, newest first."""

    object: Literal["list"]
    data: list[Message]
    has_more: bool


class DeliveryList(_Response):
    """The deliveries of one message."""

    object: Literal["list"]
    data: list[Delivery]
    has_more: bool


class ChannelList(_Response):
    """Channels, most recently updated first."""

    object: Literal["list"]
    data: list[Channel]
    has_more: bool


class ContactList(_Response):
    """Contacts."""

    object: Literal["list"]
    data: list[Contact]
    has_more: bool


class InboundSmsList(_Response):
    """Inbound SMS records, newest first."""

    object: Literal["list"]
    data: list[InboundSms]
    has_more: bool


class ErrorDetail(_Response):
    type: str
    message: str
    param: str | None = Field(description="The field at fault, when there is one.")


class Error(_Response):
    """Every error answers with this body."""

    error: ErrorDetail


# Requests ---------------------------------------------------------------------------------------


class Empty(_Request):
    """No fields: the request needs no body, and an empty object is accepted."""


class OrganizationUpdate(_Request):
    """Change the organization's name or HELP text."""

    name: Name | None = None
    help_text: Annotated[str, Field(max_length=1600)] | None = None


class UserCreate(_Request):
    """A new member."""

    name: Name
    email: Email | None = None
    phone: Phone | None = None


class ContactCreate(_Request):
    """Find or create the contact with this phone number."""

    phone: Phone
    name: Name | None = None
    email: Email | None = None


class NewContact(_Request):
    """A contact to find or create by phone, as a subscriber."""

    type: Literal["contact"]
    phone: Phone
    name: Name | None = None
    email: Email | None = None


SubscriberSpec = SubscriberId | NewContact


class ThreadCreate(_Request):
    """Create the thread about a resource (idempotent)."""

    resource_id: Annotated[str, Field(pattern=RESOURCE_PATTERN, examples=["order-1042"])]
    name: Name | None = None
    location_id: Label | None = None
    subscribers: Annotated[list[SubscriberSpec], Field(max_length=100)] = []


class ThreadUpdate(_Request):
    """Rename a thread or move it to another location."""

    name: Name | None = None
    location_id: Label | None = None


class SubscriberAdd(_Request):
    """Subscribe a user, contact or the organization; an archived one comes back."""

    subscriber: SubscriberSpec


class MessageCreate(_Request):
    """A message to post; it is published now, or at `publish_to_channel_at`."""

    text: Annotated[str, Field(max_length=MAX_TEXT_LENGTH)] | None = None
    type: PostableKind | None = None
    media_urls: Annotated[list[MediaUrl], Field(max_length=MAX_MEDIA)] | None = None
    publish_to_channel_at: Epoch | None = None


class MessageUpdate(_Request):
    """New text (and media) for a message: only its author may edit it."""

    text: Annotated[str, Field(max_length=MAX_TEXT_LENGTH)] | None = None
    media_urls: Annotated[list[MediaUrl], Field(max_length=MAX_MEDIA)] | None = None


# Query strings (lax: every value arrives as a string) -------------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description="Page size.")]
Cursor = Annotated[
    str, Field(min_length=1, max_length=64, description="Return objects older than this id.")
]


class PageQuery(_Query):
    limit: Limit = 50
    before: Cursor | None = None


class PhoneQuery(_Query):
    phone: Phone


class ChannelQuery(PageQuery):
    phone: Phone


class InboundQuery(PageQuery):
    status: InboundState | None = None
