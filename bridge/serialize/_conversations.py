"""The responses of the conversation: messages, subscribers, threads and channels (DESIGN 4)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from bridge import models
from bridge.channel_views import ChannelView
from bridge.subscribers import Profile
from bridge.threads import MessageRow, SubscriberRow, ThreadView

# The values of bridge.models' enums, as Literals so the description lists them inline. The builders
# cast the columns to them; validation checks the cast as each response is built.
MessageKind = Literal["text", "meta", "tracking_update", "pickup_reminder"]
SubscriberKind = Literal["user", "api_key", "contact"]

EPOCH = "Epoch seconds (UTC)."
Epoch = Annotated[int, Field(description=EPOCH)]
# A stored time, shown as epoch seconds: the same schema as `Epoch`, built from the datetime.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: int(value.timestamp()), return_type=int),
    Field(description=EPOCH),
]


class Response(BaseModel):
    """The base of every response: no field beyond the declared ones.

    `object` has its one value as default and stays required in the description (serialization
    defaults count as required), so a builder need not repeat it.
    """

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    @classmethod
    def read(cls, row: object, **values: Any) -> Self:
        """The response from `row`'s attributes of the fields' names; `values` add or override."""
        return cls(**cls.fields_of(row, **values))

    @classmethod
    def fields_of(cls, row: object, **values: Any) -> dict[str, Any]:
        """What `read` validates: `row`'s values of the fields' names, with `values` over them.

        `row` is an ORM object or a `Row` of columns (a thread read shows 150 messages' rows).
        """
        names = _field_names(cls)
        if isinstance(row, Row):
            # By position with the row's keys: looking each field up by name costs more.
            found = {k: v for k, v in zip(row._fields, row, strict=True) if k in names}
        else:
            # Not read where `values` stands in: an attribute of an ORM object may load.
            found = {n: getattr(row, n) for n in names if n not in values and hasattr(row, n)}
        found.update(values)
        return found


@functools.cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(model.model_fields)


class Reaction(Response):
    """An emoji a subscriber put on a message."""

    emoji: str
    subscriber_id: str
    created_at: Epoch


class Message(Response):
    """A single message in a thread or channel."""

    object: Literal["message"] = "message"
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
    def of(
        cls, message: models.Message | MessageRow, name: str | None, resource_id: str | None
    ) -> Self:
        """A message; `name` is its thread's name (or its channel's, for a channel-only one)."""
        return cls(**cls.values_of(message, name, resource_id))

    @classmethod
    def values_of(
        cls, message: models.Message | MessageRow, name: str | None, resource_id: str | None
    ) -> dict[str, Any]:
        """What `of` validates; a thread read validates its 150 messages at once, in the thread."""
        return cls.fields_of(
            message,
            resource_id=resource_id,
            media_urls=list(message.media_urls or []),
            reactions=list(message.reactions or []),
            name=name,
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
        row: models.ThreadSubscriber | models.ChannelSubscriber | SubscriberRow | None,
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
        name, resource_id = thread.name, thread.resource_id
        # One validation of the whole thread, its messages' values included: cheaper than one
        # model per message, and checked all the same.
        return cls.model_validate(
            {
                "object": "thread",
                "id": thread.id,
                "resource_id": resource_id,
                "organization_id": thread.organization_id,
                "location_id": thread.location_id,
                "name": name,
                "recent_messages": [
                    Message.values_of(m, name, resource_id) for m in view.recent_messages
                ],
                "has_more": view.has_more,
                "subscriber_ids": [r.subscriber_id for r in view.subscribers if not r.is_archived],
                "subscribers": [
                    Subscriber.of(r, view.profiles.get(r.subscriber_id), r.subscriber_id)
                    for r in view.subscribers
                ],
                "unread_by": view.unread_by,
                "updated_at": thread.updated_at,
            }
        )


class Channel(Response):
    """The SMS conversation between the organization and one set of contacts."""

    object: Literal["channel"]
    id: str
    name: str
    organization_id: str
    recent_messages: list[Message] = Field(description="At most the 150 newest published.")
    has_more: bool
    pending_messages: list[Message] = Field(
        description="Waiting for publish_to_channel_at: at most the 150 due first, soonest first. "
        "When 150 are shown, more may wait: page through them all with "
        "GET /v1/channels/{id}/messages?pending=true."
    )
    phone_hashes: list[str]
    publisher_ids: list[str] = Field(
        description="Resource ids of publishing threads, oldest first: at most the 150 that "
        "published last."
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


def load_messages(session: Session, messages: Sequence[models.Message]) -> list[Message]:
    """These messages, each named after its thread or else its channel, in at most two queries."""
    thread_ids = {m.thread_id for m in messages if m.thread_id}
    channel_ids = {m.channel_id for m in messages if not m.thread_id and m.channel_id}
    threads: dict[tuple[str, str], tuple[str | None, str]] = {}
    if thread_ids:
        Thread = models.Thread
        rows = session.execute(
            select(Thread.organization_id, Thread.id, Thread.name, Thread.resource_id).where(
                Thread.organization_id.in_({m.organization_id for m in messages}),
                Thread.id.in_(thread_ids),
            )
        )
        threads = {(org, tid): (name, rid) for org, tid, name, rid in rows}
    channels: dict[str, str] = {}
    if channel_ids:
        rows2 = session.execute(
            select(models.Channel.id, models.Channel.name).where(models.Channel.id.in_(channel_ids))
        )
        channels = {cid: name for cid, name in rows2}
    result = []
    for m in messages:
        if m.thread_id:
            name, resource_id = threads.get((m.organization_id, m.thread_id), (None, None))
            result.append(Message.of(m, name, resource_id))
        else:
            result.append(Message.of(m, channels.get(m.channel_id or ""), None))
    return result


def load_message(session: Session, message: models.Message) -> Message:
    """One message, named after its thread or else its channel."""
    return load_messages(session, [message])[0]
