"""Channels: identity, publishing, deliveries, pending messages, number pool (DESIGN 5.3-5.6)."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import serialize
from bridge.actors import Actor
from bridge.channel_views import channels_for_phone, load_channel_view
from bridge.channels import (
    get_or_create_channel,
    last_publisher_thread,
    subscriber_hash,
)
from bridge.db import utcnow
from bridge.errors import NotFound
from bridge.messages import (
    Draft,
    cancel_message,
    post_channel_message,
    post_message,
)
from bridge.models import Channel, ChannelSubscriber, Contact, Delivery, Lane, Organization
from bridge.organizations import find_or_create_contact, opt_out
from bridge.publishing import publish_due_messages
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.sms_text import segment_count
from bridge.threads import add_subscriber, archive_subscriber, create_thread
from tests import factories


def _channel(session: Session, org: Organization, channel_id: str) -> dict[str, Any]:
    return factories.as_json(serialize.Channel.of(load_channel_view(session, org.id, channel_id)))


def _deliveries(session: Session, message_id: str) -> list[Delivery]:
    return list(
        session.execute(
            select(Delivery)
            .where(Delivery.message_id == message_id)
            .order_by(Delivery.subscriber_id, Delivery.part)
        ).scalars()
    )


def test_the_same_contacts_in_any_order_give_the_same_channel(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    a, b, c = (factories.contact(session, settings, org) for _ in range(3))
    first, created = get_or_create_channel(session, org.id, [a.id, b.id])
    assert created and first.id.startswith("chnl_")
    again, created = get_or_create_channel(session, org.id, [b.id, a.id, b.id])
    assert (again.id, created) == (first.id, False)
    expected = hashlib.sha256(",".join(sorted([org.id, a.id, b.id])).encode()).hexdigest()
    assert first.subscriber_hash == expected == subscriber_hash(org.id, [b.id, a.id])
    bigger, created = get_or_create_channel(session, org.id, [a.id, b.id, c.id])
    assert created and bigger.id != first.id and bigger.subscriber_hash != first.subscriber_hash
    alone, created = get_or_create_channel(session, org.id, [a.id])
    assert created and alone.id not in {first.id, bigger.id}
    session.commit()
    body = _channel(session, org, first.id)
    assert body["subscriber_hash"] == expected
    assert body["phone_hashes"] == sorted([a.phone_hash, b.phone_hash])
    assert body["subscriber_ids"] == [org.id, *sorted([a.id, b.id])]


def test_another_organizations_contacts_make_no_channel(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    theirs = factories.contact(session, settings, other)
    with pytest.raises(NotFound):
        get_or_create_channel(session, org.id, [theirs.id])
    channel, _ = get_or_create_channel(session, other.id, [theirs.id])
    with pytest.raises(NotFound):
        load_channel_view(session, org.id, channel.id)


def test_posting_to_a_thread_publishes_into_its_channel(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings, "Acme")
    uma = factories.user(session, settings, org, "Uma Smith")
    cora = factories.contact(session, settings, org, "Cora")
    dan = factories.contact(session, settings, org, "Dan")
    thread, _ = create_thread(
        session, settings, factories.org_actor(org), "order-1", subscribers=[cora.id, dan.id]
    )
    opt_out(session, org.id, dan.phone_hash)
    posted = post_message(
        session, settings, Actor.user(org.id, uma.id), thread.id, Draft.of("Hello!")
    )
    session.commit()
    message, result = posted.message, posted.published
    assert result is not None and message.channel_id == result.channel_id
    assert (result.message_id, result.lane, result.pending, result.skipped) == (
        message.id,
        Lane.TEXT,
        1,
        1,
    )
    rows = {d.subscriber_id: d for d in _deliveries(session, message.id)}
    assert set(rows) == {cora.id, dan.id}
    assert (rows[cora.id].status, rows[cora.id].body, rows[cora.id].to_phone) == (
        "pending",
        "Hello!",
        cora.phone,
    )
    assert rows[cora.id].from_phone is not None
    assert (rows[dan.id].status, rows[dan.id].part) == ("skipped", 1)
    body = _channel(session, org, message.channel_id)
    assert body["subscriber_ids"] == [org.id, *sorted([cora.id, dan.id]), uma.id]
    assert body["name"].startswith("Acme, ") and body["name"].endswith(", Uma Smith")
    assert set(body["name"].split(", ")) == {"Acme", "Cora", "Dan", "Uma Smith"}
    assert body["publisher_ids"] == ["order-1"]
    assert [m["id"] for m in body["recent_messages"]] == [message.id]
    assert body["recent_messages"][0]["name"] == thread.name
    assert body["pending_messages"] == [] and body["scheduled_publish_at"] is None


def test_notifications_go_through_their_own_queue(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(
        session, settings, factories.org_actor(org), "order-1", subscribers=[cora.id]
    )
    posted = post_message(
        session,
        settings,
        factories.org_actor(org),
        thread.id,
        Draft.of("Out for delivery", type="pickup_reminder"),
    )
    assert posted.published is not None and posted.published.lane == Lane.NOTIFICATIONS
    assert [d.queue for d in _deliveries(session, posted.message.id)] == [Lane.NOTIFICATIONS]


def test_a_thread_without_active_contacts_publishes_nowhere(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(session, settings, actor, "order-1", subscribers=[cora.id])
    archive_subscriber(session, actor, thread.id, cora.id)
    posted = post_message(session, settings, actor, thread.id, Draft.of("anyone?"))
    assert posted.published is None and posted.message.channel_id is None
    assert session.execute(select(Delivery)).first() is None


def test_a_changed_contact_set_publishes_into_another_channel(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora, dan = factories.contact(session, settings, org), factories.contact(session, settings, org)
    thread, _ = create_thread(session, settings, actor, "order-1", subscribers=[cora.id])
    first = post_message(session, settings, actor, thread.id, Draft.of("one")).message
    add_subscriber(session, settings, actor, thread.id, dan.id)
    second = post_message(session, settings, actor, thread.id, Draft.of("two")).message
    assert first.channel_id != second.channel_id
    assert [d.subscriber_id for d in _deliveries(session, second.id)] == sorted([cora.id, dan.id])


def test_publisher_ids_oldest_first(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org)
    for resource in ["zeta-2", "alpha-1"]:
        create_thread(session, settings, actor, resource, subscribers=[cora.id])
    channel_ids = {
        post_message(session, settings, actor, f"thrd_{r}", Draft.of("hi")).message.channel_id
        for r in ["zeta-2", "alpha-1", "zeta-2"]
    }
    session.commit()
    assert len(channel_ids) == 1
    channel_id = channel_ids.pop()
    assert channel_id is not None
    assert _channel(session, org, channel_id)["publisher_ids"] == ["zeta-2", "alpha-1"]
    channel = session.get_one(Channel, channel_id)
    latest = last_publisher_thread(session, channel.organization_id, channel.id)
    assert latest is not None and latest.resource_id == "zeta-2"


def test_publisher_ids_show_the_150_threads_that_published_last(
    session: Session, settings: Settings
) -> None:
    # A customer's channel gains a publisher with every order: its JSON must not grow with them.
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org)
    resources = [f"order-{i:03d}" for i in range(153)]
    for resource in resources:
        create_thread(session, settings, actor, resource, subscribers=[cora.id])
        posted = post_message(session, settings, actor, f"thrd_{resource}", Draft.of("hi"))
    post_message(
        session, settings, actor, "thrd_order-000", Draft.of("again")
    )  # back among the latest
    session.commit()
    assert posted.message.channel_id is not None
    shown = _channel(session, org, posted.message.channel_id)["publisher_ids"]
    assert shown == ["order-000", *resources[4:]]


def test_a_pending_message_waits_in_pending_messages_until_published(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(session, settings, actor, "order-1", subscribers=[cora.id])
    soon = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    later = soon + timedelta(hours=1)
    late = post_message(
        session,
        settings,
        actor,
        thread.id,
        Draft.of("late", publish_to_channel_at=int(later.timestamp())),
    )
    early = post_message(
        session,
        settings,
        actor,
        thread.id,
        Draft.of("early", publish_to_channel_at=int(soon.timestamp())),
    )
    session.commit()
    # The channel exists as soon as a message waits for it; nothing is sent yet.
    assert late.published is None and late.message.channel_id is not None
    channel_id = late.message.channel_id
    assert session.execute(select(Delivery)).first() is None
    body = _channel(session, org, channel_id)
    assert [m["id"] for m in body["pending_messages"]] == [early.message.id, late.message.id]
    assert body["scheduled_publish_at"] == int(soon.timestamp())
    assert body["recent_messages"] == []
    # Both are in the thread at once.
    assert {m.thread_id for m in (late.message, early.message)} == {thread.id}

    results = publish_due_messages(session, settings, now=soon + timedelta(seconds=1))
    session.commit()
    assert [r.message_id for r in results] == [early.message.id]
    body = _channel(session, org, channel_id)
    assert [m["id"] for m in body["pending_messages"]] == [late.message.id]
    assert body["scheduled_publish_at"] == int(later.timestamp())
    assert [m["id"] for m in body["recent_messages"]] == [early.message.id]
    assert len(_deliveries(session, early.message.id)) == 1

    cancel_message(session, actor, late.message.id)
    session.commit()
    body = _channel(session, org, channel_id)
    assert body["pending_messages"] == [] and body["scheduled_publish_at"] is None
    assert publish_due_messages(session, settings, now=later + timedelta(days=1)) == []


def test_a_message_posted_straight_to_a_channel(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    cora = factories.contact(session, settings, org)
    channel, _ = get_or_create_channel(session, org.id, [cora.id])
    posted = post_channel_message(
        session, settings, factories.org_actor(org), channel.id, Draft.of("Hi")
    )
    session.commit()
    assert posted.message.thread_id is None and posted.published is not None
    body = _channel(session, org, channel.id)
    assert body["recent_messages"][0]["name"] == body["name"]
    assert body["recent_messages"][0]["resource_id"] is None
    assert body["publisher_ids"] == []


def test_the_number_pool_spreads_a_contacts_channels_over_senders(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings, senders=3)
    cora = factories.contact(session, settings, org)
    others = [factories.contact(session, settings, org) for _ in range(4)]
    senders: list[str | None] = []
    for other in others:
        channel, _ = get_or_create_channel(session, org.id, [cora.id, other.id])
        senders.append(session.get_one(ChannelSubscriber, (channel.id, cora.id)).sender_phone)
    assert None not in senders
    assert len(set(senders[:3])) == 3
    assert senders[3] in senders[:3]


def test_one_sender_is_shared_by_every_channel(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings, senders=1)
    cora = factories.contact(session, settings, org)
    channels = [
        get_or_create_channel(
            session, org.id, [cora.id, factories.contact(session, settings, org).id]
        )[0]
        for _ in range(3)
    ]
    session.commit()
    phones = {session.get_one(ChannelSubscriber, (c.id, cora.id)).sender_phone for c in channels}
    assert len(phones) == 1
    found, _ = channels_for_phone(session, settings, org.id, cora.phone, 150, None)
    assert {v.channel.id for v in found} == {c.id for c in channels}


def test_a_contacts_message_is_relayed_to_the_others_with_its_name(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    jane = factories.contact(session, settings, org, "Jane")
    dan = factories.contact(session, settings, org, "Dan")
    eve = factories.contact(session, settings, org, "Eve")
    thread, _ = create_thread(
        session, settings, actor, "order-1", subscribers=[jane.id, dan.id, eve.id]
    )
    channel_id = post_message(
        session, settings, actor, thread.id, Draft.of("hello all")
    ).message.channel_id
    assert channel_id is not None
    posted = factories.contact_reply(
        session, org, jane.id, channel_id, "running late", media_urls=["https://example.com/a.jpg"]
    )
    session.commit()
    assert posted.message.subscriber_id == jane.id and posted.message.thread_id == thread.id
    rows = _deliveries(session, posted.message.id)
    assert sorted(d.subscriber_id for d in rows) == sorted([dan.id, eve.id])
    assert {d.body for d in rows} == {"Jane: running late"}
    assert all(d.media_urls == ["https://example.com/a.jpg"] for d in rows)
    # The contact's message shows in the channel and in the thread, by the contact.
    body = _channel(session, org, channel_id)
    assert body["recent_messages"][-1]["subscriber_id"] == jane.id


def test_long_text_goes_as_ordered_parts_with_segment_counts(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(session, settings, actor, "order-1", subscribers=[cora.id])
    words = [f"word{i:04d}" for i in range(400)]  # 3,999 characters
    posted = post_message(
        session,
        settings,
        actor,
        thread.id,
        Draft.of(" ".join(words), media_urls=["https://example.com/a.jpg"]),
    )
    session.commit()
    rows = _deliveries(session, posted.message.id)
    assert [d.part for d in rows] == [1, 2, 3]
    assert {d.parts for d in rows} == {3}
    assert all(len(d.body) <= 1600 for d in rows)
    assert " ".join(d.body for d in rows) == " ".join(words)
    assert [d.segments for d in rows] == [segment_count(d.body) for d in rows]
    assert rows[0].segments == 11  # 1,599 GSM-7 characters in 153-septet segments
    assert rows[0].media_urls == ["https://example.com/a.jpg"] and rows[1].media_urls == []
    assert len({d.publish_seq for d in rows}) == 1


def test_channels_for_a_phone_hash_stay_within_the_organization(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    mine = factories.contact(session, settings, org)
    theirs, _ = find_or_create_contact(session, settings, other.id, mine.phone)
    get_or_create_channel(session, org.id, [mine.id])
    get_or_create_channel(session, other.id, [theirs.id])
    found, _ = channels_for_phone(session, settings, org.id, mine.phone, 150, None)
    assert [v.channel.organization_id for v in found] == [org.id]
    assert session.get(Contact, theirs.id) is not None


def test_new_channels_sharing_a_contact_at_once_still_get_different_senders(
    runtime: Runtime, settings: Settings
) -> None:
    with runtime.sessions() as s:
        org, _ = factories.organization(s, settings, senders=2)
        cora, x, y = (factories.contact(s, settings, org) for _ in range(3))
        s.commit()
    created = threading.Event()
    first: list[str] = []

    def make_first() -> None:
        with runtime.sessions() as s:
            channel, _ = get_or_create_channel(s, org.id, [cora.id, x.id])
            first.append(channel.id)
            created.set()
            threading.Event().wait(0.5)  # hold it uncommitted while the other one is made
            s.commit()

    t = threading.Thread(target=make_first)
    t.start()
    assert created.wait(10)
    with runtime.sessions() as s:
        second, _ = get_or_create_channel(s, org.id, [cora.id, y.id])
        s.commit()
    t.join(10)
    with runtime.sessions() as s:
        phones = {
            s.get_one(ChannelSubscriber, (cid, cora.id)).sender_phone
            for cid in [first[0], second.id]
        }
    assert len(phones) == 2
