"""The console's pages: what they show, 404 for another organization, bad input, query counts."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import redis
from sqlalchemy import select

from bridge.db import transaction
from bridge.deliveries import apply_status
from bridge.ids import new_id
from bridge.messages import Draft, post_message
from bridge.models import Delivery, InboundSms, Message
from bridge.organizations import find_or_create_contact, opt_out
from bridge.runtime import Runtime
from bridge.threads import create_thread
from tests import factories
from tests.console.conftest import Dispatcher, conversation, dispatcher, scheduled


def _fail_one(runtime: Runtime, message_text_prefix: str, code: int) -> None:
    with transaction(runtime.sessions) as session:
        delivery = session.execute(
            select(Delivery)
            .join(Message, Message.id == Delivery.message_id)
            .where(Message.text.startswith(message_text_prefix))
            .limit(1)
        ).scalar_one()
        apply_status(session, delivery, "failed", "SM" + secrets.token_hex(16), code)


def _unmatched(runtime: Runtime, organization_id: str, phone: str, body: str) -> None:
    with transaction(runtime.sessions) as session:
        session.add(
            InboundSms(
                id=new_id("in"),
                message_sid="SM" + new_id("x")[2:],
                organization_id=organization_id,
                from_phone=phone,
                to_phone="+16285550100",
                body=body,
                status="unmatched",
            )
        )


def test_the_inbox_lists_channels_latest_first_with_names_last_line_and_unread(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        conversation(session, runtime.settings, desk.organization, "order-1", ("Ann Ames",))
        c2 = conversation(session, runtime.settings, desk.organization, "order-2", ("Bob Burr",))
    page = desk.get("/console/").get_data(as_text=True)
    assert page.index("Bob Burr") < page.index("Ann Ames")
    assert "Reply 0" in page and "more" not in page.split("Bob Burr", 1)[1].split("</li>")[0]
    assert page.count("Unread") == 2
    # Opening a conversation marks it read.
    desk.get(f"/console/channels/{c2.channel_id}")
    assert desk.get("/console/").get_data(as_text=True).count("Unread") == 1


def test_search_finds_a_contact_by_name_or_by_a_national_format_number(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        ann = conversation(session, runtime.settings, desk.organization, "o-1", ("Ann Ames",))
        conversation(session, runtime.settings, desk.organization, "o-2", ("Bob Burr",))
    national = ann.contacts[0].phone[2:]  # +1415... read as (415) ... with the default region US
    national = f"({national[:3]}) {national[3:6]}-{national[6:]}"
    with factories.statements(runtime.engine) as statements:
        page = desk.get("/console/", query_string={"q": national}).get_data(as_text=True)
    assert "Ann Ames" in page and "Bob Burr" not in page
    # The number is hashed as inbound matching does: no statement compares phone numbers.
    assert not any("LIKE" in s.upper() and "PHONE" in s.upper() for s in statements)
    page = desk.get("/console/", query_string={"q": "bob b"}).get_data(as_text=True)
    assert "Bob Burr" in page and "Ann Ames" not in page
    page = desk.get("/console/", query_string={"q": "100%_"}).get_data(as_text=True)
    assert "No conversation matches" in page


def test_search_by_number_finds_only_this_organizations_conversation(
    desk: Dispatcher, app: Any, runtime: Runtime
) -> None:
    # Another organization has a conversation about the same resource with the same number.
    other = dispatcher(app, runtime, "Other Shop")
    assert other.sign_in().status_code == 303
    with transaction(runtime.sessions) as session:
        ours = conversation(session, runtime.settings, desk.organization, "o-1", ("Ann Ours",))
        zed, _ = find_or_create_contact(
            session, runtime.settings, other.organization.id, ours.contacts[0].phone, "Zed"
        )
        actor = factories.org_actor(other.organization)
        create_thread(session, runtime.settings, actor, "o-1", subscribers=[zed.id])
        post_message(session, runtime.settings, actor, "thrd_o-1", Draft.of("Theirs"))
    for desk_, mine, not_mine in ((desk, "Ann Ours", "Zed"), (other, "Zed", "Ann Ours")):
        page = desk_.get("/console/", query_string={"q": ours.contacts[0].phone})
        text = page.get_data(as_text=True)
        assert mine in text and not_mine not in text


def test_the_inbox_pages_by_keyset_and_refuses_a_made_up_cursor(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        for i in range(53):
            conversation(
                session, runtime.settings, desk.organization, f"o-{i}", (f"C{i:02d}",), replies=0
            )
    first = desk.get("/console/").get_data(as_text=True)
    assert first.count('class="names"') == 50
    cursor = first.split("after=", 1)[1].split('"', 1)[0].replace("%7E", "~")
    second = desk.get("/console/", query_string={"after": cursor}).get_data(as_text=True)
    assert second.count('class="names"') == 3 and "after=" not in second
    bad = desk.get("/console/", query_string={"after": "9" * 30 + "~x"})
    assert bad.status_code == 422 and "cursor" in bad.get_data(as_text=True)
    bad = desk.get("/console/", query_string={"after": "99999999999999999999~chnl_x"})
    assert bad.status_code == 422


def test_a_conversation_shows_messages_authors_deliveries_media_and_scheduled(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "o-1", ("Ann", "Bob"))
        later = scheduled(session, runtime.settings, desk.organization, c.thread_id, "Later on")
        msg = session.execute(select(Message).where(Message.text.startswith("Reply 0"))).scalar()
        assert msg is not None
        msg.media_urls = ["https://media.example.com/photo.jpg"]
    _fail_one(runtime, "Update 0", 30007)
    page = desk.get(f"/console/channels/{c.channel_id}").get_data(as_text=True)
    assert page.index("Update 0") < page.index("Reply 0")
    assert 'class="msg ours"' in page and 'class="msg theirs"' in page
    assert "Acme Logistics" in page
    assert 'href="https://media.example.com/photo.jpg"' in page
    assert "The carrier filtered the message" in page and 'title="The carrier filtered' in page
    assert "Later on" in page and f"cancel-{later.id}" in page
    # Bob's relayed copy of Ann's reply is waiting to send.
    assert "Bob: waiting to send" in page


def test_replying_posts_to_the_thread_and_a_cancel_cancels(
    desk: Dispatcher, runtime: Runtime, redis_client: redis.Redis
) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "o-1")
        later = scheduled(session, runtime.settings, desk.organization, c.thread_id, "Later on")
    path = f"/console/channels/{c.channel_id}"
    response = desk.post(f"{path}/reply", {"text": "Be there at 5"}, path)
    assert response.status_code == 303
    with runtime.sessions() as session:
        reply = session.execute(select(Message).where(Message.text == "Be there at 5")).scalar_one()
        assert reply.thread_id == c.thread_id and reply.channel_id == c.channel_id
        assert reply.published_at is not None
    assert redis_client.keys("rq:queue:*"), "the fan-out was not enqueued"
    assert desk.post(f"/console/messages/{later.id}/cancel", {}, path).status_code == 303
    with runtime.sessions() as session:
        canceled = session.execute(select(Message).where(Message.id == later.id)).scalar_one()
        assert canceled.canceled_at is not None
    assert "Later on" not in desk.get(path).get_data(as_text=True)
    # Canceling it again, or a published message, is a clear error, not a 500.
    assert desk.post(f"/console/messages/{reply.id}/cancel", {}, path).status_code == 409


def test_an_empty_reply_is_a_clear_error(desk: Dispatcher, runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "o-1")
    path = f"/console/channels/{c.channel_id}"
    response = desk.post(f"{path}/reply", {"text": "   "}, path)
    assert response.status_code == 422
    assert "text must not be empty" in response.get_data(as_text=True)


def test_another_organizations_channel_and_message_are_404(
    desk: Dispatcher, runtime: Runtime
) -> None:
    other = dispatcher(desk.client.application, runtime, "Other Org")
    with transaction(runtime.sessions) as session:
        theirs = conversation(session, runtime.settings, other.organization, "o-9")
        later = scheduled(session, runtime.settings, other.organization, theirs.thread_id, "x")
    path = f"/console/channels/{theirs.channel_id}"
    assert desk.get(path).status_code == 404
    assert desk.get(path + "/live").status_code == 404
    assert desk.post(path + "/reply", {"text": "hi"}).status_code == 404
    assert desk.post(f"/console/messages/{later.id}/cancel").status_code == 404
    assert desk.get("/console/channels/not-an-id").status_code == 404
    assert "There is no such page" in desk.get(path).get_data(as_text=True)


def test_the_live_fragment_is_304_until_something_changes(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "o-1")
    live = f"/console/channels/{c.channel_id}/live"
    first = desk.get(live)
    etag = first.headers["ETag"]
    assert desk.get(live, headers={"If-None-Match": etag}).status_code == 304
    _fail_one(runtime, "Update 0", 21211)
    changed = desk.get(live, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and "not valid" in changed.get_data(as_text=True)
    assert desk.client.get(live).status_code == 200
    signed_out = dispatcher(desk.client.application, runtime, "Nobody").client
    assert signed_out.get(live).status_code == 401


def test_failed_unmatched_and_contacts_pages(desk: Dispatcher, runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "o-1", ("Ann Ames",))
        opt_out(session, desk.organization.id, c.contacts[0].phone_hash)
    _fail_one(runtime, "Update 0", 21211)
    _unmatched(runtime, desk.organization.id, "+14155559876", "Who is this?")
    failed = desk.get("/console/failed").get_data(as_text=True)
    assert "Ann Ames" in failed and "phone number is not valid" in failed
    assert f"/console/channels/{c.channel_id}#m-" in failed
    unmatched = desk.get("/console/unmatched").get_data(as_text=True)
    assert "Who is this?" in unmatched and "From …9876" in unmatched
    contacts = desk.get("/console/contacts").get_data(as_text=True)
    assert "Ann Ames" in contacts and "Opted out" in contacts
    assert desk.get("/console/unmatched", query_string={"before": "junk"}).status_code == 422
    assert desk.get("/console/unmatched", query_string={"before": "in_none"}).status_code == 404
    assert desk.get("/console/failed", query_string={"after": "x"}).status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/console/",
        "/console/?q=Ann",
        "/console/failed",
        "/console/unmatched",
        "/console/contacts",
        "/console/act-as",
    ],
)
def test_each_list_page_runs_a_fixed_number_of_queries(
    app: Any, runtime: Runtime, path: str
) -> None:
    counts = []
    for size in (2, 12):
        d = dispatcher(app, runtime, f"Org {size}")
        d.sign_in()
        d.get("/console/")  # the session's CSRF token exists from here on
        with transaction(runtime.sessions) as session:
            for i in range(size):
                c = conversation(
                    session, runtime.settings, d.organization, f"o-{size}-{i}", (f"Ann {i}",)
                )
                opt_out(session, d.organization.id, c.contacts[0].phone_hash)
                factories.user(session, runtime.settings, d.organization, f"User {i}")
        _fail_one(runtime, f"Update 0 on o-{size}-", 30007)
        for i in range(size):
            _unmatched(runtime, d.organization.id, f"+1415555{size:02d}{i:02d}", "hi")
        with factories.statements(runtime.engine) as statements:
            assert d.get(path).status_code == 200
        counts.append(len(statements))
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("suffix", ["", "/live"])
def test_a_conversation_runs_a_fixed_number_of_queries(
    desk: Dispatcher, runtime: Runtime, suffix: str
) -> None:
    counts = []
    for size in (2, 40):
        with transaction(runtime.sessions) as session:
            c = conversation(
                session, runtime.settings, desk.organization, f"o-{size}", ("A", "B"), size, size
            )
            scheduled(session, runtime.settings, desk.organization, c.thread_id, "later")
        _fail_one(runtime, f"Update 1 on o-{size}", 30007)
        desk.get(f"/console/channels/{c.channel_id}")  # marks it viewed once
        with factories.statements(runtime.engine) as statements:
            assert desk.get(f"/console/channels/{c.channel_id}{suffix}").status_code == 200
        counts.append(len(statements))
    assert counts[0] == counts[1], counts


def test_control_characters_and_oversized_forms_are_clear_errors(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "o-1")
    path = f"/console/channels/{c.channel_id}"
    nul = desk.post(f"{path}/reply", {"text": "a\x00b"}, path)
    assert nul.status_code == 422 and "control character" in nul.get_data(as_text=True)
    assert desk.get("/console/", query_string={"q": "Ann\x00"}).status_code == 422
    assert desk.get("/console/channels/chnl_%00").status_code == 404
    huge = desk.post(f"{path}/reply", {"text": "x" * 70_000}, path)
    assert huge.status_code == 413 and "<h1>" in huge.get_data(as_text=True)
    long = desk.post(f"{path}/reply", {"text": "x" * 16_001}, path)
    assert long.status_code == 422 and "at most 16000" in long.get_data(as_text=True)
