"""Reading channels: what a channel's JSON is built from, for one channel or a page of them.

Loading is batched: each query asks for every channel of a page at once, so a page of 150 channels
takes as many queries as one channel (`GET /v1/channels?phone=`, DESIGN section 6).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from bridge.channels import get_channel
from bridge.errors import NotFound
from bridge.models import (
    Channel,
    ChannelPhoneHash,
    ChannelPublisher,
    ChannelSubscriber,
    Message,
    Thread,
)
from bridge.pages import PENDING_LIMIT, PUBLISHERS_LIMIT, RECENT_LIMIT, check_limit
from bridge.phones import normalize_phone, phone_hash
from bridge.settings import Settings
from bridge.subscribers import Profile, load_profiles


@dataclass
class ChannelView:
    """Everything a channel's JSON needs."""

    channel: Channel
    subscribers: list[ChannelSubscriber]
    profiles: dict[str, Profile]
    phone_hashes: list[str]
    publisher_ids: list[str]
    recent_messages: list[Message]
    has_more: bool
    pending_messages: list[Message]  # at most PENDING_LIMIT, due first
    thread_names: dict[str, str | None]
    thread_resources: dict[str, str]


def load_channel_view(session: Session, organization_id: str, channel_id: str) -> ChannelView:
    """Load a channel with its subscribers, hashes, publishers, recent and pending messages."""
    return load_channel_views(session, [get_channel(session, organization_id, channel_id)])[0]


def load_channel_views(session: Session, channels: Sequence[Channel]) -> list[ChannelView]:
    """The views of these channels, in order, in a fixed number of queries whatever their number."""
    ids = [c.id for c in channels]
    if not ids:
        return []
    subscribers = _by_channel(
        session.execute(
            select(ChannelSubscriber)
            .where(ChannelSubscriber.channel_id.in_(ids))
            .order_by(ChannelSubscriber.position, ChannelSubscriber.added_at)
        ).scalars()
    )
    profiles = load_profiles(session, [r.subscriber_id for r in _flat(subscribers)])
    hashes = _column_by_channel(
        session,
        select(ChannelPhoneHash.channel_id, ChannelPhoneHash.phone_hash)
        .where(ChannelPhoneHash.channel_id.in_(ids))
        .order_by(ChannelPhoneHash.phone_hash),
    )
    publishers = _column_by_channel(session, _latest_publishers(ids))
    newest = _by_channel(_newest_published(session, ids))
    pending = _by_channel(_first_pending(session, ids))
    names, resources = _thread_names(session, [*_flat(newest), *_flat(pending)])
    return [
        ChannelView(
            channel,
            subscribers[channel.id],
            profiles,
            hashes[channel.id],
            publishers[channel.id],
            list(reversed(newest[channel.id][:RECENT_LIMIT])),
            len(newest[channel.id]) > RECENT_LIMIT,
            pending[channel.id],
            names,
            resources,
        )
        for channel in channels
    ]


def channels_for_phone(
    session: Session,
    settings: Settings,
    organization_id: str,
    phone: str,
    limit: int,
    before: str | None,
) -> tuple[list[ChannelView], bool]:
    """A page of the organization's channels with this phone, most recently updated first.

    `before` is the id of a channel of the same list: the page starts after it.
    """
    limit = check_limit(limit)
    e164 = normalize_phone(phone, settings.default_region)
    digest = phone_hash(organization_id, e164, settings.phone_hash_key)
    in_list = (
        ChannelPhoneHash.channel_id == Channel.id,
        ChannelPhoneHash.organization_id == organization_id,
        ChannelPhoneHash.phone_hash == digest,
    )
    query = select(Channel).join(ChannelPhoneHash, and_(*in_list))
    if before is not None:
        cursor = session.execute(
            select(Channel.updated_at, Channel.id)
            .join(ChannelPhoneHash, and_(*in_list))
            .where(Channel.id == before)
        ).one_or_none()
        if cursor is None:
            raise NotFound("before must be the id of a channel in this list", "before")
        query = query.where(
            or_(
                Channel.updated_at < cursor.updated_at,
                and_(Channel.updated_at == cursor.updated_at, Channel.id > cursor.id),
            )
        )
    rows = list(
        session.execute(
            query.order_by(Channel.updated_at.desc(), Channel.id).limit(limit + 1)
        ).scalars()
    )
    return load_channel_views(session, rows[:limit]), len(rows) > limit


def _latest_publishers(ids: list[str]) -> Any:
    # (channel_id, resource_id) of each channel's PUBLISHERS_LIMIT threads that published last, in
    # the order they first published: a customer's one-contact channel gains a publisher with
    # every order, and the channel's JSON is not to grow with them.
    rank = (
        func.row_number()
        .over(
            partition_by=ChannelPublisher.channel_id,
            order_by=(ChannelPublisher.last_seq.desc(), ChannelPublisher.resource_id),
        )
        .label("rank")
    )
    ranked = (
        select(
            ChannelPublisher.channel_id,
            ChannelPublisher.resource_id,
            ChannelPublisher.first_seq,
            rank,
        )
        .where(ChannelPublisher.channel_id.in_(ids))
        .subquery()
    )
    return (
        select(ranked.c.channel_id, ranked.c.resource_id)
        .where(ranked.c.rank <= PUBLISHERS_LIMIT)
        .order_by(ranked.c.first_seq, ranked.c.resource_id)
    )


def _newest_published(session: Session, ids: list[str]) -> Iterable[Message]:
    # Each channel's RECENT_LIMIT + 1 newest published messages (one more tells `has_more`).
    return _first_per_channel(
        session,
        ids,
        Message.published_at.is_not(None),
        (Message.publish_seq.desc(), Message.seq.desc()),
        RECENT_LIMIT + 1,
    )


def _first_pending(session: Session, ids: list[str]) -> Iterable[Message]:
    # Each channel's PENDING_LIMIT scheduled messages due first: 400 posts of 15,000 characters
    # made one channel's JSON 6 MB when they were all shown (issue 11).
    return _first_per_channel(
        session,
        ids,
        Message.published_at.is_(None) & Message.canceled_at.is_(None),
        (Message.publish_to_channel_at, Message.seq),
        PENDING_LIMIT,
    )


def _first_per_channel(
    session: Session, ids: list[str], where: Any, order: tuple[Any, ...], count: int
) -> Iterable[Message]:
    # The first `count` messages of each channel in `order`, in one query whatever the number of
    # channels: numbered within their channel by a window function.
    rank = func.row_number().over(partition_by=Message.channel_id, order_by=order).label("rank")
    ranked = select(Message.seq, rank).where(Message.channel_id.in_(ids), where).subquery()
    return session.execute(
        select(Message)
        .join(ranked, ranked.c.seq == Message.seq)
        .where(ranked.c.rank <= count)
        .order_by(*order)
    ).scalars()


def _thread_names(
    session: Session, messages: list[Message]
) -> tuple[dict[str, str | None], dict[str, str]]:
    # The name and resource id of each thread these messages belong to.
    names: dict[str, str | None] = {}
    resources: dict[str, str] = {}
    thread_ids = {m.thread_id for m in messages if m.thread_id}
    if thread_ids:
        # A channel's messages are all its organization's: its threads are named by id.
        organization_ids = {m.organization_id for m in messages}
        for tid, name, rid in session.execute(
            select(Thread.id, Thread.name, Thread.resource_id).where(
                Thread.organization_id.in_(organization_ids), Thread.id.in_(thread_ids)
            )
        ):
            names[tid] = name
            resources[tid] = rid
    return names, resources


def _by_channel(rows: Iterable[Any]) -> defaultdict[str, list[Any]]:
    grouped: defaultdict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.channel_id].append(row)
    return grouped


def _column_by_channel(session: Session, query: Any) -> defaultdict[str, list[str]]:
    # `query` selects (channel_id, value) pairs; the values of each channel, in the query's order.
    grouped: defaultdict[str, list[str]] = defaultdict(list)
    for channel_id, value in session.execute(query):
        grouped[channel_id].append(value)
    return grouped


def _flat(grouped: defaultdict[str, list[Any]]) -> list[Any]:
    return [row for rows in grouped.values() for row in rows]
