"""Publishing: a message enters its channel and gets one delivery per recipient (DESIGN 5.4).

Publishing and creating the deliveries happen in one transaction; the caller enqueues the work after
commit. Meta messages are published too (they are seen in the channel) but never go by SMS.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from bridge.channels import assign_senders, rename_channel
from bridge.db import insert_or_get, utcnow
from bridge.errors import NotFound
from bridge.events import record_deliveries, record_message
from bridge.ids import new_id
from bridge.models import (
    Channel,
    ChannelPublisher,
    ChannelSubscriber,
    Contact,
    Delivery,
    DeliveryStatus,
    Lane,
    Message,
    MessageType,
    Organization,
    SubscriberType,
    Thread,
)
from bridge.organizations import opted_out_hashes
from bridge.phones import phone_time_zones
from bridge.quiet_hours import QuietWindow, quiet_until
from bridge.settings import Settings
from bridge.sms_text import relay_prefix, segment_count, split_text

NOTIFICATION_TYPES = frozenset({MessageType.TRACKING_UPDATE, MessageType.PICKUP_REMINDER})
PUBLISHABLE_TYPES = frozenset({MessageType.TEXT}) | NOTIFICATION_TYPES
OPTED_OUT = "the contact opted out of SMS from this organization"

# A recipient of a published message, and the pool number it hears the channel from.
Recipient = tuple[Contact, str | None]


@dataclass(frozen=True)
class PublishResult:
    """What publishing made: the deliveries to send, and the lane they wait in."""

    message_id: str
    channel_id: str
    lane: Lane
    pending: int
    skipped: int


def next_publish_seq() -> int:
    """The order of a message published now: microseconds since the epoch, across processes."""
    return time.time_ns() // 1000


def lane_of(message: Message) -> Lane:
    """The lane a message's deliveries wait in: notifications behind conversation."""
    return Lane.NOTIFICATIONS if message.type in NOTIFICATION_TYPES else Lane.TEXT


def publish_message(
    session: Session, settings: Settings, message: Message, now: datetime | None = None
) -> PublishResult:
    """Publish a message into its channel, creating its deliveries in the same transaction.

    One delivery per (recipient, part): every contact of the channel except the author; opted-out
    contacts get one `skipped` delivery. A meta message gets none. The caller enqueues after commit.
    Posted and scheduled messages and meta messages come here; contacts' replies are published in
    batches by `inbound_store.store_replies`.
    """
    now = now or utcnow()
    if message.channel_id is None:
        raise NotFound("the message has no channel", "channel_id")
    channel = session.get(Channel, message.channel_id)
    assert channel is not None
    message.published_at = now
    message.publish_seq = next_publish_seq()
    channel.updated_at = now
    lane = lane_of(message)
    if message.type == MessageType.META:
        session.flush()
        return PublishResult(message.id, channel.id, lane, 0, 0)
    if message.thread_id is not None:
        _record_publisher(session, channel.id, message, now)
    if message.author_type == SubscriberType.USER:
        _join_author(session, channel, message.subscriber_id, now)
    rows = _delivery_rows(session, settings, channel, message, lane, now)
    if rows:
        session.execute(insert(Delivery), rows)
    skipped_rows = [r for r in rows if r["status"] == DeliveryStatus.SKIPPED]
    # Built from the rows just inserted, not added to the session: no query to report them.
    record_deliveries(session, (Delivery(**r) for r in skipped_rows))
    skipped = len(skipped_rows)
    session.flush()
    return PublishResult(message.id, channel.id, lane, len(rows) - skipped, skipped)


def _record_publisher(session: Session, channel_id: str, message: Message, now: datetime) -> None:
    thread = session.get(Thread, (message.organization_id, message.thread_id))
    assert thread is not None
    row = session.get(ChannelPublisher, (channel_id, thread.resource_id))
    seq = message.publish_seq or 0
    if row is None:
        row = ChannelPublisher(
            channel_id=channel_id,
            resource_id=thread.resource_id,
            thread_id=thread.id,
            first_published_at=now,
            first_seq=seq,
        )
        session.add(row)
    row.last_published_at = now
    row.last_seq = seq


def _join_author(session: Session, channel: Channel, user_id: str, now: datetime) -> None:
    if session.get(ChannelSubscriber, (channel.id, user_id)) is not None:
        return
    top = session.execute(
        select(func.max(ChannelSubscriber.position)).where(
            ChannelSubscriber.channel_id == channel.id
        )
    ).scalar_one()
    row = ChannelSubscriber(
        channel_id=channel.id,
        subscriber_id=user_id,
        type=SubscriberType.USER,
        position=(top or 0) + 1,
        added_at=now,
    )
    # The same user's concurrent message may join them first: then there is nothing to rename.
    _, added = insert_or_get(
        session, row, lambda: session.get(ChannelSubscriber, (channel.id, user_id))
    )
    if added:
        rename_channel(session, channel)


def _delivery_rows(
    session: Session,
    settings: Settings,
    channel: Channel,
    message: Message,
    lane: Lane,
    now: datetime,
) -> list[dict[str, object]]:
    """The message's deliveries: its parts for each recipient, one `skipped` row if opted out."""
    recipients = _recipients(session, channel, message)
    if not recipients:
        return []
    org = session.get(Organization, channel.organization_id)
    assert org is not None
    opted_out = opted_out_hashes(
        session, channel.organization_id, [c.phone_hash for c, _ in recipients]
    )
    window = settings.quiet_window if lane == Lane.NOTIFICATIONS else None
    # By a user or the organization: a contact's replies are published by inbound_store.
    parts = message_parts(message, None)
    return delivery_rows(org, message, recipients, opted_out, parts, window, now)


def delivery_rows(
    org: Organization,
    message: Message,
    recipients: Sequence[Recipient],
    opted_out: Collection[str],
    parts: Sequence[str],
    window: QuietWindow | None,
    now: datetime,
) -> list[dict[str, object]]:
    """The rows of a published message's deliveries to these recipients (none is its author),
    given which of their phone hashes opted out, its SMS parts and the quiet window of its lane."""
    lane = lane_of(message)
    rows: list[dict[str, object]] = []
    for contact, sender_phone in recipients:
        base = {
            "message_id": message.id,
            "organization_id": org.id,
            "channel_id": message.channel_id,
            "subscriber_id": contact.id,
            "to_phone": contact.phone,
            "from_phone": sender_phone,
            "messaging_service_sid": None if sender_phone else org.messaging_service_sid,
            "queue": lane,
            "publish_seq": message.publish_seq,
            "parts": len(parts),
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        if contact.phone_hash in opted_out:
            rows.append(base | _skipped_row())
            continue
        not_before = quiet_until(now, phone_time_zones(contact.phone), window) if window else None
        rows.extend(base | row for row in _part_rows(message, parts, not_before))
    return rows


def _recipients(session: Session, channel: Channel, message: Message) -> list[Recipient]:
    """Every contact of the channel but the author, with the number each hears it from."""
    recipients: list[Recipient] = [
        (contact, phone)
        for contact, phone in session.execute(
            select(Contact, ChannelSubscriber.sender_phone)
            .join(ChannelSubscriber, ChannelSubscriber.subscriber_id == Contact.id)
            .where(
                ChannelSubscriber.channel_id == channel.id,
                ChannelSubscriber.type == SubscriberType.CONTACT,
                Contact.id != message.subscriber_id,
            )
            .order_by(Contact.id)
        )
    ]
    return fill_missing_senders(session, channel, recipients) if recipients else []


def message_parts(message: Message, author: Contact | None) -> list[str]:
    """The SMS parts of the message's text; a contact's words go out under their name."""
    text = message.text or ""
    if message.author_type == SubscriberType.CONTACT:
        name = author.name or f"…{author.phone[-4:]}" if author else None
        text = relay_prefix(name or "Contact", text)
    return split_text(text) if text else [""]


def _skipped_row() -> dict[str, object]:
    return {
        "id": new_id("dlv"),
        "part": 1,
        "body": "",
        "media_urls": [],
        "segments": 0,
        "status": DeliveryStatus.SKIPPED,
        "not_before": None,  # the keys of a part's row: the rows go in one multi-row INSERT
        "error_message": OPTED_OUT,
    }


def _part_rows(
    message: Message, parts: Sequence[str], not_before: datetime | None
) -> list[dict[str, object]]:
    return [
        {
            "id": new_id("dlv"),
            "part": index,
            "body": body,
            "media_urls": list(message.media_urls or []) if index == 1 else [],
            "segments": segment_count(body),
            "status": DeliveryStatus.PENDING,
            "not_before": not_before,
            "error_message": None,
        }
        for index, body in enumerate(parts, start=1)
    ]


def fill_missing_senders(
    session: Session, channel: Channel, recipients: list[Recipient]
) -> list[Recipient]:
    """Give a sender now to contacts that joined before the organization had any number.

    Such a channel would otherwise send from no number at all forever (or fail for want of a
    Messaging Service); the number is recorded so the inbound side routes replies by it too.
    """
    missing = [contact.id for contact, phone in recipients if phone is None]
    if not missing:
        return recipients
    senders = assign_senders(session, channel.organization_id, missing)
    for contact_id, phone in senders.items():
        session.execute(
            update(ChannelSubscriber)
            .where(
                ChannelSubscriber.channel_id == channel.id,
                ChannelSubscriber.subscriber_id == contact_id,
                ChannelSubscriber.sender_phone.is_(None),
            )
            .values(sender_phone=phone)
            .execution_options(synchronize_session=False)
        )
    return [(contact, phone or senders.get(contact.id)) for contact, phone in recipients]


def publish_due_messages(
    session: Session, settings: Settings, now: datetime | None = None, limit: int = 100
) -> list[PublishResult]:
    """Publish scheduled messages whose `publish_to_channel_at` has come (the database decides)."""
    now = now or utcnow()
    due = list(
        session.execute(
            select(Message)
            .where(
                Message.published_at.is_(None),
                Message.canceled_at.is_(None),
                Message.channel_id.is_not(None),
                Message.publish_to_channel_at <= now,
            )
            .order_by(Message.publish_to_channel_at, Message.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    return [publish_due_message(session, settings, m, now) for m in due]


def publish_due_message(
    session: Session, settings: Settings, message: Message, now: datetime
) -> PublishResult:
    """Publish a scheduled message at its time; the message is updated, so the event says so."""
    published = publish_message(session, settings, message, now)
    record_message(session, "message.updated", message)
    return published
