"""What a dispatcher reads first: the inbox of channels, searched and paged (DESIGN 7).

Read-side queries for the console (DESIGN 7), each in a fixed number of SQL statements whatever the
number of channels or messages, built on the domain's own functions wherever one exists: a channel
is loaded by `channels.load_channel_view`, unread state follows `threads.unread_by`, a searched
phone is normalized and hashed as inbound matching does (never a LIKE over phone numbers), and
Twilio's error codes are explained from the adapter's own tables. Lists page by keyset.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true
from sqlalchemy.orm import Session

# Every import from the domain's existing modules is here, in one place (see the module docstring).
from bridge.actors import Actor
from bridge.channels import last_publisher_threads
from bridge.errors import ValidationError
from bridge.models import (
    Channel,
    ChannelPhoneHash,
    ChannelSubscriber,
    Contact,
    DeliveryStatus,
    Message,
    SubscriberType,
    ThreadSubscriber,
)
from bridge.phones import classify_sender, normalize_phone, phone_hash
from bridge.settings import Settings
from bridge.subscribers import Profile, load_profiles
from bridge.threads import unread_by
from bridge.twilio_client import PERMANENT_CODES, TRANSIENT_CODES

PAGE_SIZE = 50
MAX_SEARCH = 100
MAX_USERS = 200

# Codes that come only in status callbacks (the carrier's word, after Twilio accepted the SMS), in
# words a dispatcher can act on. The adapter's tables cover the codes of a refused request.
CALLBACK_CODES: dict[int, str] = {
    30002: "Twilio suspended the account",
    30004: "The recipient's carrier or handset blocked the message",
    30005: "The recipient's number is unknown or no longer in service",
    30009: "Part of a multi-part message did not arrive",
    30010: "The message cost more than the price limit set for it",
    30034: "The sender number is not registered for A2P 10DLC messaging",
}

FAILED_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"\A(\d{1,20})~([A-Za-z0-9_]{1,40})\Z")


def explain_error(code: int | None, recorded: str | None = None) -> str:
    """Twilio's error code in words: the adapter's explanation, else the recorded reason."""
    if code is not None:
        known = PERMANENT_CODES.get(code) or TRANSIENT_CODES.get(code) or CALLBACK_CODES.get(code)
        if known:
            return known
    if recorded:
        return recorded
    return f"Twilio error {code}" if code is not None else "No reason was given"


def make_cursor(moment: datetime, row_id: str) -> str:
    """A keyset cursor: the row's time in microseconds and its id."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}~{row_id}"


def read_cursor(cursor: str | None, param: str = "after") -> tuple[datetime, str] | None:
    """The (time, id) a cursor names, or None; a cursor not made by `make_cursor` is invalid."""
    if cursor is None or cursor == "":
        return None
    match = _CURSOR.match(cursor)
    if match is None:
        raise ValidationError("the page cursor is not valid; start from the first page", param)
    try:
        moment = _EPOCH + timedelta(microseconds=int(match.group(1)))
    except OverflowError:
        raise ValidationError(
            "the page cursor is not valid; start from the first page", param
        ) from None
    return moment, match.group(2)


def keyset(
    column_time: Any, column_id: Any, cursor: tuple[datetime, str] | None
) -> ColumnElement[bool]:
    """Rows strictly after the cursor in (time desc, id desc) order."""
    if cursor is None:
        return true()
    moment, row_id = cursor
    return or_(column_time < moment, and_(column_time == moment, column_id < row_id))


def keyset_page(
    session: Session,
    query: Select[*tuple[Any, ...]],
    order: tuple[Any, Any],
    after: str | None,
    limit: int,
) -> tuple[list[Any], str | None]:
    """A page of `query` in (time desc, id desc) `order` after the cursor `after`.

    Returns the rows as `query` selects them, and the next page's cursor when there is more.
    """
    column_time, column_id = order
    found = session.execute(
        query.add_columns(column_time, column_id)
        .where(keyset(column_time, column_id, read_cursor(after)))
        .order_by(column_time.desc(), column_id.desc())
        .limit(limit + 1)
    ).all()
    rows = found[:limit]
    more = len(found) > limit
    return [row[:-2] for row in rows], make_cursor(*rows[-1][-2:]) if more else None


def display_name(profile: Profile | None) -> str:
    """A subscriber's name as the console shows it: a contact without one by the phone's end."""
    if profile is None:
        return "Unknown"
    if profile.name:
        return profile.name
    if profile.phone:
        return f"…{profile.phone[-4:]}"
    return "Unknown"


@dataclass(frozen=True)
class InboxRow:
    """One channel in the inbox."""

    channel_id: str
    name: str
    updated_at: datetime
    contact_names: list[str]
    last_text: str | None
    last_author: str | None
    last_at: datetime | None
    unread: bool


@dataclass(frozen=True)
class InboxPage:
    rows: list[InboxRow]
    next_cursor: str | None


def inbox_page(
    session: Session,
    settings: Settings,
    viewer: Actor,
    search: str | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> InboxPage:
    """The viewer's organization's channels by latest activity: contacts, last message, unread.

    `search` is a contact's name (any part, any case) or a phone number in any format the
    organization's region reads; a number is matched by its phone hash.
    """
    organization_id = viewer.organization_id
    query = select(Channel).where(Channel.organization_id == organization_id)
    search = (search or "").strip()
    if len(search) > MAX_SEARCH:
        raise ValidationError(f"search at most {MAX_SEARCH} characters", "q")
    if search:
        query = query.where(Channel.id.in_(_search_channel_ids(settings, organization_id, search)))
    found, next_cursor = keyset_page(session, query, (Channel.updated_at, Channel.id), after, limit)
    channels: list[Channel] = [channel for (channel,) in found]
    ids = [c.id for c in channels]
    if not ids:
        return InboxPage([], None)
    last = _last_messages(session, ids)
    contacts = _contact_names(session, ids)
    unread = _unread(session, viewer, ids, last)
    authors = load_profiles(session, {m.subscriber_id for m in last.values()})
    rows = [
        InboxRow(
            channel_id=c.id,
            name=c.name,
            updated_at=c.updated_at,
            contact_names=contacts.get(c.id, []),
            last_text=first_line(last[c.id].text) if c.id in last else None,
            last_author=display_name(authors.get(last[c.id].subscriber_id))
            if c.id in last
            else None,
            last_at=last[c.id].published_at if c.id in last else None,
            unread=c.id in unread,
        )
        for c in channels
    ]
    return InboxPage(rows, next_cursor)


def first_line(text: str | None, limit: int = 120) -> str:
    """The first non-empty line of a message, cut to `limit` characters."""
    for line in (text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _search_channel_ids(settings: Settings, organization_id: str, search: str) -> Select[Any]:
    if classify_sender(search, settings.default_region) == "e164":
        e164 = normalize_phone(search, settings.default_region)
        # The same hash inbound matching uses: the number itself is never compared or scanned.
        digest = phone_hash(organization_id, e164, settings.phone_hash_key)
        return select(ChannelPhoneHash.channel_id).where(
            ChannelPhoneHash.organization_id == organization_id,
            ChannelPhoneHash.phone_hash == digest,
        )
    return (
        select(ChannelSubscriber.channel_id)
        .join(Contact, Contact.id == ChannelSubscriber.subscriber_id)
        .where(
            Contact.organization_id == organization_id,
            Contact.name.icontains(search, autoescape=True),
        )
    )


def _last_messages(session: Session, channel_ids: Sequence[str]) -> dict[str, Message]:
    latest = (
        select(Message.channel_id, func.max(Message.publish_seq).label("seq"))
        .where(Message.channel_id.in_(channel_ids), Message.published_at.is_not(None))
        .group_by(Message.channel_id)
        .subquery()
    )
    rows = session.execute(
        select(Message).join(
            latest,
            and_(Message.channel_id == latest.c.channel_id, Message.publish_seq == latest.c.seq),
        )
    ).scalars()
    return {m.channel_id: m for m in rows if m.channel_id}


def _contact_names(session: Session, channel_ids: Sequence[str]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(
        select(ChannelSubscriber.channel_id, Contact.name, Contact.phone)
        .join(Contact, Contact.id == ChannelSubscriber.subscriber_id)
        .where(
            ChannelSubscriber.channel_id.in_(channel_ids),
            ChannelSubscriber.type == SubscriberType.CONTACT,
        )
        .order_by(ChannelSubscriber.channel_id, ChannelSubscriber.position)
    )
    for channel_id, name, phone in rows:
        names[channel_id].append(name or f"…{phone[-4:]}")
    return names


def _unread(
    session: Session, viewer: Actor, channel_ids: Sequence[str], last: dict[str, Message]
) -> set[str]:
    """Channels with something the viewer has not seen.

    A channel's conversation lives in the thread that last published to it: the viewer has unread
    messages there by `threads.unread_by`, the rule of the API's `unread_by`. A channel no thread
    has published to keeps no viewing record: it counts as unread while its last word is a
    contact's (waiting for an answer).
    """
    threads = last_publisher_threads(session, channel_ids)
    rows, latest = _viewing(session, viewer, set(threads.values()))
    unread = set()
    for channel_id in channel_ids:
        thread_id = threads.get(channel_id)
        if thread_id is None:
            message = last.get(channel_id)
            if message is not None and message.author_type == SubscriberType.CONTACT:
                unread.add(channel_id)
            continue
        # Not subscribed yet: a viewer who has never looked, as the domain's rule reads it.
        row = rows.get(thread_id) or ThreadSubscriber(
            organization_id=viewer.organization_id,
            thread_id=thread_id,
            subscriber_id=viewer.subscriber_id,
            type=viewer.type,
            is_archived=False,
        )
        if unread_by([row], latest[thread_id]):
            unread.add(channel_id)
    return unread


def _viewing(
    session: Session, viewer: Actor, thread_ids: set[str]
) -> tuple[dict[str, ThreadSubscriber], dict[str, dict[str, datetime]]]:
    # The viewer's subscription to each thread, and each thread's latest message by author.
    rows: dict[str, ThreadSubscriber] = {}
    latest: dict[str, dict[str, datetime]] = defaultdict(dict)
    if not thread_ids:
        return rows, latest
    rows = {
        r.thread_id: r
        for r in session.execute(
            select(ThreadSubscriber).where(
                ThreadSubscriber.organization_id == viewer.organization_id,
                ThreadSubscriber.thread_id.in_(thread_ids),
                ThreadSubscriber.subscriber_id == viewer.subscriber_id,
            )
        ).scalars()
    }
    for thread_id, author, at in session.execute(
        select(Message.thread_id, Message.subscriber_id, func.max(Message.created_at))
        .where(
            Message.organization_id == viewer.organization_id,
            Message.thread_id.in_(thread_ids),
            Message.canceled_at.is_(None),
        )
        .group_by(Message.thread_id, Message.subscriber_id)
    ):
        if thread_id is not None:
            latest[thread_id][author] = at
    return rows, latest
