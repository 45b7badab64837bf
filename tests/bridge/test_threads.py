"""Threads: creation, subscribers, updates, unread state and recent messages (DESIGN 5.2)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import serialize
from bridge.actors import Actor
from bridge.errors import Conflict, NotFound, ValidationError
from bridge.messages import Draft, post_message
from bridge.models import Message, MessageType, Organization
from bridge.settings import Settings
from bridge.threads import (
    add_subscriber,
    archive_subscriber,
    create_thread,
    get_thread,
    load_thread_view,
    mark_viewed,
    update_thread,
)
from tests import factories


def _json(session: Session, org: Organization, thread_id: str) -> dict[str, Any]:
    return factories.as_json(serialize.Thread.of(load_thread_view(session, org.id, thread_id)))


def test_create_is_idempotent_and_the_id_is_predictable(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    thread, created = create_thread(
        session, settings, actor, "order-1:a.b_c", name="Order 1", location_id="loc_1"
    )
    assert created
    assert thread.id == "thrd_order-1:a.b_c"
    session.commit()
    again, created = create_thread(session, settings, actor, "order-1:a.b_c", name="Other name")
    assert (again.id, created) == (thread.id, False)
    assert again.name == "Order 1"
    assert get_thread(session, org.id, thread.id) is again


def test_two_organizations_each_have_their_own_thread_about_one_resource(
    session: Session, settings: Settings
) -> None:
    # DESIGN 5.2: another organization's thread about the same resource id is neither visible nor
    # an obstacle (no 409, no hint that it exists).
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    mine, created = create_thread(
        session, settings, factories.org_actor(org), "order-1", name="Mine"
    )
    assert created
    session.commit()
    theirs, created = create_thread(
        session, settings, factories.org_actor(other), "order-1", name="Theirs"
    )
    assert created
    assert mine.id == theirs.id == "thrd_order-1"
    session.commit()
    post_message(session, settings, factories.org_actor(org), "thrd_order-1", Draft.of("for us"))
    post_message(
        session, settings, factories.org_actor(other), "thrd_order-1", Draft.of("for them")
    )
    session.commit()
    session.expunge_all()
    ours = _json(session, org, "thrd_order-1")
    others = _json(session, other, "thrd_order-1")
    assert (ours["name"], ours["organization_id"]) == ("Mine", org.id)
    assert (others["name"], others["organization_id"]) == ("Theirs", other.id)
    assert [m["text"] for m in ours["recent_messages"]] == ["for us"]
    assert [m["text"] for m in others["recent_messages"]] == ["for them"]
    assert ours["subscriber_ids"] == [org.id]
    assert others["subscriber_ids"] == [other.id]
    update_thread(session, factories.org_actor(other), "thrd_order-1", {"name": "Renamed"})
    session.commit()
    assert get_thread(session, org.id, "thrd_order-1").name == "Mine"


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 129, "with space", "a/b", "caf\u00e9", "\u0661\u0662", "line\n", "tab\t", None, 12],
)
def test_bad_resource_ids_name_the_field(session: Session, settings: Settings, bad: object) -> None:
    org, _ = factories.organization(session, settings)
    with pytest.raises(ValidationError) as info:
        create_thread(session, settings, factories.org_actor(org), bad)  # type: ignore[arg-type]
    assert info.value.param == "resource_id"


def test_a_resource_id_of_128_characters_is_fine(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    thread, created = create_thread(session, settings, factories.org_actor(org), "r" * 128)
    session.commit()
    assert created and thread.id == "thrd_" + "r" * 128


def test_subscribers_as_ids_and_as_contact_objects(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    uma = factories.user(session, settings, org)
    cora = factories.contact(session, settings, org)
    specs: list[Any] = [
        uma.id,
        cora.id,
        {"type": "contact", "phone": "(415) 555-0199", "name": "Jane"},
        {"type": "contact", "phone": "+14155550199"},  # the same person again: one subscriber
    ]
    thread, _ = create_thread(
        session, settings, factories.org_actor(org), "order-1", subscribers=specs
    )
    session.commit()
    body = _json(session, org, thread.id)
    ids = body["subscriber_ids"]
    assert ids[:3] == [org.id, uma.id, cora.id]
    assert len(ids) == 4 and ids[3].startswith("cnt_")
    jane = next(s for s in body["subscribers"] if s["id"] == ids[3])
    assert jane == {
        "id": ids[3],
        "type": "contact",
        "name": "Jane",
        "email": None,
        "phone": "+14155550199",
        "is_archived": False,
        "viewed_at": None,
    }
    assert {s["type"] for s in body["subscribers"]} == {"api_key", "user", "contact"}


def test_bad_subscribers_name_their_place(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    other, _ = factories.organization(session, settings, "Other")
    theirs = factories.contact(session, settings, other)
    actor = factories.org_actor(org)
    with pytest.raises(NotFound):
        create_thread(session, settings, actor, "o-1", subscribers=[theirs.id])
    with pytest.raises(ValidationError) as info:
        create_thread(session, settings, actor, "o-2", subscribers=["nobody"])
    assert info.value.param == "subscribers[0]"
    with pytest.raises(ValidationError) as info:
        create_thread(
            session, settings, actor, "o-3", subscribers=[{"type": "contact", "phone": "12"}]
        )
    assert info.value.param == "subscribers[0].phone"
    with pytest.raises(ValidationError) as info:
        create_thread(session, settings, actor, "o-4", subscribers="usr_x")
    assert info.value.param == "subscribers"


def test_add_and_archive_post_meta_messages(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org, "Cora")
    thread, _ = create_thread(session, settings, actor, "order-1")
    add_subscriber(session, settings, actor, thread.id, cora.id)
    add_subscriber(session, settings, actor, thread.id, cora.id)  # already there: nothing new
    archive_subscriber(session, actor, thread.id, cora.id)
    archive_subscriber(session, actor, thread.id, cora.id)  # already archived: nothing new
    session.commit()
    body = _json(session, org, thread.id)
    events = [(m["type"], m["event"], m["text"]) for m in body["recent_messages"]]
    assert events == [
        ("meta", "subscriber.added", "Cora was added"),
        ("meta", "subscriber.removed", "Cora was removed"),
    ]
    assert cora.id not in body["subscriber_ids"]
    archived = next(s for s in body["subscribers"] if s["id"] == cora.id)
    assert archived["is_archived"] is True and archived["name"] == "Cora"
    # Coming back un-archives, with another meta message.
    add_subscriber(session, settings, actor, thread.id, cora.id)
    session.commit()
    body = _json(session, org, thread.id)
    assert cora.id in body["subscriber_ids"]
    assert body["recent_messages"][-1]["event"] == "subscriber.added"
    assert len(body["subscribers"]) == 2


def test_archive_refuses_unknown_subscribers_and_the_organization(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    thread, _ = create_thread(session, settings, actor, "order-1")
    with pytest.raises(NotFound):
        archive_subscriber(session, actor, thread.id, "cnt_nobody")
    with pytest.raises(Conflict):
        archive_subscriber(session, actor, thread.id, org.id)


def test_meta_messages_never_go_to_a_channel(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(session, settings, actor, "order-1", subscribers=[cora.id])
    post_message(session, settings, actor, thread.id, Draft.of("hello"))
    newcomer = factories.contact(session, settings, org)
    add_subscriber(session, settings, actor, thread.id, newcomer.id)
    session.commit()
    metas = list(
        session.execute(select(Message).where(Message.type == MessageType.META.value)).scalars()
    )
    assert len(metas) == 1
    assert metas[0].channel_id is None and metas[0].published_at is None


def test_updated_at_moves_on_location_name_subscribers_and_messages(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    thread, _ = create_thread(session, settings, actor, "order-1", location_id="loc_1")
    session.commit()
    steps = [
        lambda: update_thread(session, actor, thread.id, {"location_id": "loc_2"}),
        lambda: update_thread(session, actor, thread.id, {"name": "Renamed"}),
        lambda: add_subscriber(
            session, settings, actor, thread.id, factories.user(session, settings, org).id
        ),
        lambda: post_message(session, settings, actor, thread.id, Draft.of("hi")),
    ]
    for step in steps:
        before = thread.updated_at
        step()
        session.commit()
        assert thread.updated_at > before
    assert (thread.location_id, thread.name) == ("loc_2", "Renamed")
    with pytest.raises(ValidationError) as info:
        update_thread(session, actor, thread.id, {"location_id": 5})
    assert info.value.param == "location_id"


def test_unread_by_follows_messages_and_views(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    as_org = factories.org_actor(org)
    uma = factories.user(session, settings, org, "Uma")
    ulf = factories.user(session, settings, org, "Ulf")
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(
        session, settings, as_org, "order-1", subscribers=[uma.id, ulf.id, cora.id]
    )
    session.commit()

    def unread() -> list[str]:
        session.commit()
        return sorted(_json(session, org, thread.id)["unread_by"])

    assert unread() == []
    as_uma = Actor.user(org.id, uma.id)
    post_message(session, settings, as_uma, thread.id, Draft.of("from Uma"))
    assert unread() == sorted([org.id, ulf.id])  # never Uma herself, never the contact
    mark_viewed(session, as_org, thread.id)
    assert unread() == [ulf.id]
    mark_viewed(session, Actor.user(org.id, ulf.id), thread.id)
    assert unread() == []
    post_message(session, settings, as_org, thread.id, Draft.of("from the organization"))
    assert unread() == sorted([uma.id, ulf.id])
    archive_subscriber(session, as_org, thread.id, ulf.id)
    assert unread() == [uma.id]
    mark_viewed(session, as_uma, thread.id)
    assert unread() == []
    body = _json(session, org, thread.id)
    viewed = {s["id"]: s["viewed_at"] for s in body["subscribers"]}
    assert isinstance(viewed[uma.id], int) and viewed[cora.id] is None


def test_a_contact_viewing_keeps_viewed_at_null(session: Session, settings: Settings) -> None:
    org, _ = factories.organization(session, settings)
    cora = factories.contact(session, settings, org)
    thread, _ = create_thread(
        session, settings, factories.org_actor(org), "order-1", subscribers=[cora.id]
    )
    mark_viewed(session, Actor.contact(org.id, cora.id), thread.id)
    session.commit()
    body = _json(session, org, thread.id)
    assert next(s for s in body["subscribers"] if s["id"] == cora.id)["viewed_at"] is None


def test_recent_messages_keep_the_newest_150_oldest_first(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    thread, _ = create_thread(session, settings, actor, "order-1")
    for i in range(149):
        post_message(session, settings, actor, thread.id, Draft.of(f"m{i}"))
    session.commit()
    for count, has_more in [(149, False), (150, False), (151, True)]:
        if count > 149:
            post_message(session, settings, actor, thread.id, Draft.of(f"m{count - 1}"))
            session.commit()
        body = _json(session, org, thread.id)
        texts = [m["text"] for m in body["recent_messages"]]
        assert len(texts) == min(count, 150)
        assert body["has_more"] is has_more
        assert texts[-1] == f"m{count - 1}"
        assert texts[0] == f"m{count - len(texts)}"
