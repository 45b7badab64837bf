"""What a dispatcher reads inside the inbox: one conversation, failed deliveries, contacts, users.

Read-side queries for the console (DESIGN 7), each in a fixed number of SQL statements whatever the
number of messages: a channel is loaded by `channel_views.load_channel_view`, delivery states are
ranked as `deliveries.RANK` ranks them, and lists page by the inbox's keyset cursors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.channel_views import ChannelView, load_channel_view
from bridge.channels import get_channel, last_publisher_threads, subscriber_hash
from bridge.deliveries import RANK
from bridge.inbox import (
    FAILED_STATUSES,
    MAX_USERS,
    PAGE_SIZE,
    display_name,
    explain_error,
    keyset_page,
)
from bridge.models import (
    Channel,
    Contact,
    Delivery,
    SubscriberType,
    Thread,
    User,
)
from bridge.organizations import opted_out_hashes
from bridge.subscribers import load_profiles
from bridge.threads import active_contact_ids


@dataclass(frozen=True)
class RecipientState:
    """Where one message stands for one recipient (all its SMS parts together)."""

    subscriber_id: str
    name: str
    status: str
    error_code: int | None
    reason: str | None


@dataclass
class Conversation:
    """A channel as the console shows it: messages, delivery states, names, the reply target."""

    view: ChannelView
    names: dict[str, str]
    kinds: Mapping[str, str]
    deliveries: dict[str, list[RecipientState]] = field(default_factory=dict)
    thread_id: str | None = None  # the thread that last published (inbound SMS are stored there)
    reply_thread_id: str | None = None  # where a reply goes; None: straight to the channel

    def contact_names(self) -> list[str]:
        """The names of the channel's contacts, in the channel's order."""
        return [
            self.names.get(row.subscriber_id, "Unknown")
            for row in self.view.subscribers
            if row.type == SubscriberType.CONTACT
        ]


def load_conversation(session: Session, organization_id: str, channel_id: str) -> Conversation:
    """A channel with its messages' authors and delivery states; NotFound for another's channel.

    Replies go to the thread that last published to the channel while that thread's contacts are
    still exactly the channel's; otherwise straight to the channel.
    """
    view = load_channel_view(session, organization_id, channel_id)
    messages = view.recent_messages + view.pending_messages
    profiles = dict(view.profiles)
    missing = {m.subscriber_id for m in messages} - profiles.keys()
    if missing:
        profiles.update(load_profiles(session, missing))
    names = {sid: display_name(p) for sid, p in profiles.items()}
    kinds = {sid: p.type for sid, p in profiles.items()}
    states = delivery_states(session, [m.id for m in view.recent_messages], names)
    thread_id = last_publisher_threads(session, [view.channel.id]).get(view.channel.id)
    reply_to = _thread_for_replies(session, view.channel, thread_id)
    return Conversation(view, names, kinds, states, thread_id, reply_to)


def reply_thread(session: Session, organization_id: str, channel_id: str) -> tuple[str, str | None]:
    """Where a reply to the channel goes: (channel id, thread id or None for the channel itself)."""
    channel = get_channel(session, organization_id, channel_id)
    thread_id = last_publisher_threads(session, [channel.id]).get(channel.id)
    return channel.id, _thread_for_replies(session, channel, thread_id)


def _thread_for_replies(session: Session, channel: Channel, thread_id: str | None) -> str | None:
    # A thread whose contacts changed since it published would carry the reply to another channel.
    thread = session.get(Thread, (channel.organization_id, thread_id)) if thread_id else None
    if thread is None:
        return None
    contacts = active_contact_ids(session, thread)
    if subscriber_hash(channel.organization_id, contacts) != channel.subscriber_hash:
        return None
    return thread_id


def delivery_states(
    session: Session, message_ids: Sequence[str], names: dict[str, str]
) -> dict[str, list[RecipientState]]:
    """Each message's recipients and how far their SMS got; a part that failed fails them all."""
    if not message_ids:
        return {}
    parts: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
    for delivery in session.execute(
        select(Delivery)
        .where(Delivery.message_id.in_(message_ids))
        .order_by(Delivery.message_id, Delivery.subscriber_id, Delivery.part)
    ).scalars():
        parts[(delivery.message_id, delivery.subscriber_id)].append(delivery)
    states: dict[str, list[RecipientState]] = defaultdict(list)
    for (message_id, subscriber_id), rows in parts.items():
        failed = [d for d in rows if d.status in FAILED_STATUSES]
        # The least advanced part says where the message stands; a failed part decides at once.
        worst = failed[0] if failed else min(rows, key=lambda d: RANK.get(d.status, 0))
        reason = None
        if worst.error_code is not None or worst.error_message:
            reason = explain_error(worst.error_code, worst.error_message)
        states[message_id].append(
            RecipientState(
                subscriber_id,
                names.get(subscriber_id, "Unknown"),
                worst.status,
                worst.error_code,
                reason,
            )
        )
    return states


@dataclass(frozen=True)
class FailedDelivery:
    delivery_id: str
    channel_id: str
    message_id: str
    contact_name: str
    status: str
    error_code: int | None
    reason: str
    updated_at: datetime


def failed_deliveries(
    session: Session, organization_id: str, after: str | None = None, limit: int = PAGE_SIZE
) -> tuple[list[FailedDelivery], str | None]:
    """The organization's failed and undelivered SMS, latest first, with the reason in words."""
    query = (
        select(Delivery, Contact.name, Contact.phone)
        .outerjoin(Contact, Contact.id == Delivery.subscriber_id)
        .where(
            Delivery.status.in_(FAILED_STATUSES),
            Delivery.organization_id == organization_id,
        )
    )
    found, next_cursor = keyset_page(
        session, query, (Delivery.updated_at, Delivery.id), after, limit
    )
    rows = [
        FailedDelivery(
            d.id,
            d.channel_id,
            d.message_id,
            name or (f"…{phone[-4:]}" if phone else "Unknown"),
            d.status,
            d.error_code,
            explain_error(d.error_code, d.error_message),
            d.updated_at,
        )
        for d, name, phone in found
    ]
    return rows, next_cursor


@dataclass(frozen=True)
class ContactRow:
    contact_id: str
    name: str | None
    phone: str
    opted_out: bool
    created_at: datetime


def contacts_page(
    session: Session, organization_id: str, after: str | None = None, limit: int = PAGE_SIZE
) -> tuple[list[ContactRow], str | None]:
    """The organization's contacts, newest first, each with whether it has opted out of SMS."""
    query = select(Contact).where(Contact.organization_id == organization_id)
    found, next_cursor = keyset_page(session, query, (Contact.created_at, Contact.id), after, limit)
    page: list[Contact] = [contact for (contact,) in found]
    opted = opted_out_hashes(session, organization_id, [c.phone_hash for c in page])
    rows = [ContactRow(c.id, c.name, c.phone, c.phone_hash in opted, c.created_at) for c in page]
    return rows, next_cursor


def list_users(session: Session, organization_id: str, limit: int = MAX_USERS) -> list[User]:
    """The organization's users by name (the first `limit`)."""
    return list(
        session.execute(
            select(User)
            .where(User.organization_id == organization_id)
            .order_by(User.name, User.id)
            .limit(limit)
        ).scalars()
    )
