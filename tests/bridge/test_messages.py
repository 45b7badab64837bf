"""Messages: posting, validation, editing, canceling and paging (DESIGN 5.2, 5.4, section 6)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.db import utcnow
from bridge.errors import Conflict, Forbidden, NotFound, ValidationError
from bridge.messages import (
    MAX_PUBLISH_AT,
    MAX_TEXT_LENGTH,
    Draft,
    cancel_message,
    edit_message,
    get_message,
    page_messages,
    post_message,
)
from bridge.models import Delivery, Message, Organization, Thread
from bridge.publishing import publish_due_messages
from bridge.settings import Settings
from bridge.threads import add_subscriber, create_thread, load_thread_view
from tests import factories


def _thread(
    session: Session, settings: Settings, contacts: int = 0
) -> tuple[Organization, Thread, list[str]]:
    org, _ = factories.organization(session, settings)
    ids = [factories.contact(session, settings, org).id for _ in range(contacts)]
    thread, _ = create_thread(
        session, settings, factories.org_actor(org), "order-1", subscribers=ids
    )
    session.commit()
    return org, thread, ids


def test_post_a_message_to_a_thread(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    uma = factories.user(session, settings, org)
    posted = post_message(
        session,
        settings,
        Actor.user(org.id, uma.id),
        thread.id,
        Draft.of("On its way", type="tracking_update", media_urls=["https://example.com/map.png"]),
    )
    session.commit()
    message = posted.message
    assert message.id.startswith("msg_")
    assert (message.thread_id, message.subscriber_id, message.type) == (
        thread.id,
        uma.id,
        "tracking_update",
    )
    assert message.media_urls == ["https://example.com/map.png"]
    assert message.channel_id is None and posted.published is None  # no contacts: no channel
    # The user who posts becomes a subscriber of the thread.
    view = load_thread_view(session, org.id, thread.id)
    assert uma.id in [r.subscriber_id for r in view.subscribers]
    assert get_message(session, org.id, message.id) is message


def test_media_without_text_is_fine(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    posted = post_message(
        session,
        settings,
        factories.org_actor(org),
        thread.id,
        Draft.of(None, media_urls=["https://example.com/a.jpg"]),
    )
    assert posted.message.text == ""


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"type": "video"}, "type"),
        ({"type": "meta"}, "type"),
        ({"type": 3}, "type"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": None}, "text"),
        ({"text": 42}, "text"),
        ({"text": "x" * (MAX_TEXT_LENGTH + 1)}, "text"),
        ({"media_urls": [f"https://example.com/{i}.png" for i in range(11)]}, "media_urls"),
        ({"media_urls": ["http://example.com/a.png"]}, "media_urls[0]"),
        ({"media_urls": ["https://example.com/a.png", "ftp://x/y"]}, "media_urls[1]"),
        ({"media_urls": ["https://"]}, "media_urls[0]"),
        ({"media_urls": "https://example.com/a.png"}, "media_urls"),
        ({"publish_to_channel_at": "tomorrow"}, "publish_to_channel_at"),
        ({"publish_to_channel_at": True}, "publish_to_channel_at"),
        ({"publish_to_channel_at": -1}, "publish_to_channel_at"),
        ({"publish_to_channel_at": MAX_PUBLISH_AT}, "publish_to_channel_at"),
        ({"publish_to_channel_at": 1_700_000_000_000}, "publish_to_channel_at"),  # milliseconds
        ({"publish_to_channel_at": float("nan")}, "publish_to_channel_at"),
        ({"publish_to_channel_at": 10**20}, "publish_to_channel_at"),
    ],
)
def test_bad_messages_name_the_field(
    session: Session, settings: Settings, fields: dict[str, Any], param: str
) -> None:
    org, thread, _ = _thread(session, settings, contacts=1)
    args = {"text": "hello"} | fields
    with pytest.raises(ValidationError) as info:
        post_message(session, settings, factories.org_actor(org), thread.id, Draft.of(**args))
    assert info.value.param == param
    session.rollback()
    assert session.execute(select(Message)).first() is None


def test_ten_media_urls_and_the_longest_text_are_fine(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    post_message(
        session,
        settings,
        factories.org_actor(org),
        thread.id,
        Draft.of(
            "x" * MAX_TEXT_LENGTH, media_urls=[f"https://example.com/{i}.png" for i in range(10)]
        ),
    )


@pytest.mark.parametrize("ago", [5, 300, 86400 * 400])
def test_a_time_not_in_the_future_publishes_at_once(
    session: Session, settings: Settings, ago: int
) -> None:
    org, thread, _ = _thread(session, settings, contacts=1)
    now = int(utcnow().timestamp())
    posted = post_message(
        session,
        settings,
        factories.org_actor(org),
        thread.id,
        Draft.of("hi", publish_to_channel_at=now - ago),
    )
    assert posted.published is not None and posted.message.published_at is not None


def test_a_time_years_ahead_waits(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings, contacts=1)
    posted = post_message(
        session,
        settings,
        factories.org_actor(org),
        thread.id,
        Draft.of("hi", publish_to_channel_at=MAX_PUBLISH_AT - 1),
    )
    assert posted.published is None and posted.message.published_at is None


def test_blank_text_beside_media_can_be_edited_in(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    actor = factories.org_actor(org)
    message = post_message(
        session,
        settings,
        actor,
        thread.id,
        Draft.of("look", media_urls=["https://example.com/a.jpg"]),
    ).message
    assert edit_message(session, actor, message.id, {"text": ""}).text == ""
    with pytest.raises(Conflict):
        edit_message(session, actor, message.id, {"media_urls": []})


def test_posting_to_a_missing_or_foreign_thread_is_not_found(
    session: Session, settings: Settings
) -> None:
    org, thread, _ = _thread(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    with pytest.raises(NotFound):
        post_message(session, settings, factories.org_actor(other), thread.id, Draft.of("hi"))
    with pytest.raises(NotFound):
        post_message(session, settings, factories.org_actor(org), "thrd_missing", Draft.of("hi"))


def test_only_the_author_edits(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    uma = factories.user(session, settings, org, "Uma")
    ulf = factories.user(session, settings, org, "Ulf")
    as_uma = Actor.user(org.id, uma.id)
    message = post_message(session, settings, as_uma, thread.id, Draft.of("frist")).message
    session.commit()
    assert message.edited_at is None
    for someone_else in [Actor.user(org.id, ulf.id), factories.org_actor(org)]:
        with pytest.raises(Forbidden):
            edit_message(session, someone_else, message.id, {"text": "mine now"})
    before = thread.updated_at
    edit_message(session, as_uma, message.id, {"text": "first"})
    session.commit()
    assert message.text == "first" and message.edited_at is not None
    assert thread.updated_at > before
    with pytest.raises(Conflict) as conflict:  # blank text needs media beside it
        edit_message(session, as_uma, message.id, {"text": ""})
    assert conflict.value.param == "text"
    with pytest.raises(ValidationError) as info:
        edit_message(session, as_uma, message.id, {"text": "x" * (MAX_TEXT_LENGTH + 1)})
    assert info.value.param == "text"
    other, _ = factories.organization(session, settings, "Other")
    with pytest.raises(NotFound):
        edit_message(session, factories.org_actor(other), message.id, {"text": "x"})


def test_meta_and_canceled_messages_cannot_be_edited(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    actor = factories.org_actor(org)
    add_subscriber(session, settings, actor, thread.id, factories.user(session, settings, org).id)
    meta = session.execute(select(Message)).scalar_one()
    with pytest.raises(Conflict):
        edit_message(session, actor, meta.id, {"text": "x"})
    later = int((utcnow() + timedelta(hours=1)).timestamp())
    pending = post_message(
        session, settings, actor, thread.id, Draft.of("later", publish_to_channel_at=later)
    ).message
    cancel_message(session, actor, pending.id)
    with pytest.raises(Conflict):
        edit_message(session, actor, pending.id, {"text": "x"})


def test_editing_a_pending_message_changes_what_is_sent(
    session: Session, settings: Settings
) -> None:
    org, thread, _ = _thread(session, settings, contacts=1)
    actor = factories.org_actor(org)
    later = utcnow() + timedelta(hours=1)
    message = post_message(
        session,
        settings,
        actor,
        thread.id,
        Draft.of("old", publish_to_channel_at=int(later.timestamp())),
    ).message
    edit_message(session, actor, message.id, {"text": "new"})
    session.commit()
    publish_due_messages(session, settings, now=later + timedelta(seconds=1))
    session.commit()
    bodies = list(session.execute(select(Delivery.body)).scalars())
    assert bodies == ["new"]


def test_cancel_a_pending_message_but_not_a_published_one(
    session: Session, settings: Settings
) -> None:
    org, thread, _ = _thread(session, settings, contacts=1)
    uma = factories.user(session, settings, org, "Uma")
    ulf = factories.user(session, settings, org, "Ulf")
    as_uma = Actor.user(org.id, uma.id)
    later = int((utcnow() + timedelta(hours=1)).timestamp())
    pending = post_message(
        session, settings, as_uma, thread.id, Draft.of("later", publish_to_channel_at=later)
    ).message
    published = post_message(session, settings, as_uma, thread.id, Draft.of("now")).message
    session.commit()
    with pytest.raises(Forbidden):
        cancel_message(session, Actor.user(org.id, ulf.id), pending.id)
    canceled = cancel_message(session, as_uma, pending.id)
    session.commit()
    assert canceled.canceled_at is not None and canceled.published_at is None
    # Canceling twice is harmless; the organization may cancel its users' messages too.
    cancel_message(session, factories.org_actor(org), pending.id)
    with pytest.raises(Conflict):
        cancel_message(session, as_uma, published.id)
    session.commit()
    view = load_thread_view(session, org.id, thread.id)
    assert [m.id for m in view.recent_messages] == [published.id]
    # A canceled message is never published, however late the sweeper comes.
    assert publish_due_messages(session, settings, now=utcnow() + timedelta(days=2)) == []


def test_page_through_120_messages_with_a_cursor(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    actor = factories.org_actor(org)
    ids = [
        post_message(session, settings, actor, thread.id, Draft.of(f"m{i}")).message.id
        for i in range(120)
    ]
    session.commit()
    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    before = None
    while True:
        page, has_more = page_messages(
            session, org.id, thread_id=thread.id, limit=50, before=before
        )
        seen.extend(m.id for m in page)
        pages.append((len(page), has_more))
        if not has_more:
            break
        before = page[-1].id
    assert pages == [(50, True), (50, True), (20, False)]
    assert seen == list(reversed(ids))  # newest first, each once
    other, _ = factories.organization(session, settings, "Other")
    assert page_messages(session, other.id, thread_id=thread.id) == ([], False)


def test_page_limits_and_cursor_are_checked(session: Session, settings: Settings) -> None:
    org, thread, _ = _thread(session, settings)
    actor = factories.org_actor(org)
    for i in range(3):
        post_message(session, settings, actor, thread.id, Draft.of(f"m{i}"))
    session.commit()
    assert len(page_messages(session, org.id, thread_id=thread.id, limit=1)[0]) == 1
    assert len(page_messages(session, org.id, thread_id=thread.id, limit=150)[0]) == 3
    for bad in [0, 151, -1, "5", 2.5, None]:
        with pytest.raises(ValidationError) as info:
            page_messages(session, org.id, thread_id=thread.id, limit=bad)  # type: ignore[arg-type]
        assert info.value.param == "limit"
    with pytest.raises(NotFound) as missing:
        page_messages(session, org.id, thread_id=thread.id, before="msg_nope")
    assert missing.value.param == "before"
    elsewhere, _ = create_thread(session, settings, actor, "order-2")
    stranger = post_message(session, settings, actor, elsewhere.id, Draft.of("elsewhere")).message
    with pytest.raises(NotFound) as missing:
        page_messages(session, org.id, thread_id=thread.id, before=stranger.id)
    assert missing.value.param == "before"
