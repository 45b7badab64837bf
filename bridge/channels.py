"""Channels: one per (organization, contact set), their senders and names (DESIGN 5.3, 5.6).

Publishing into a channel is `bridge.publishing`; reading channels is `bridge.channel_views`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.db import get_owned, insert_or_get
from bridge.errors import NotFound
from bridge.ids import new_id
from bridge.models import (
    Channel,
    ChannelPhoneHash,
    ChannelPublisher,
    ChannelSubscriber,
    Contact,
    SubscriberType,
    Thread,
)
from bridge.organizations import sender_numbers
from bridge.subscribers import Profile, load_profiles


def subscriber_hash(organization_id: str, contact_ids: Iterable[str]) -> str:
    """Hex SHA-256 of the sorted ids that make a channel unique (the organization's, contacts')."""
    ids = sorted({organization_id, *contact_ids})
    return hashlib.sha256(",".join(ids).encode()).hexdigest()


def get_channel(session: Session, organization_id: str, channel_id: str) -> Channel:
    """The organization's channel, or NotFound (also for another organization's)."""
    return get_owned(session, Channel, organization_id, channel_id)


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
    channel = Channel(
        id=new_id("chnl"),
        organization_id=organization_id,
        subscriber_hash=digest,
    )
    channel, created = insert_or_get(
        session,
        channel,
        lambda: _by_hash(session, digest),
        lambda: _add_members(session, channel, contacts),
    )
    if created:
        rename_channel(session, channel)
    return channel, created


def _add_members(session: Session, channel: Channel, contacts: Sequence[Contact]) -> None:
    """The new channel's rows: the organization, its contacts with their senders, their hashes."""
    now = channel.created_at
    organization_id = channel.organization_id
    senders = assign_senders(session, organization_id, [c.id for c in contacts])
    session.add(
        ChannelSubscriber(
            channel_id=channel.id,
            subscriber_id=organization_id,
            type=SubscriberType.API_KEY,
            position=0,
            added_at=now,
        )
    )
    for position, contact in enumerate(contacts, start=1):
        session.add(
            ChannelSubscriber(
                channel_id=channel.id,
                subscriber_id=contact.id,
                type=SubscriberType.CONTACT,
                position=position,
                sender_phone=senders.get(contact.id),
                added_at=now,
            )
        )
    for digest in sorted({c.phone_hash for c in contacts}):
        session.add(
            ChannelPhoneHash(
                channel_id=channel.id, phone_hash=digest, organization_id=organization_id
            )
        )


def _by_hash(session: Session, digest: str) -> Channel | None:
    return session.execute(
        select(Channel).where(Channel.subscriber_hash == digest)
    ).scalar_one_or_none()


def assign_senders(
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


def rename_channel(session: Session, channel: Channel) -> None:
    """Name the channel after its subscribers, organization first."""
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


def last_publisher_threads(session: Session, channel_ids: Iterable[str]) -> dict[str, str]:
    """For each channel, the id of the thread that last published to it (where inbound SMS are
    stored); a channel no thread published to is left out. One query for any number."""
    channel_ids = list(channel_ids)
    if not channel_ids:
        return {}
    ranked = (
        select(
            ChannelPublisher.channel_id,
            ChannelPublisher.thread_id,
            func.row_number()
            .over(
                partition_by=ChannelPublisher.channel_id,
                order_by=ChannelPublisher.last_seq.desc(),
            )
            .label("rank"),
        )
        .where(ChannelPublisher.channel_id.in_(channel_ids))
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.channel_id, ranked.c.thread_id).where(ranked.c.rank == 1)
    )
    return {channel_id: thread_id for channel_id, thread_id in rows}


def last_publisher_thread(session: Session, organization_id: str, channel_id: str) -> Thread | None:
    """The thread that last published to the channel (inbound replies are stored there too)."""
    thread_id = last_publisher_threads(session, [channel_id]).get(channel_id)
    # A channel's publishers are its organization's threads.
    return session.get(Thread, (organization_id, thread_id)) if thread_id else None
