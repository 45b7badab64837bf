"""A worker's batch of deferred SMS: matched, stored and relayed together, each as if alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.inbound import record_inbound_sms
from bridge.inbound_processing import process_batch
from bridge.models import (
    ChannelPublisher,
    Delivery,
    DeliveryStatus,
    Event,
    InboundSms,
    Message,
)
from bridge.organizations import is_opted_out, opt_out, sender_numbers
from bridge.runtime import Runtime
from bridge.settings import Settings
from tests import factories
from tests.fixtures.twilio import payloads

# Every SMS stored here waits for the jobs under test, however slowly the machine stores it.
pytestmark = pytest.mark.usefixtures("patient_webhook")


def deferred(session: Session, settings: Settings, sms: list[tuple[str, str, str]]) -> list[str]:
    """Store (from, to, body) SMS as the webhook leaves them for a worker; their ids, in order."""
    ids = []
    for from_, to, body in sms:
        outcome = record_inbound_sms(
            session, settings, payloads.inbound(from_, to, body), defer=True
        )
        assert outcome.pending
        ids.append(outcome.inbound.id)
    session.commit()
    return ids


def test_a_batch_stores_each_sms_in_its_channel_relays_it_and_records_its_events(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    jane, omar, pia, liam, lone = (
        factories.contact(session, settings, org, name)
        for name in ["Jane Doe", "Omar Other", "Pia Quiet", "Liam Alone", "Lone Contact"]
    )
    thread, group = factories.thread_channel(session, settings, org, [jane, omar, pia], "order-1")
    _, solo = factories.thread_channel(session, settings, org, [liam], "order-2")
    opt_out(session, org.id, pia.phone_hash)
    session.commit()
    to = sender_numbers(session, org.id)[0]
    sms = [(jane.phone, "1"), (omar.phone, "2"), (liam.phone, "3"), ("+14155550199", "4")]
    sms += [(jane.phone, "5"), (lone.phone, "6")]
    ids = deferred(session, settings, [(phone, to, body) for phone, body in sms])

    outcomes, held = process_batch(session, settings, ids)
    session.commit()

    assert held == 0
    assert [o.inbound.id for o in outcomes] == ids
    assert [o.outcome for o in outcomes] == ["matched"] * 3 + ["unmatched", "matched", "unmatched"]
    records = {r.id: r for r in session.scalars(select(InboundSms))}
    assert [records[i].status for i in ids] == [o.outcome for o in outcomes]
    assert [records[i].channel_id for i in ids] == [
        group.id,
        group.id,
        solo.id,
        None,
        group.id,
        None,
    ]
    replies = session.scalars(
        select(Message).where(Message.author_type == "contact").order_by(Message.seq)
    ).all()
    assert [(m.text, m.subscriber_id, m.channel_id) for m in replies] == [
        ("1", jane.id, group.id),
        ("2", omar.id, group.id),
        ("3", liam.id, solo.id),
        ("5", jane.id, group.id),
    ]
    assert [records[i].message_id for i in ids if records[i].message_id] == [m.id for m in replies]
    assert all(m.thread_id is not None and m.published_at is not None for m in replies)
    seqs = [m.publish_seq or 0 for m in replies]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4, "published in the order they came"

    relays = session.execute(
        select(Message.text, Delivery.subscriber_id, Delivery.body, Delivery.status)
        .join(Delivery, Delivery.message_id == Message.id)
        .where(Message.author_type == "contact")
        .order_by(Message.seq, Delivery.subscriber_id)
    ).all()
    expected = {
        ("1", omar.id, "Jane Doe: 1", "pending"),
        ("1", pia.id, "", "skipped"),
        ("2", jane.id, "Omar Other: 2", "pending"),
        ("2", pia.id, "", "skipped"),
        ("5", omar.id, "Jane Doe: 5", "pending"),
        ("5", pia.id, "", "skipped"),
    }
    assert {tuple(r) for r in relays} == expected, "the lone contact's SMS has no one to go to"
    published = [o.posted[0].published for o in outcomes if o.posted]
    assert [p.pending if p else None for p in published] == [1, 1, 0, 1]

    types = session.scalars(select(Event.type).where(Event.organization_id == org.id)).all()
    assert types.count("inbound.received") == 6
    assert types.count("message.created") == 2 + 4  # the two posts, then the four replies
    assert types.count("delivery.updated") == 3, "one for each skipped delivery"

    session.expire_all()
    published_at = replies[-1].published_at
    for row in [group, solo, thread]:
        session.refresh(row)
    assert group.updated_at == published_at and thread.updated_at == published_at
    publisher = session.get_one(ChannelPublisher, (group.id, thread.resource_id))
    assert publisher.last_seq == replies[-1].publish_seq


def test_a_batch_runs_a_few_statements_however_many_sms_it_holds(
    runtime: Runtime, session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    contacts = [factories.contact(session, settings, org, f"C{i}") for i in range(20)]
    for i in range(0, 20, 2):
        factories.thread_channel(session, settings, org, contacts[i : i + 2], f"order-{i}")
    session.commit()
    to = sender_numbers(session, org.id)[0]
    ids = deferred(session, settings, [(c.phone, to, f"hi {c.name}") for c in contacts * 2])
    with factories.statements(runtime.engine) as statements:
        outcomes, _ = process_batch(session, settings, ids)
        session.commit()

    assert [o.outcome for o in outcomes] == ["matched"] * 40
    # Reading, locking, matching, the rows written and the events: not one set per SMS.
    assert len(statements) <= 20, statements


def test_a_keyword_waiting_among_replies_is_acted_on_in_its_place(
    session: Session, settings: Settings
) -> None:
    chat = factories.conversation_in(session, settings)
    session.commit()
    ids = deferred(
        session, settings, [(chat.jane.phone, chat.to, t) for t in ["before", "x", "after"]]
    )
    # The webhook acts on a keyword at once; one left waiting (kept from an older version, say)
    # is still acted on, between the SMS before and after it.
    middle = session.scalars(select(InboundSms).where(InboundSms.id == ids[1])).one()
    middle.body = "STOP"
    session.commit()

    outcomes, _ = process_batch(session, settings, ids)
    session.commit()

    assert [o.outcome for o in outcomes] == ["matched", "keyword", "matched"]
    assert is_opted_out(session, chat.org.id, chat.jane.phone_hash)
    in_channel = session.scalars(
        select(Message.type)
        .where(Message.channel_id == chat.channel.id, Message.subscriber_id == chat.jane.id)
        .order_by(Message.seq)
    ).all()
    assert in_channel == ["text", "meta", "text"]


def test_a_batch_chooses_each_channel_by_the_pair_and_by_the_last_sms_sent(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings, senders=2)
    jane = factories.contact(session, settings, org)
    first, second = factories.two_channels(session, settings, org, jane, ("order-e", "order-f"))
    omar = factories.contact(session, settings, org)
    third, fourth = factories.two_channels(session, settings, org, omar, ("order-g", "order-h"))
    session.commit()
    numbers = factories.numbers_by_channel(session, jane.id)
    # Omar hears both of his channels from one number (as with a pool run out): the channel that
    # last sent him an SMS answers, though the other was updated later.
    session.execute(
        text("UPDATE channel_subscribers SET sender_phone = :phone WHERE subscriber_id = :id"),
        {"phone": numbers[first.id], "id": omar.id},
    )
    sent = session.scalars(
        select(Delivery).where(Delivery.channel_id == third.id, Delivery.subscriber_id == omar.id)
    ).one()
    sent.status, sent.publish_seq = DeliveryStatus.DELIVERED, 10**17
    for channel, shift in [(first, -1), (second, 1), (third, -1), (fourth, 1)]:
        channel.updated_at = utcnow() + timedelta(days=shift)
    session.commit()
    sms = [(jane.phone, numbers[first.id], "a"), (jane.phone, numbers[second.id], "b")]
    ids = deferred(session, settings, [*sms, (omar.phone, numbers[first.id], "c")])

    outcomes, _ = process_batch(session, settings, ids)
    session.commit()

    assert [o.channel_id for o in outcomes] == [first.id, second.id, third.id]


def test_a_batch_of_two_organizations_matches_each_in_its_own(
    session: Session, settings: Settings
) -> None:
    made = []
    for name in ["One", "Two"]:
        org, _ = factories.organization(session, settings, name)
        jane = factories.contact(session, settings, org, "Jane")
        _, channel = factories.thread_channel(session, settings, org, [jane], "order-1")
        made.append((sender_numbers(session, org.id)[0], jane, channel))
    session.commit()
    ids = deferred(session, settings, [(jane.phone, to, "hi") for to, jane, _ in made])

    outcomes, _ = process_batch(session, settings, ids)
    session.commit()

    assert [o.channel_id for o in outcomes] == [channel.id for _, _, channel in made]


# The per-sender lock is PostgreSQL's (SQLite serializes writers): PostgreSQL only.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_sender_another_transaction_holds_is_left_and_the_others_go_on(
    runtime: Runtime, session: Session, settings: Settings
) -> None:
    chat = factories.conversation_in(session, settings)
    session.commit()
    ids = deferred(
        session, settings, [(chat.jane.phone, chat.to, "1"), (chat.omar.phone, chat.to, "2")]
    )

    with runtime.sessions() as other, other.begin():
        key = f"inbound:{chat.org.id}:{chat.jane.phone}"
        other.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})
        outcomes, held = process_batch(session, settings, ids)
        session.commit()
    assert (held, [o.inbound.id for o in outcomes]) == (1, [ids[1]])

    outcomes, held = process_batch(session, settings, ids)
    session.commit()
    assert (held, [o.inbound.id for o in outcomes]) == (0, [ids[0]])
