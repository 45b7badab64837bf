"""Reading a thread, a channel or a phone's channels takes a fixed number of SQL queries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.channel_views import channels_for_phone, load_channel_view
from bridge.channels import get_or_create_channel
from bridge.db import transaction, utcnow
from bridge.messages import Draft, post_channel_message, post_message
from bridge.models import Message
from bridge.runtime import Runtime
from bridge.serialize import Channel, ChannelList, Thread
from bridge.settings import Settings
from bridge.threads import create_thread, load_thread_view, mark_viewed
from tests import factories


@dataclass(frozen=True)
class Built:
    """The ids of what `_build` made."""

    org: str
    thread: str
    channel: str


def _build(runtime: Runtime, settings: Settings, messages: int, subscribers: int) -> Built:
    """A thread (and its channel) with `subscribers` users and contacts and `messages` messages."""
    with runtime.sessions() as s:
        org, _ = factories.organization(s, settings, senders=2)
        users = subscribers // 3
        thread, ids = factories.crowded_thread(
            s, settings, org, users, subscribers - users - 1, f"order-{messages}"
        )
        # Two real posts make the channel, its deliveries and users who joined it by authoring.
        first = post_message(s, settings, Actor.user(org.id, ids[0]), thread.id, Draft.of("hi"))
        later = int((utcnow() + timedelta(hours=1)).timestamp())
        actor = factories.org_actor(org)
        post_message(s, settings, actor, thread.id, Draft.of("later", publish_to_channel_at=later))
        channel_id = first.message.channel_id
        assert channel_id is not None
        # The rest are written straight to the table: the reading side is what is measured here.
        rows = factories.message_rows(org.id, thread.id, [org.id, *ids], messages - 2, channel_id)
        s.execute(insert(Message), rows)
        mark_viewed(s, Actor.user(org.id, ids[0]), thread.id)
        s.commit()
        return Built(org.id, thread.id, channel_id)


def _queries(runtime: Runtime, read: Callable[[Session], BaseModel]) -> tuple[int, dict[str, Any]]:
    with runtime.sessions() as s, factories.statements(runtime.engine) as statements:
        body = read(s)
    return len(statements), factories.as_json(body)


def _lone_thread(runtime: Runtime, settings: Settings) -> Built:
    """A thread whose one subscriber is the organization, with one message: one kind of profile."""
    with runtime.sessions() as s:
        org, _ = factories.organization(s, settings)
        actor = factories.org_actor(org)
        thread, _ = create_thread(s, settings, actor, "order-lone", name="Lone")
        post_message(s, settings, actor, thread.id, Draft.of("hi"))
        s.commit()
        return Built(org.id, thread.id, "")


def test_reading_a_thread_takes_a_fixed_number_of_queries(
    runtime: Runtime, settings: Settings
) -> None:
    # The lone thread's subscribers are of one kind, the others' of all three: profiles are read
    # in one query whatever kinds a thread's subscribers are.
    lone = _lone_thread(runtime, settings)
    small = _build(runtime, settings, messages=10, subscribers=3)
    large = _build(runtime, settings, messages=150, subscribers=50)
    counts = []
    # Each thread with its own (subscribers, messages shown).
    for made, sizes in zip((lone, small, large), ((1, 1), (3, 10), (50, 150)), strict=True):

        def read_thread(s: Session, m: Built = made) -> Thread:
            return Thread.of(load_thread_view(s, m.org, m.thread))

        n, body = _queries(runtime, read_thread)
        counts.append(n)
        assert (len(body["subscribers"]), len(body["recent_messages"])) == sizes
    assert counts[0] == counts[1] == counts[2]
    # Five SELECTs on both databases (SQLite adds its BEGIN): a count of 0 would mean the
    # listener saw nothing.
    assert 5 <= counts[0] <= 10


def test_reading_a_channel_takes_a_fixed_number_of_queries(
    runtime: Runtime, settings: Settings
) -> None:
    small = _build(runtime, settings, messages=10, subscribers=3)
    large = _build(runtime, settings, messages=150, subscribers=50)
    counts = []
    for made, shown in zip((small, large), (9, 149), strict=True):

        def read_channel(s: Session, m: Built = made) -> Channel:
            return Channel.of(load_channel_view(s, m.org, m.channel))

        n, body = _queries(runtime, read_channel)
        counts.append(n)
        assert len(body["pending_messages"]) == 1
        assert len(body["recent_messages"]) == shown
    assert counts[0] == counts[1]
    assert 5 <= counts[0] <= 12


def _channels_with(runtime: Runtime, settings: Settings, channels: int) -> tuple[str, str]:
    """An organization and a phone in `channels` channels, each with a message of its own."""
    with runtime.sessions() as s:
        org, _ = factories.organization(s, settings)
        cora = factories.contact(s, settings, org, "Cora")
        for i in range(channels):
            other = factories.contact(s, settings, org, f"Contact {i}")
            channel, _ = get_or_create_channel(s, org.id, [cora.id, other.id])
            post_channel_message(
                s, settings, factories.org_actor(org), channel.id, Draft.of(f"hi {i}")
            )
        s.commit()
        return org.id, cora.phone


def test_listing_a_phones_channels_takes_a_fixed_number_of_queries(
    runtime: Runtime, settings: Settings
) -> None:
    counts = []
    for size in (1, 30):
        org_id, phone = _channels_with(runtime, settings, size)

        def read(s: Session, org_id: str = org_id, phone: str = phone) -> BaseModel:
            views, has_more = channels_for_phone(s, settings, org_id, phone, 150, None)
            return ChannelList.of([Channel.of(v) for v in views], has_more)

        n, body = _queries(runtime, read)
        counts.append(n)
        assert len(body["data"]) == size and body["has_more"] is False
        assert all(len(c["recent_messages"]) == 1 for c in body["data"])
    assert counts[0] == counts[1]
    assert 5 <= counts[0] <= 12


def test_json_columns_read_each_empty_list_as_a_list_of_its_own(runtime: Runtime) -> None:
    """Empty lists skip the JSON parser (bridge.db.load_json); each row still gets its own."""
    org = factories.committed_organization(runtime)
    actor = factories.org_actor(org)
    with transaction(runtime.sessions) as session:
        thread, _ = create_thread(session, runtime.settings, actor, "order-json")
        post_message(session, runtime.settings, actor, thread.id, Draft.of("one"))
        post_message(
            session,
            runtime.settings,
            actor,
            thread.id,
            Draft.of("two", None, ["https://x.test/a.png"]),
        )
    with runtime.sessions() as session:
        first, second = session.scalars(
            select(Message).where(Message.thread_id == thread.id).order_by(Message.seq)
        ).all()
    assert (first.reactions, second.reactions, first.media_urls) == ([], [], [])
    assert second.media_urls == ["https://x.test/a.png"]
    first.reactions.append({"emoji": "x"})
    assert second.reactions == [] and first.media_urls == []
