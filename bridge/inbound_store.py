"""Storing a batch of contacts' SMS as their messages and publishing them for relaying (DESIGN 5.5
step 6), in a fixed number of statements whatever the batch's size.

What `publishing.publish_message` does for a posted message, done for many contacts' SMS; the
one way a reply is stored (a single SMS is a batch of one). The batch's channels, their last
publishing threads, their contacts and those contacts' opt-outs are read once, and the messages,
deliveries and events are written with one multi-row statement each (Core, no ORM flush per
row). The channels and threads the session holds are updated as the database is, without a flush
of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bridge.actors import Actor
from bridge.channels import last_publisher_threads
from bridge.db import utcnow
from bridge.events import delivery_object, message_object, record_events
from bridge.messages import Posted
from bridge.models import (
    Channel,
    ChannelPublisher,
    ChannelSubscriber,
    Contact,
    Delivery,
    DeliveryStatus,
    Message,
    Organization,
    SubscriberType,
    Thread,
)
from bridge.organizations import opted_out_hashes
from bridge.publishing import (
    PublishResult,
    Recipient,
    delivery_rows,
    fill_missing_senders,
    lane_of,
    message_parts,
    next_publish_seq,
)

_messages = cast(Table, Message.__table__)
_deliveries = cast(Table, Delivery.__table__)
_publishers = cast(Table, ChannelPublisher.__table__)
_channels = cast(Table, Channel.__table__)
_threads = cast(Table, Thread.__table__)
_MESSAGE_FIELDS = tuple(column.key for column in _messages.c if not column.primary_key)
_TOUCH_PUBLISHER = (
    update(_publishers)
    .where(
        _publishers.c.channel_id == bindparam("b_channel_id"),
        _publishers.c.resource_id == bindparam("b_resource_id"),
    )
    .values(last_published_at=bindparam("b_at"), last_seq=bindparam("b_seq"))
)


@dataclass(frozen=True)
class Reply:
    """A contact's SMS matched to one of its channels: what becomes its message there."""

    contact_id: str
    channel_id: str
    text: str
    media_urls: Sequence[str] = ()


@dataclass
class _Batch:
    """What the batch's messages are published with, read once, and what they made."""

    org: Organization
    now: datetime
    channels: dict[str, Channel]
    threads: dict[str, Thread]  # channel id -> the thread that last published to it
    contacts: dict[str, list[Recipient]]  # channel id -> its contacts and their pool numbers
    opted_out: set[str]
    messages: list[Message] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def store_replies(session: Session, org: Organization, replies: Sequence[Reply]) -> list[Posted]:
    """Store each reply as its contact's message in the channel (and in the thread that last
    published there), published at once with a delivery per other contact; a Posted each, in
    order. They are published in the replies' order, so a contact's SMS are relayed in the order
    they came. Events: `delivery.updated` for each `skipped` delivery, then `message.created`.
    """
    if not replies:
        return []
    batch = _load(session, org, list(dict.fromkeys(reply.channel_id for reply in replies)))
    first = next_publish_seq()
    posted = [_publish(session, batch, reply, first + n) for n, reply in enumerate(replies)]
    _write(session, batch)
    record_events(session, org.id, batch.events)
    return posted


def _load(session: Session, org: Organization, channel_ids: list[str]) -> _Batch:
    channels = {
        channel.id: channel
        for channel in session.scalars(select(Channel).where(Channel.id.in_(channel_ids)))
    }
    contacts: dict[str, list[Recipient]] = {}
    for channel_id, sender_phone, contact in session.execute(
        select(ChannelSubscriber.channel_id, ChannelSubscriber.sender_phone, Contact)
        .join(Contact, Contact.id == ChannelSubscriber.subscriber_id)
        .where(
            ChannelSubscriber.channel_id.in_(channel_ids),
            ChannelSubscriber.type == SubscriberType.CONTACT,
        )
        .order_by(ChannelSubscriber.channel_id, Contact.id)
    ):
        contacts.setdefault(channel_id, []).append((contact, sender_phone))
    hashes = {contact.phone_hash for found in contacts.values() for contact, _ in found}
    return _Batch(
        org,
        utcnow(),
        channels,
        _last_publishers(session, org.id, channel_ids),
        contacts,
        opted_out_hashes(session, org.id, hashes),
    )


def _last_publishers(
    session: Session, organization_id: str, channel_ids: list[str]
) -> dict[str, Thread]:
    """The thread that last published to each channel (where it has one)."""
    thread_ids = last_publisher_threads(session, channel_ids)
    if not thread_ids:
        return {}
    threads = {
        thread.id: thread
        for thread in session.scalars(
            select(Thread).where(
                Thread.organization_id == organization_id,
                Thread.id.in_(set(thread_ids.values())),
            )
        )
    }
    return {c: threads[t] for c, t in thread_ids.items() if t in threads}


def _publish(session: Session, batch: _Batch, reply: Reply, seq: int) -> Posted:
    """The reply's message, published (`seq` its order), and its deliveries and events."""
    thread = batch.threads.get(reply.channel_id)
    message = Message.new(
        Actor.contact(batch.org.id, reply.contact_id),
        reply.text,
        batch.now,
        thread_id=thread.id if thread else None,
        channel_id=reply.channel_id,
        media_urls=reply.media_urls,
    )
    message.published_at, message.publish_seq = batch.now, seq
    members = batch.contacts.get(reply.channel_id, [])
    author = next((c for c, _ in members if c.id == reply.contact_id), None)
    parts = message_parts(message, author or session.get(Contact, reply.contact_id))
    recipients = _recipients(session, batch, reply)
    rows = delivery_rows(batch.org, message, recipients, batch.opted_out, parts, None, batch.now)
    skipped = [Delivery(**row) for row in rows if row["status"] == DeliveryStatus.SKIPPED]
    batch.events += [("delivery.updated", delivery_object(d)) for d in skipped]
    batch.events.append(("message.created", message_object(session, message)))
    batch.messages.append(message)
    batch.deliveries += rows
    result = PublishResult(
        message.id, reply.channel_id, lane_of(message), len(rows) - len(skipped), len(skipped)
    )
    return Posted(message, result)


def _recipients(session: Session, batch: _Batch, reply: Reply) -> list[Recipient]:
    """The channel's contacts but the reply's author, each with the number it hears it from."""
    members = batch.contacts.get(reply.channel_id, [])
    recipients = [(c, phone) for c, phone in members if c.id != reply.contact_id]
    if all(phone is not None for _, phone in recipients):
        return recipients
    channel = batch.channels[reply.channel_id]
    recipients = fill_missing_senders(session, channel, recipients)
    given = {contact.id: phone for contact, phone in recipients}
    batch.contacts[reply.channel_id] = [(c, phone or given.get(c.id)) for c, phone in members]
    return recipients


def _write(session: Session, batch: _Batch) -> None:
    """Insert the messages and their deliveries; the channels, their threads and publishers have
    just been published to."""
    connection = session.connection()
    rows = [{name: getattr(m, name) for name in _MESSAGE_FIELDS} for m in batch.messages]
    connection.execute(insert(_messages), rows)
    if batch.deliveries:
        connection.execute(insert(_deliveries), batch.deliveries)
    last_seq: dict[str, int] = {}
    for message in batch.messages:
        assert message.channel_id is not None and message.publish_seq is not None
        last_seq[message.channel_id] = message.publish_seq
    touched = [
        {"b_channel_id": channel_id, "b_resource_id": batch.threads[channel_id].resource_id}
        | {"b_at": batch.now, "b_seq": seq}
        for channel_id, seq in last_seq.items()
        if channel_id in batch.threads
    ]
    if touched:
        connection.execute(_TOUCH_PUBLISHER, touched)
    connection.execute(
        update(_channels).where(_channels.c.id.in_(list(last_seq))).values(updated_at=batch.now)
    )
    threads = {thread.id: thread for thread in batch.threads.values()}
    if threads:
        connection.execute(
            update(_threads)
            .where(_threads.c.organization_id == batch.org.id, _threads.c.id.in_(list(threads)))
            .values(updated_at=batch.now)
        )
    for row in [*batch.channels.values(), *threads.values()]:
        set_committed_value(row, "updated_at", batch.now)
