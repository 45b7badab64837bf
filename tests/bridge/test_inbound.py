"""The domain side of inbound SMS: keywords, matching (DESIGN 5.5, 5.6), storing, dedupe, lists."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import ValidationError
from bridge.inbound import (
    INLINE_AFTER,
    detect_keyword,
    list_inbound,
    record_inbound_sms,
    waiting_sms,
)
from bridge.inbound_processing import process_received
from bridge.models import (
    Contact,
    Delivery,
    DeliveryStatus,
    InboundSms,
    Message,
)
from bridge.organizations import (
    find_or_create_contact,
    is_opted_out,
    sender_numbers,
    update_organization,
)
from bridge.settings import Settings
from bridge.twilio_webhooks import media_urls_from
from tests import factories
from tests.fixtures.twilio import payloads


def receive(
    session: Session, settings: Settings, payload: dict[str, str], token: str | None = None
) -> Any:
    outcome = record_inbound_sms(session, settings, payload, token)
    session.commit()
    return outcome


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", ("stop", "STOP")),
        ("stop", ("stop", "STOP")),
        ("Stop", ("stop", "STOP")),
        (" STOP ", ("stop", "STOP")),
        ("\tsTOp\n", ("stop", "STOP")),
        ("stopall", ("stop", "STOPALL")),
        ("Unsubscribe", ("stop", "UNSUBSCRIBE")),
        ("cancel", ("stop", "CANCEL")),
        ("END", ("stop", "END")),
        ("quit", ("stop", "QUIT")),
        ("OptOut", ("stop", "OPTOUT")),
        ("revoke", ("stop", "REVOKE")),
        ("start", ("start", "START")),
        ("Yes", ("start", "YES")),
        (" unstop", ("start", "UNSTOP")),
        ("HELP", ("help", "HELP")),
        ("info ", ("help", "INFO")),
        ("stop please", None),
        ("please stop", None),
        ("S T O P", None),
        ("STOP.", None),
        ("yes!", None),
        ("", None),
        (None, None),
        ("helpful", None),
    ],
)
def test_keywords_are_the_whole_trimmed_body_in_any_case(
    body: str | None, expected: tuple[str, str] | None
) -> None:
    assert detect_keyword(body) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, 2),
        ({"NumMedia": "1"}, 1),
        ({"NumMedia": "0"}, 0),
        ({"NumMedia": "x"}, 0),
        ({"NumMedia": "-3"}, 0),
        ({"NumMedia": "500"}, 2),  # only the MediaUrlN that exist
    ],
)
def test_media_urls_follow_num_media(changes: dict[str, str], expected: int) -> None:
    payload = payloads.load("inbound_mms", **changes)
    urls = media_urls_from(payload)
    assert len(urls) == expected
    assert urls == [payload[f"MediaUrl{i}"] for i in range(expected)]


def test_a_reply_is_stored_in_the_channel_and_the_thread_and_relayed(
    session: Session, settings: Settings
) -> None:
    chat = factories.conversation_in(session, settings)
    session.commit()

    outcome = receive(session, settings, payloads.inbound(chat.jane.phone, chat.to, "On my way"))

    assert outcome.outcome == "matched"
    assert outcome.twiml == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    inbound = outcome.inbound
    assert (inbound.status, inbound.channel_id, inbound.organization_id) == (
        "matched",
        chat.channel.id,
        chat.org.id,
    )
    message = session.execute(select(Message).where(Message.id == inbound.message_id)).scalar_one()
    assert (message.thread_id, message.channel_id, message.subscriber_id) == (
        chat.thread.id,
        chat.channel.id,
        chat.jane.id,
    )
    assert (message.type, message.text, message.author_type) == ("text", "On my way", "contact")
    assert message.published_at is not None
    # Relayed to the other contact only, with the author's name in front.
    relays = list(
        session.execute(select(Delivery).where(Delivery.message_id == message.id)).scalars()
    )
    assert [(d.subscriber_id, d.body) for d in relays] == [(chat.omar.id, "Jane Doe: On my way")]
    assert outcome.posted[0].published is not None
    assert outcome.posted[0].published.pending == 1


def test_an_mms_keeps_its_media(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-mms")
    session.commit()
    payload = payloads.inbound(
        jane.phone, sender_numbers(session, org.id)[0], "Box", name="inbound_mms"
    )

    outcome = receive(session, settings, payload)

    message = session.execute(
        select(Message).where(Message.id == outcome.inbound.message_id)
    ).scalar_one()
    assert message.media_urls == [payload["MediaUrl0"], payload["MediaUrl1"]]


def test_national_format_numbers_are_normalized(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-fmt")
    session.commit()
    to = sender_numbers(session, org.id)[0]
    national = f"({jane.phone[2:5]}) {jane.phone[5:8]}-{jane.phone[8:]}"

    outcome = receive(session, settings, payloads.inbound(national, to[2:], "hi"))

    assert outcome.inbound.status == "matched"
    assert (outcome.inbound.from_phone, outcome.inbound.to_phone) == (jane.phone, to)


def test_one_number_two_channels_goes_to_the_one_that_last_sent_this_contact_an_sms(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings, senders=1)
    jane = factories.contact(session, settings, org)
    first, second = factories.two_channels(session, settings, org, jane, ("order-a", "order-b"))
    session.commit()
    to = sender_numbers(session, org.id)[0]
    # Nothing sent yet: the most recently updated channel (order-b published last).
    assert receive(session, settings, payloads.inbound(jane.phone, to, "1")).inbound.channel_id == (
        second.id
    )
    # The SMS of order-a went out last: a reply answers it, even though order-b is newer.
    first_delivery = session.execute(
        select(Delivery).where(Delivery.channel_id == first.id, Delivery.subscriber_id == jane.id)
    ).scalar_one()
    first_delivery.status = DeliveryStatus.DELIVERED
    first_delivery.publish_seq = 10**17
    second.updated_at = utcnow() + timedelta(minutes=5)
    session.commit()

    outcome = receive(session, settings, payloads.inbound(jane.phone, to, "2"))

    assert outcome.inbound.channel_id == first.id


@pytest.mark.parametrize("newest", ["first", "second"])
def test_with_nothing_sent_yet_the_most_recently_updated_channel_answers(
    session: Session, settings: Settings, newest: str
) -> None:
    org, _ = factories.organization(session, settings, senders=1)
    jane = factories.contact(session, settings, org)
    first, second = factories.two_channels(session, settings, org, jane, ("order-c", "order-d"))
    # Deliveries still pending: none was sent, so only the channels' update times can decide.
    assert {d.status for d in session.execute(select(Delivery)).scalars()} == {"pending"}
    chosen, other = (first, second) if newest == "first" else (second, first)
    chosen.updated_at = utcnow() + timedelta(minutes=5)
    other.updated_at = utcnow() - timedelta(minutes=5)
    session.commit()

    outcome = receive(
        session, settings, payloads.inbound(jane.phone, sender_numbers(session, org.id)[0], "x")
    )

    assert outcome.inbound.channel_id == chosen.id


def test_two_numbers_of_the_pool_each_name_one_channel(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings, senders=2)
    jane = factories.contact(session, settings, org)
    first, second = factories.two_channels(session, settings, org, jane, ("order-e", "order-f"))
    session.commit()
    senders = factories.numbers_by_channel(session, jane.id)
    assert senders[first.id] != senders[second.id], "the pool gives each channel its own number"
    # Make the other rules point the wrong way: the pair must decide.
    first.updated_at = utcnow() - timedelta(days=1)
    second.updated_at = utcnow() + timedelta(days=1)
    session.commit()

    to_first = receive(session, settings, payloads.inbound(jane.phone, senders[first.id], "a"))
    to_second = receive(session, settings, payloads.inbound(jane.phone, senders[second.id], "b"))

    assert (to_first.inbound.channel_id, to_second.inbound.channel_id) == (first.id, second.id)


@pytest.mark.parametrize(
    ("case", "from_", "expected_org"),
    [
        ("unknown sender", "+14155550199", True),
        ("short code", "72345", True),
        ("alphanumeric sender", "MyShop", True),
        ("contact without channel", "contact", True),
        ("number nobody owns", "jane", False),
    ],
)
def test_what_cannot_be_matched_is_kept_as_unmatched(
    session: Session, settings: Settings, case: str, from_: str, expected_org: bool
) -> None:
    org, _ = factories.organization(session, settings)
    to = sender_numbers(session, org.id)[0]
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-g")
    if from_ == "contact":
        from_ = factories.contact(session, settings, org, "Lonely").phone
    if from_ == "jane":
        from_, to = jane.phone, factories.sender()
    session.commit()
    messages_before = session.scalar(select(func.count()).select_from(Message))

    outcome = receive(session, settings, payloads.inbound(from_, to, "hello?"))

    inbound = outcome.inbound
    assert inbound.status == "unmatched", case
    assert inbound.organization_id == (org.id if expected_org else None)
    assert inbound.body == "hello?" and inbound.channel_id is None and inbound.message_id is None
    assert outcome.twiml.endswith("<Response />")
    assert session.scalar(select(func.count()).select_from(Message)) == messages_before
    assert session.scalar(select(func.count()).select_from(InboundSms)) == 1


def test_stop_and_start_change_the_opt_out_and_leave_a_meta_message_in_each_channel(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org, "Jane Doe")
    first, second = factories.two_channels(session, settings, org, jane, ("order-h", "order-i"))
    session.commit()
    to = sender_numbers(session, org.id)[0]

    stop = receive(session, settings, payloads.inbound(jane.phone, to, " Unsubscribe "))

    assert (stop.inbound.status, stop.inbound.keyword, stop.outcome) == (
        "keyword",
        "UNSUBSCRIBE",
        "keyword",
    )
    assert stop.twiml.endswith("<Response />") and stop.posted == []
    assert is_opted_out(session, org.id, jane.phone_hash)
    metas = list(
        session.execute(
            select(Message).where(Message.type == "meta", Message.event == "contact.opted_out")
        ).scalars()
    )
    assert sorted(factories.known(m.channel_id) for m in metas) == sorted([first.id, second.id])
    assert all(m.subscriber_id == jane.id and m.published_at is not None for m in metas)
    assert (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.message_id.in_([m.id for m in metas]))
        )
        == 0
    ), "meta messages never go by SMS"

    start = receive(session, settings, payloads.inbound(jane.phone, to, "yes"))

    assert (start.inbound.keyword, is_opted_out(session, org.id, jane.phone_hash)) == ("YES", False)
    assert (
        session.scalar(
            select(func.count()).select_from(Message).where(Message.event == "contact.opted_in")
        )
        == 2
    )


def test_stop_is_per_organization(session: Session, settings: Settings) -> None:
    acme, _ = factories.organization(session, settings, "Acme")
    other, _ = factories.organization(session, settings, "Other")
    jane = factories.contact(session, settings, acme)
    session.commit()

    receive(
        session, settings, payloads.inbound(jane.phone, sender_numbers(session, acme.id)[0], "STOP")
    )

    assert is_opted_out(session, acme.id, jane.phone_hash)
    assert not is_opted_out(session, other.id, jane.phone_hash)


def test_stop_from_a_number_that_is_not_a_contact_yet_still_holds(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    phone = factories.phone()
    session.commit()

    outcome = receive(
        session, settings, payloads.inbound(phone, sender_numbers(session, org.id)[0], "stop")
    )
    later = factories.contact(session, settings, org)  # a fresh number: not opted out
    jane, _ = find_or_create_contact(session, settings, org.id, phone)

    assert outcome.inbound.status == "keyword"
    assert is_opted_out(session, org.id, jane.phone_hash)
    assert not is_opted_out(session, org.id, later.phone_hash)


@pytest.mark.parametrize("word", ["HELP", "help", " Info "])
def test_help_answers_with_the_organization_help_text(
    session: Session, settings: Settings, word: str
) -> None:
    org, _ = factories.organization(session, settings, "Acme & Sons")
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-j")
    session.commit()
    to = sender_numbers(session, org.id)[0]

    default = receive(session, settings, payloads.inbound(jane.phone, to, word))
    update_organization(session, org.id, help_text="Call 555-0100 <any time>")
    session.commit()
    custom = receive(session, settings, payloads.inbound(jane.phone, to, word))

    assert "<Message>Acme &amp; Sons: messages about" in default.twiml
    assert "Reply STOP to unsubscribe" in default.twiml
    assert custom.twiml.endswith(
        "<Response><Message>Call 555-0100 &lt;any time&gt;</Message></Response>"
    )
    assert custom.inbound.response_twiml == custom.twiml
    assert not is_opted_out(session, org.id, jane.phone_hash)


def test_a_repeat_changes_nothing_and_gets_the_first_answer(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-k")
    session.commit()
    to = sender_numbers(session, org.id)[0]
    payload = payloads.inbound(jane.phone, to, "HELP")

    first = receive(session, settings, payload, token="tok-1")
    again = receive(session, settings, payload, token="tok-1")
    # A retry that carries the same idempotency token is the same webhook, whatever else it says.
    retry = receive(session, settings, payloads.inbound(jane.phone, to, "hi"), token="tok-1")

    assert (first.duplicate, again.duplicate, retry.duplicate) == (False, True, True)
    assert again.outcome == "duplicate"
    assert again.twiml == first.twiml == retry.twiml
    assert again.inbound.id == first.inbound.id == retry.inbound.id
    assert session.scalar(select(func.count()).select_from(InboundSms)) == 1


@pytest.mark.parametrize("missing", ["MessageSid", "From", "To"])
def test_a_payload_without_its_key_fields_is_rejected_naming_the_field(
    session: Session, settings: Settings, missing: str
) -> None:
    payload = payloads.inbound("+14155550100", "+16283001000", "x")
    payload.pop(missing)
    if missing == "MessageSid":
        payload.pop("SmsSid")
        payload.pop("SmsMessageSid")

    with pytest.raises(ValidationError) as error:
        record_inbound_sms(session, settings, payload)

    assert error.value.param == missing


def test_list_inbound_filters_by_status_and_pages(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    to = sender_numbers(session, org.id)[0]
    session.commit()
    for body in ["a", "b", "c", "HELP"]:
        receive(session, settings, payloads.inbound(factories.phone(), to, body))
    receive(
        session,
        settings,
        payloads.inbound(factories.phone(), sender_numbers(session, other.id)[0], "z"),
    )

    page, more = list_inbound(session, org.id, "unmatched", limit=2)
    rest, more_after = list_inbound(session, org.id, "unmatched", limit=2, before=page[-1].id)
    keywords, _ = list_inbound(session, org.id, "keyword")

    assert [i.body for i in page + rest] == ["c", "b", "a"]
    assert (more, more_after) == (True, False)
    assert [i.keyword for i in keywords] == ["HELP"]
    with pytest.raises(ValidationError) as bad:
        list_inbound(session, org.id, "lost")
    assert bad.value.param == "status"


def test_lone_surrogates_and_nul_bytes_are_stored_as_replacement_characters(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-z")
    session.commit()
    to = sender_numbers(session, org.id)[0]
    payload = payloads.inbound(jane.phone, to, "\ud83d half an emoji\x00", ToCity="\udc00")

    outcome = receive(session, settings, payload, token="tok-\ud800")

    session.expire_all()
    inbound = session.get_one(InboundSms, outcome.inbound.seq)
    assert (inbound.status, inbound.body) == ("matched", "\ufffd half an emoji\ufffd")
    assert (inbound.params["ToCity"], inbound.idempotency_token) == ("\ufffd", "tok-\ufffd")
    message = session.execute(select(Message).where(Message.id == inbound.message_id)).scalar_one()
    assert message.text == "\ufffd half an emoji\ufffd"


@pytest.mark.parametrize("body", ["On my way", "HELP", "STOP"])
def test_the_inbound_record_is_inserted_once_and_updated_once(
    session: Session, settings: Settings, body: str
) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-w")
    factories.thread_channel(session, settings, org, [jane], "order-x")
    session.commit()
    to = sender_numbers(session, org.id)[0]
    with factories.statements(session.get_bind()) as statements:
        outcome = receive(session, settings, payloads.inbound(jane.phone, to, body))
    written = [s.split()[0].upper() for s in statements if "inbound_sms" in s]

    assert outcome.inbound.status in {"matched", "keyword"}
    # No read before (the insert itself tells a repeat), no savepoint, no write halfway through.
    # A reply then reads its sender's waiting SMS (its own among them), to keep their order.
    assert written[0] == "INSERT"
    assert [s for s in written if s != "SELECT"] == ["INSERT", "UPDATE"]
    assert written.count("SELECT") == (1 if body == "On my way" else 0)


def test_two_organizations_with_one_resource_id_and_one_number_stay_apart(
    session: Session, settings: Settings
) -> None:
    # Both hold thread `thrd_order-1001` with the same contact number: an SMS to one
    # organization's number lands in that organization's thread and channel only, and the two
    # contacts' phone hashes cannot be matched up.
    ann = "+14155550123"
    orgs = [factories.organization(session, settings, name)[0] for name in ("Shop A", "Shop B")]
    threads, channels = [], []
    for org in orgs:
        contact, _ = find_or_create_contact(session, settings, org.id, ann, name="Ann")
        thread, channel = factories.thread_channel(session, settings, org, [contact], "order-1001")
        threads.append(thread)
        channels.append(channel)
    session.commit()
    hashes = [c.phone_hash for c in session.scalars(select(Contact).where(Contact.phone == ann))]
    assert len(set(hashes)) == 2
    to = sender_numbers(session, orgs[1].id)[0]
    outcome = receive(session, settings, payloads.inbound(ann, to, "At the door?"))
    assert outcome.inbound.channel_id == channels[1].id
    texts = {
        org.id: session.scalars(
            select(Message.text).where(
                Message.organization_id == org.id, Message.thread_id == "thrd_order-1001"
            )
        ).all()
        for org in orgs
    }
    assert texts == {
        orgs[0].id: ["About order-1001"],
        orgs[1].id: ["About order-1001", "At the door?"],
    }


@pytest.mark.parametrize("help_text", ["Call us\x01\x07 now\x1b[31m", None])
def test_help_twiml_parses_whatever_the_stored_texts_hold(
    session: Session, settings: Settings, help_text: str | None
) -> None:
    # Stored before the API refused control characters (or written by hand): the TwiML still
    # parses, without the characters XML cannot hold.
    org, _ = factories.organization(session, settings, "Acme\x0b Sons")
    org.help_text = help_text
    jane = factories.contact(session, settings, org)
    factories.thread_channel(session, settings, org, [jane], "order-ctl")
    session.commit()
    to = sender_numbers(session, org.id)[0]
    outcome = receive(session, settings, payloads.inbound(jane.phone, to, "HELP"))
    message = ElementTree.fromstring(outcome.twiml).findtext("Message")
    assert message is not None
    assert message.startswith("Call us now[31m" if help_text else "Acme Sons: messages about")


def test_deferred_a_reply_is_only_stored_and_a_worker_matches_it_later(
    session: Session, settings: Settings
) -> None:
    chat = factories.conversation_in(session, settings)
    session.commit()
    replies = select(func.count()).select_from(Message).where(Message.author_type == "contact")

    outcome = record_inbound_sms(
        session, settings, payloads.inbound(chat.jane.phone, chat.to, "On my way"), defer=True
    )
    session.commit()

    assert outcome.pending and outcome.outcome == "received" and outcome.posted == []
    assert session.scalar(replies) == 0
    [done] = process_received(session, settings, outcome.inbound.id)
    session.commit()
    assert (done.outcome, done.channel_id) == ("matched", chat.channel.id)
    assert session.scalar(replies) == 1
    assert done.posted[0].published is not None and done.posted[0].published.pending == 1
    assert process_received(session, settings, outcome.inbound.id) == [], "processed once"


@pytest.mark.parametrize("body", ["STOP", "HELP"])
def test_deferred_keywords_still_act_before_the_answer(
    session: Session, settings: Settings, body: str
) -> None:
    org, _ = factories.organization(session, settings)
    jane = factories.contact(session, settings, org, "Jane Doe")
    session.commit()
    to = sender_numbers(session, org.id)[0]

    outcome = record_inbound_sms(
        session, settings, payloads.inbound(jane.phone, to, body), defer=True
    )
    session.commit()

    assert not outcome.pending and outcome.outcome == "keyword"
    assert is_opted_out(session, org.id, jane.phone_hash) == (body == "STOP")
    assert ("<Message>" in outcome.twiml) == (body == "HELP")


def test_deferred_an_sms_to_no_organization_is_kept_unmatched_at_once(
    session: Session, settings: Settings
) -> None:
    outcome = record_inbound_sms(
        session, settings, payloads.inbound("+14155550100", "+14155559999", "hi"), defer=True
    )
    session.commit()
    assert not outcome.pending and outcome.outcome == "unmatched"


def test_deferred_sms_of_one_contact_are_stored_in_the_order_received(
    session: Session, settings: Settings
) -> None:
    """Whichever job runs first, a contact's SMS reach the channel in the order they arrived."""
    chat = factories.conversation_in(session, settings)
    session.commit()
    ids = []
    for text in ["one", "two", "three"]:
        payload = payloads.inbound(chat.jane.phone, chat.to, text)
        ids.append(record_inbound_sms(session, settings, payload, defer=True).inbound.id)
        session.commit()

    # The last one's job first: it takes the two before it, in their order.
    done = process_received(session, settings, ids[2])
    session.commit()
    assert [o.inbound.body for o in done] == ["one", "two", "three"]
    assert process_received(session, settings, ids[0]) == []
    texts = session.scalars(
        select(Message.text)
        .where(Message.channel_id == chat.channel.id, Message.author_type == "contact")
        .order_by(Message.seq)
    ).all()
    assert texts == ["one", "two", "three"]
    assert waiting_sms(session, 10) == []


def test_deferred_while_the_workers_are_behind_the_webhook_matches_its_sms_itself(
    session: Session, settings: Settings
) -> None:
    """An SMS waiting past INLINE_AFTER means the workers are behind: the wait stays bounded."""
    chat = factories.conversation_in(session, settings)
    session.commit()
    first = record_inbound_sms(
        session, settings, payloads.inbound(chat.jane.phone, chat.to, "1"), defer=True
    )
    session.commit()
    assert first.pending
    first.inbound.received_at = utcnow() - INLINE_AFTER - timedelta(seconds=0.1)
    session.commit()

    second = record_inbound_sms(
        session, settings, payloads.inbound(chat.jane.phone, chat.to, "2"), defer=True
    )
    session.commit()

    assert not second.pending and second.outcome == "matched"
    assert len(second.posted) == 2, "the earlier SMS of the sender first, both relayed"
    texts = session.scalars(
        select(Message.text).where(Message.author_type == "contact").order_by(Message.seq)
    ).all()
    assert texts == ["1", "2"]


def test_a_drained_webhook_is_stored_after_the_sms_its_sender_sent_before_it(
    session: Session, settings: Settings
) -> None:
    """Kept in Redis while the database was down, an SMS is drained (not deferred) while an
    earlier one of its sender still waits for the workers: the earlier one reaches the channel
    first, and both are relayed (DESIGN 5.5: a contact's SMS in the order received)."""
    chat = factories.conversation_in(session, settings)
    session.commit()
    first = record_inbound_sms(
        session, settings, payloads.inbound(chat.jane.phone, chat.to, "first"), defer=True
    )
    session.commit()
    assert first.pending

    drained = record_inbound_sms(
        session, settings, payloads.inbound(chat.jane.phone, chat.to, "second")
    )
    session.commit()

    assert drained.outcome == "matched" and len(drained.posted) == 2
    texts = session.scalars(
        select(Message.text)
        .where(Message.channel_id == chat.channel.id, Message.author_type == "contact")
        .order_by(Message.seq)
    ).all()
    assert texts == ["first", "second"]
    assert waiting_sms(session, 10) == []
