"""Turning loaded domain objects into response data with `bridge.serialize`.

A message's JSON names its thread (or its channel, for a channel-only message); these helpers look
those names up for a whole page at once, in at most two queries whatever the page's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.models import Channel, Contact, Message, Thread
from bridge.organizations import is_opted_out
from bridge.serialize import contact_json, message_json


def messages_data(session: Session, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The JSON of these messages, each named after its thread or else its channel."""
    thread_ids = {m.thread_id for m in messages if m.thread_id}
    channel_ids = {m.channel_id for m in messages if not m.thread_id and m.channel_id}
    threads: dict[str, tuple[str | None, str]] = {}
    if thread_ids:
        rows = session.execute(
            select(Thread.id, Thread.name, Thread.resource_id).where(Thread.id.in_(thread_ids))
        )
        threads = {tid: (name, rid) for tid, name, rid in rows}
    channels: dict[str, str] = {}
    if channel_ids:
        rows2 = session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(channel_ids)))
        channels = {cid: name for cid, name in rows2}
    data = []
    for m in messages:
        if m.thread_id:
            name, resource_id = threads.get(m.thread_id, (None, None))
            data.append(message_json(m, name, resource_id))
        else:
            data.append(message_json(m, channels.get(m.channel_id or ""), None))
    return data


def message_data(session: Session, message: Message) -> dict[str, Any]:
    """The JSON of one message."""
    return messages_data(session, [message])[0]


def contact_data(session: Session, contact: Contact) -> dict[str, Any]:
    """The JSON of a contact, with whether it has opted out of the organization's SMS."""
    return contact_json(contact, is_opted_out(session, contact.organization_id, contact.phone_hash))
