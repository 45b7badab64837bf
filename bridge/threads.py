"""Threads: one per resource, their subscribers, views and unread state (DESIGN 5.2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.db import get_owned, insert_or_get, utcnow
from bridge.errors import Conflict, NotFound, ValidationError
from bridge.events import record_message
from bridge.ids import RESOURCE_ID, thread_id_for
from bridge.models import Message, MessageType, SubscriberType, Thread, ThreadSubscriber
from bridge.pages import RECENT_LIMIT
from bridge.settings import Settings
from bridge.subscribers import Profile, load_profiles, resolve_subscriber

MAX_LABEL = 200
MAX_LOCATION = 128  # the width of threads.location_id


def in_thread(thread: Thread) -> tuple[Any, Any]:
    """The filter on messages that picks this thread's: its organization's and its id's."""
    return Message.organization_id == thread.organization_id, Message.thread_id == thread.id


def validate_resource_id(resource_id: object) -> str:
    """A resource id is 1 to 128 letters, digits and `_ - . :`."""
    if not isinstance(resource_id, str) or not RESOURCE_ID.match(resource_id):
        raise ValidationError(
            "resource_id must be 1 to 128 characters of letters, digits and _ - . :", "resource_id"
        )
    return resource_id


def _label(value: object, param: str, limit: int = MAX_LABEL) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"{param} must be a string of at most {limit} characters", param)
    return value


def get_thread(session: Session, organization_id: str, thread_id: str) -> Thread:
    """The organization's thread, or NotFound (also for another organization's)."""
    return get_owned(session, Thread, organization_id, thread_id)


def create_thread(
    session: Session,
    settings: Settings,
    actor: Actor,
    resource_id: str,
    name: str | None = None,
    location_id: str | None = None,
    subscribers: Sequence[str | Mapping[str, Any]] = (),
) -> tuple[Thread, bool]:
    """The thread about `resource_id`, created if new; returns it and whether it was created.

    Creating is idempotent. Another organization's thread about the same resource id is another
    thread: it is neither seen nor in the way (DESIGN 5.2).
    """
    resource_id = validate_resource_id(resource_id)
    name = _label(name, "name")
    location_id = _label(location_id, "location_id", MAX_LOCATION)
    if not isinstance(subscribers, list | tuple):
        raise ValidationError("subscribers must be a list", "subscribers")
    key = (actor.organization_id, thread_id_for(resource_id))
    existing = session.get(Thread, key)
    if existing is not None:
        return existing, False
    resolved = [
        resolve_subscriber(session, settings, actor.organization_id, spec, f"subscribers[{i}]")
        for i, spec in enumerate(subscribers)
    ]
    thread = Thread(
        id=thread_id_for(resource_id),
        resource_id=resource_id,
        organization_id=actor.organization_id,
        name=name,
        location_id=location_id,
    )
    thread, created = insert_or_get(session, thread, lambda: session.get(Thread, key))
    if not created:
        return thread, False
    _add_first_subscribers(session, thread, actor, resolved)
    session.flush()
    return thread, True


def _add_first_subscribers(
    session: Session, thread: Thread, actor: Actor, resolved: Sequence[tuple[str, str]]
) -> None:
    """A new thread's subscribers: the organization, the acting user, those named; once each."""
    members: list[tuple[str, str]] = [(actor.organization_id, SubscriberType.API_KEY)]
    if actor.type == SubscriberType.USER:
        members.append((actor.subscriber_id, actor.type))
    members.extend(resolved)
    seen: set[str] = set()
    for position, (sid, kind) in enumerate(members):
        if sid in seen:
            continue
        seen.add(sid)
        session.add(
            ThreadSubscriber(
                organization_id=thread.organization_id,
                thread_id=thread.id,
                subscriber_id=sid,
                type=kind,
                position=position,
                added_at=thread.created_at,
            )
        )


def update_thread(
    session: Session,
    actor: Actor,
    thread_id: str,
    fields: Mapping[str, Any],
) -> Thread:
    """Change a thread's `name` or `location_id` (the thread follows its resource)."""
    thread = get_thread(session, actor.organization_id, thread_id)
    if "name" in fields:
        thread.name = _label(fields["name"], "name")
    if "location_id" in fields:
        thread.location_id = _label(fields["location_id"], "location_id", MAX_LOCATION)
    thread.updated_at = utcnow()
    return thread


def _of(thread: Thread) -> Any:
    """The filter on thread subscribers that picks this thread's (its organization's and id's)."""
    return (ThreadSubscriber.organization_id == thread.organization_id) & (
        ThreadSubscriber.thread_id == thread.id
    )


# A thread subscriber as a read shows it (a `SubscriberState`).
SubscriberRow = Row[str, SubscriberType, bool, datetime | None]


def thread_subscribers(session: Session, thread: Thread) -> list[SubscriberRow]:
    """Every subscriber of the thread, active and archived, in the order they joined (columns)."""
    return list(
        session.execute(
            select(
                ThreadSubscriber.subscriber_id,
                ThreadSubscriber.type,
                ThreadSubscriber.is_archived,
                ThreadSubscriber.viewed_at,
            )
            .where(_of(thread))
            .order_by(ThreadSubscriber.position, ThreadSubscriber.added_at)
        )
    )


def active_contact_ids(session: Session, thread: Thread) -> list[str]:
    """The ids of the thread's active contact subscribers."""
    return list(
        session.execute(
            select(ThreadSubscriber.subscriber_id).where(
                _of(thread),
                ThreadSubscriber.type == SubscriberType.CONTACT,
                ThreadSubscriber.is_archived.is_(False),
            )
        ).scalars()
    )


def ensure_subscribed(session: Session, thread: Thread, actor: Actor) -> ThreadSubscriber:
    """The actor's subscriber row on the thread, added quietly when a user first acts on it."""
    key = (thread.organization_id, thread.id, actor.subscriber_id)
    row = session.get(ThreadSubscriber, key)
    if row is not None:
        return row
    new = ThreadSubscriber(
        organization_id=thread.organization_id,
        thread_id=thread.id,
        subscriber_id=actor.subscriber_id,
        type=actor.type,
        position=_next_position(session, thread),
        added_at=utcnow(),
    )
    # The same actor's concurrent request may subscribe them first: that row is theirs too.
    subscribed, _ = insert_or_get(session, new, lambda: session.get(ThreadSubscriber, key))
    return subscribed


def _next_position(session: Session, thread: Thread) -> int:
    top = session.execute(
        select(func.max(ThreadSubscriber.position)).where(_of(thread))
    ).scalar_one()
    return 0 if top is None else top + 1


def _meta(session: Session, thread: Thread, actor: Actor, event: str, text: str) -> Message:
    now = utcnow()
    message = Message.new(actor, text, now, thread_id=thread.id, type=MessageType.META, event=event)
    session.add(message)
    thread.updated_at = now
    record_message(session, "message.created", message)
    session.flush()
    return message


def add_subscriber(
    session: Session,
    settings: Settings,
    actor: Actor,
    thread_id: str,
    spec: str | Mapping[str, Any],
) -> ThreadSubscriber:
    """Subscribe someone to the thread (or bring back an archived one), with a `meta` message."""
    thread = get_thread(session, actor.organization_id, thread_id)
    sid, kind = resolve_subscriber(session, settings, actor.organization_id, spec, "subscriber")
    key = (thread.organization_id, thread.id, sid)
    row = session.get(ThreadSubscriber, key)
    if row is not None and not row.is_archived:
        return row
    if row is not None:
        row.is_archived = False
    else:
        new = ThreadSubscriber(
            organization_id=thread.organization_id,
            thread_id=thread.id,
            subscriber_id=sid,
            type=kind,
            position=_next_position(session, thread),
            added_at=utcnow(),
        )
        # A concurrent request may add them first and post the meta message: nothing to add.
        winner, added = insert_or_get(session, new, lambda: session.get(ThreadSubscriber, key))
        if not added:
            return winner
        row = new
    name = _display_name(session, sid)
    _meta(session, thread, actor, "subscriber.added", f"{name} was added")
    return row


def archive_subscriber(
    session: Session, actor: Actor, thread_id: str, subscriber_id: str
) -> ThreadSubscriber:
    """Remove a subscriber: they stay in `subscribers`, archived, and leave `subscriber_ids`."""
    thread = get_thread(session, actor.organization_id, thread_id)
    row = session.get(ThreadSubscriber, (thread.organization_id, thread.id, subscriber_id))
    if row is None:
        raise NotFound("no such subscriber on this thread", "subscriber_id")
    if row.subscriber_id == thread.organization_id:
        raise Conflict("the organization cannot leave its own thread", "subscriber_id")
    if row.is_archived:
        return row
    row.is_archived = True
    name = _display_name(session, subscriber_id)
    _meta(session, thread, actor, "subscriber.removed", f"{name} was removed")
    return row


def _display_name(session: Session, subscriber_id: str) -> str:
    profile = load_profiles(session, [subscriber_id]).get(subscriber_id)
    return (profile.name if profile and profile.name else None) or "A subscriber"


def mark_viewed(session: Session, actor: Actor, thread_id: str) -> Thread:
    """Record that the acting subscriber has seen the thread up to now."""
    thread = get_thread(session, actor.organization_id, thread_id)
    row = ensure_subscribed(session, thread, actor)
    if row.type != SubscriberType.CONTACT:
        row.viewed_at = utcnow()
    return thread


# What a thread read shows of a message: the columns of its JSON (`bridge.serialize.Message`).
SHOWN_MESSAGE = (
    Message.id,
    Message.thread_id,
    Message.channel_id,
    Message.subscriber_id,
    Message.text,
    Message.type,
    Message.event,
    Message.media_urls,
    Message.reactions,
    Message.created_at,
    Message.edited_at,
    Message.publish_to_channel_at,
    Message.published_at,
)
MessageRow = Row[
    str,
    str | None,
    str | None,
    str,
    str | None,
    MessageType,
    str | None,
    list[Any],
    list[Any],
    datetime,
    datetime | None,
    datetime | None,
    datetime | None,
]


@dataclass
class ThreadView:
    """Everything a thread's JSON needs, loaded in a fixed number of queries.

    Subscribers and messages are rows of columns, not ORM objects: a read shows up to 150
    messages and every subscriber, and loading each as an object cost more than the queries.
    """

    thread: Thread
    subscribers: list[SubscriberRow]
    profiles: dict[str, Profile]
    recent_messages: list[MessageRow]
    has_more: bool
    unread_by: list[str]


def load_thread_view(session: Session, organization_id: str, thread_id: str) -> ThreadView:
    """Load a thread with its subscribers, its 150 most recent messages and who has unread ones."""
    thread = get_thread(session, organization_id, thread_id)
    rows = thread_subscribers(session, thread)
    profiles = load_profiles(session, [r.subscriber_id for r in rows])
    newest = list(
        session.execute(
            select(*SHOWN_MESSAGE)
            .where(*in_thread(thread), Message.canceled_at.is_(None))
            .order_by(Message.seq.desc())
            .limit(RECENT_LIMIT + 1)
        )
    )
    has_more = len(newest) > RECENT_LIMIT
    recent = list(reversed(newest[:RECENT_LIMIT]))
    latest_by_author = dict(
        session.execute(
            select(Message.subscriber_id, func.max(Message.created_at))
            .where(*in_thread(thread), Message.canceled_at.is_(None))
            .group_by(Message.subscriber_id)
        ).all()
    )
    return ThreadView(thread, rows, profiles, recent, has_more, unread_by(rows, latest_by_author))


class SubscriberState(Protocol):
    """What the unread rule reads of a subscriber: a `ThreadSubscriber` or a row of its columns."""

    @property
    def subscriber_id(self) -> str: ...
    @property
    def type(self) -> SubscriberType: ...
    @property
    def is_archived(self) -> bool: ...
    @property
    def viewed_at(self) -> datetime | None: ...


def unread_by(
    rows: Sequence[SubscriberState], latest_by_author: Mapping[str, datetime]
) -> list[str]:
    """Users and organizations with a message by someone else newer than their `viewed_at`."""
    # The newest message by someone else is the newest of all, unless they wrote it themselves:
    # then it is the second newest author's. Two lookups per subscriber, not one per author.
    newest = sorted(latest_by_author.items(), key=lambda item: item[1], reverse=True)[:2]
    result = []
    for row in rows:
        if row.is_archived or row.type == SubscriberType.CONTACT:
            continue
        others = [t for author, t in newest if author != row.subscriber_id]
        if others and (row.viewed_at is None or others[0] > row.viewed_at):
            result.append(row.subscriber_id)
    return result
