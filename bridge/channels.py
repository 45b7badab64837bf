"""Channels: one per (organization, contact set), publishing, deliveries (DESIGN 5.3-5.6).

Reading channels is `bridge.channel_views`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import NotFound
from bridge.ids import new_id
from bridge.models import (
    Channel,
    ChannelPhoneHash,
    ChannelPublisher,
    ChannelSubscriber,
    Contact,
    Delivery,
    DeliveryStatus,
    Message,
    MessageType,
    Organization,
    SubscriberType,
    Thread,
)
from bridge.organizations import opted_out_hashes, sender_numbers
from bridge.phones import phone_time_zones
from bridge.quiet_hours import quiet_until
from bridge.settings import Settings
from bridge.sms_text import relay_prefix, segment_count, split_text
from bridge.subscribers import Profile, load_profiles

NOTIFICATION_TYPES = frozenset(
    {MessageType.TRACKING_UPDATE.value, MessageType.PICKUP_REMINDER.value}
)
PUBLISHABLE_TYPES = frozenset({MessageType.TEXT.value}) | NOTIFICATION_TYPES

# Delivery queues by priority: conversation ahead of bulk notifications.
QUEUE_TEXT = "text"
QUEUE_NOTIFICATIONS = "notifications"


def subscriber_hash(organization_id: str, contact_ids: Iterable[str]) -> str:
    """Hex SHA-256 of the sorted ids that make a channel unique (the organization's, contacts')."""
    ids = sorted({organization_id, *contact_ids})
    return hashlib.sha256(",".join(ids).encode()).hexdigest()


def get_channel(session: Session, organization_id: str, channel_id: str) -> Channel:
    """The organization's channel, or NotFound (also for another organization's)."""
    channel = session.get(Channel, channel_id) if isinstance(channel_id, str) else None
    if channel is None or channel.organization_id != organization_id:
        raise NotFound("no such channel", "id")
    return channel


def get_or_create_channel(
    session: Session, organization_id: str, contact_ids: Sequence[str]
) -> tuple[Channel, bool]:
    """The channel of (organization, these contacts) in any order, made with its senders if new."""
    digest = subscriber_hash(organization_id, contact_ids)
    existing = _by_hash(session, digest)
    if existing is not None:
        return existing, False
    # Locking the contacts (PostgreSQL; SQLite writers are serialized already) makes two new
    # channels that share a contact pick their pool numbers one after the other, not both alike.
    contacts = list(
        session.execute(
            select(Contact)
            .where(Contact.id.in_(set(contact_ids)), Contact.organization_id == organization_id)
            .order_by(Contact.id)
            .with_for_update()
        ).scalars()
    )
    if len(contacts) != len(set(contact_ids)):
        raise NotFound("no such contact", "subscribers")
    contacts.sort(key=lambda c: c.id)
    now = utcnow()
    channel = Channel(
        id=new_id("chnl"),
        organization_id=organization_id,
        subscriber_hash=digest,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(channel)
            session.flush()
            senders = _assign_senders(session, organization_id, [c.id for c in contacts])
            session.add(
                ChannelSubscriber(
                    channel_id=channel.id,
                    subscriber_id=organization_id,
                    type=SubscriberType.API_KEY.value,
                    position=0,
                    added_at=now,
                )
            )
            for position, contact in enumerate(contacts, start=1):
                session.add(
                    ChannelSubscriber(
                        channel_id=channel.id,
                        subscriber_id=contact.id,
                        type=SubscriberType.CONTACT.value,
                        position=position,
                        sender_phone=senders.get(contact.id),
                        added_at=now,
                    )
                )
            for digest_ in sorted({c.phone_hash for c in contacts}):
                session.add(
                    ChannelPhoneHash(
                        channel_id=channel.id, phone_hash=digest_, organization_id=organization_id
                    )
                )
            session.flush()
    except IntegrityError:
        winner = _by_hash(session, digest)
        if winner is None:
            raise
        return winner, False
    _rename(session, channel)
    return channel, True


def _by_hash(session: Session, digest: str) -> Channel | None:
    return session.execute(
        select(Channel).where(Channel.subscriber_hash == digest)
    ).scalar_one_or_none()


def _assign_senders(
    session: Session, organization_id: str, contact_ids: Sequence[str]
) -> dict[str, str]:
    """Give each contact a pool number it has in no other channel, while numbers last (DESIGN 5.6).

    When every number is taken, the least used one is shared; with one number, all share it.
    """
    pool = sender_numbers(session, organization_id)
    if not pool:
        return {}
    used: dict[str, Counter[str]] = {cid: Counter() for cid in contact_ids}
    rows = session.execute(
        select(ChannelSubscriber.subscriber_id, ChannelSubscriber.sender_phone).where(
            ChannelSubscriber.subscriber_id.in_(contact_ids),
            ChannelSubscriber.sender_phone.is_not(None),
        )
    ).all()
    for cid, phone in rows:
        if phone is not None:
            used[cid][phone] += 1
    # min() keeps the first of equals, so ties go to the oldest number of the pool.
    return {cid: min(pool, key=used[cid].__getitem__) for cid in contact_ids}


def _rename(session: Session, channel: Channel) -> None:
    rows = channel_subscribers(session, channel.id)
    profiles = load_profiles(session, [r.subscriber_id for r in rows])
    names = [_name(profiles.get(r.subscriber_id)) for r in rows]
    channel.name = ", ".join(n for n in names if n)


def _name(profile: Profile | None) -> str | None:
    if profile is None:
        return None
    if profile.name:
        return profile.name
    return f"…{profile.phone[-4:]}" if profile.phone else None


def channel_subscribers(session: Session, channel_id: str) -> list[ChannelSubscriber]:
    """The channel's subscribers: organization first, then contacts, then users as they joined."""
    return list(
        session.execute(
            select(ChannelSubscriber)
            .where(ChannelSubscriber.channel_id == channel_id)
            .order_by(ChannelSubscriber.position, ChannelSubscriber.added_at)
        ).scalars()
    )


@dataclass(frozen=True)
class PublishResult:
    """What publishing made: the deliveries to send, and the queue they go through."""

    message_id: str
    channel_id: str
    queue: str
    pending: int
    skipped: int


def next_publish_seq() -> int:
    """The order of a message published now: microseconds since the epoch, across processes."""
    return time.time_ns() // 1000


def publish_message(
    session: Session, settings: Settings, message: Message, now: datetime | None = None
) -> PublishResult:
    """Publish a message into its channel, creating its deliveries in the same transaction.

    One delivery per (recipient, part): every contact of the channel except the author; opted-out
    contacts get one `skipped` delivery. The caller enqueues the work after commit.
    """
    now = now or utcnow()
    if message.channel_id is None:
        raise NotFound("the message has no channel", "channel_id")
    channel = session.get(Channel, message.channel_id)
    assert channel is not None
    message.published_at = now
    message.publish_seq = next_publish_seq()
    channel.updated_at = now
    if message.thread_id is not None:
        _record_publisher(session, channel.id, message, now)
    if message.author_type == SubscriberType.USER.value:
        _join_author(session, channel, message.subscriber_id, now)
    queue = QUEUE_NOTIFICATIONS if message.type in NOTIFICATION_TYPES else QUEUE_TEXT
    rows = _delivery_rows(session, settings, channel, message, queue, now)
    if rows:
        session.execute(insert(Delivery), rows)
    skipped = sum(1 for r in rows if r["status"] == DeliveryStatus.SKIPPED.value)
    session.flush()
    return PublishResult(message.id, channel.id, queue, len(rows) - skipped, skipped)


def _record_publisher(session: Session, channel_id: str, message: Message, now: datetime) -> None:
    thread = session.get(Thread, message.thread_id)
    assert thread is not None
    row = session.get(ChannelPublisher, (channel_id, thread.resource_id))
    seq = message.publish_seq or 0
    if row is None:
        session.add(
            ChannelPublisher(
                channel_id=channel_id,
                resource_id=thread.resource_id,
                thread_id=thread.id,
                first_published_at=now,
                last_published_at=now,
                first_seq=seq,
                last_seq=seq,
            )
        )
    else:
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
    try:
        with session.begin_nested():
            session.add(
                ChannelSubscriber(
                    channel_id=channel.id,
                    subscriber_id=user_id,
                    type=SubscriberType.USER.value,
                    position=(top or 0) + 1,
                    added_at=now,
                )
            )
    except IntegrityError:
        return  # the same user's concurrent message joined them first
    _rename(session, channel)


def _delivery_rows(
    session: Session,
    settings: Settings,
    channel: Channel,
    message: Message,
    queue: str,
    now: datetime,
) -> list[dict[str, object]]:
    recipients: list[tuple[Contact, str | None]] = [
        (contact, phone)
        for contact, phone in session.execute(
            select(Contact, ChannelSubscriber.sender_phone)
            .join(ChannelSubscriber, ChannelSubscriber.subscriber_id == Contact.id)
            .where(
                ChannelSubscriber.channel_id == channel.id,
                ChannelSubscriber.type == SubscriberType.CONTACT.value,
                Contact.id != message.subscriber_id,
            )
            .order_by(Contact.id)
        )
    ]
    if not recipients:
        return []
    recipients = _fill_missing_senders(session, channel, recipients)
    org = session.get(Organization, channel.organization_id)
    assert org is not None
    opted_out = opted_out_hashes(
        session, channel.organization_id, [c.phone_hash for c, _ in recipients]
    )
    text = message.text or ""
    if message.author_type == SubscriberType.CONTACT.value:
        # The inbound path has just loaded this contact: the identity map answers, no query.
        author = session.get(Contact, message.subscriber_id)
        name = author.name or f"…{author.phone[-4:]}" if author else None
        text = relay_prefix(name or "Contact", text)
    parts = split_text(text) if text else [""]
    segments = [segment_count(p) for p in parts]
    window = settings.quiet_window if message.type in NOTIFICATION_TYPES else None
    rows: list[dict[str, object]] = []
    for contact, sender_phone in recipients:
        base = {
            "message_id": message.id,
            "organization_id": channel.organization_id,
            "channel_id": channel.id,
            "subscriber_id": contact.id,
            "to_phone": contact.phone,
            "from_phone": sender_phone,
            "messaging_service_sid": None if sender_phone else org.messaging_service_sid,
            "queue": queue,
            "publish_seq": message.publish_seq,
            "parts": len(parts),
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        if contact.phone_hash in opted_out:
            rows.append(
                base
                | {
                    "id": new_id("dlv"),
                    "part": 1,
                    "body": "",
                    "media_urls": [],
                    "segments": 0,
                    "status": DeliveryStatus.SKIPPED.value,
                    "error_message": "the contact opted out of SMS from this organization",
                }
            )
            continue
        not_before = quiet_until(now, phone_time_zones(contact.phone), window) if window else None
        for index, (body, segs) in enumerate(zip(parts, segments, strict=True), start=1):
            rows.append(
                base
                | {
                    "id": new_id("dlv"),
                    "part": index,
                    "body": body,
                    "media_urls": list(message.media_urls or []) if index == 1 else [],
                    "segments": segs,
                    "status": DeliveryStatus.PENDING.value,
                    "not_before": not_before,
                    "error_message": None,
                }
            )
    return rows


def _fill_missing_senders(
    session: Session, channel: Channel, recipients: list[tuple[Contact, str | None]]
) -> list[tuple[Contact, str | None]]:
    """Give a sender now to contacts that joined before the organization had any number.

    Such a channel would otherwise send from no number at all forever (or fail for want of a
    Messaging Service); the number is recorded so the inbound side routes replies by it too.
    """
    missing = [contact.id for contact, phone in recipients if phone is None]
    if not missing:
        return recipients
    senders = _assign_senders(session, channel.organization_id, missing)
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
    return [publish_message(session, settings, m, now) for m in due]


def last_publisher_thread(session: Session, channel_id: str) -> Thread | None:
    """The thread that last published to the channel (inbound replies are stored there too)."""
    thread_id = session.execute(
        select(ChannelPublisher.thread_id)
        .where(ChannelPublisher.channel_id == channel_id)
        .order_by(ChannelPublisher.last_seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    return session.get(Thread, thread_id) if thread_id else None
