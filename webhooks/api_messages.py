"""Messages: the routes threads and channels share, and messages by id (nested in /v1)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, g
from sqlalchemy.orm import Session

from bridge import channels, deliveries, messages, threads
from bridge.actors import Actor
from bridge.messages import Draft, Posted
from bridge.serialize import (
    Delivery,
    DeliveryList,
    Message,
    MessageList,
    load_message,
    load_messages,
)
from bridge.settings import Settings
from webhooks.auth import acting_org
from webhooks.context import runtime
from webhooks.http import after_commit, operation
from webhooks.schemas import ChannelMessagesQuery, MessageCreate, MessageUpdate, PageQuery
from workers.enqueue import enqueue_posted

bp = Blueprint("messages", __name__)

_NEW = {201: Message}
_LIST = {200: MessageList}
_THREAD = "/threads/<id:thread_id>"
_CHANNEL = "/channels/<id:channel_id>"


@operation(bp, f"GET {_THREAD}/messages", query=PageQuery, responses=_LIST, errors=(404,))
def list_messages(session: Session, thread_id: str, query: PageQuery) -> MessageList:
    """Page through a thread's messages, newest first."""
    thread_id = threads.get_thread(session, acting_org(), thread_id).id
    return _page(session, query, thread_id=thread_id)


@operation(bp, f"POST {_THREAD}/messages", body=MessageCreate, responses=_NEW, errors=(404,))
def post_message(session: Session, thread_id: str, body: MessageCreate) -> Message:
    """Post a message; it goes to the channel of the thread's contacts now or when due."""
    return _post(session, messages.post_message, thread_id, body)


@operation(
    bp, f"GET {_CHANNEL}/messages", query=ChannelMessagesQuery, responses=_LIST, errors=(404,)
)
def list_channel_messages(
    session: Session, channel_id: str, query: ChannelMessagesQuery
) -> MessageList:
    """Page through a channel's published (with pending=true, scheduled) messages, newest first."""
    channel_id = channels.get_channel(session, acting_org(), channel_id).id
    return _page(session, query, channel_id=channel_id, pending=query.pending)


@operation(bp, f"POST {_CHANNEL}/messages", body=MessageCreate, responses=_NEW, errors=(404,))
def post_channel_message(session: Session, channel_id: str, body: MessageCreate) -> Message:
    """Post a message straight to a channel, now or at publish_to_channel_at."""
    return _post(session, messages.post_channel_message, channel_id, body)


@operation(
    bp,
    "PATCH /messages/<id:message_id>",
    body=MessageUpdate,
    responses={200: Message},
    errors=(403, 404, 409),
)
def edit_message(session: Session, message_id: str, body: MessageUpdate) -> Message:
    """Edit a message's text or media (its author only)."""
    changes = body.model_dump(exclude_unset=True)
    return load_message(session, messages.edit_message(session, g.actor, message_id, changes))


@operation(bp, "DELETE /messages/<id:message_id>", responses={200: Message}, errors=(403, 404, 409))
def cancel_message(session: Session, message_id: str) -> Message:
    """Cancel a message not yet published; a published one is a 409."""
    return load_message(session, messages.cancel_message(session, g.actor, message_id))


@operation(
    bp, "GET /messages/<id:message_id>/deliveries", responses={200: DeliveryList}, errors=(404,)
)
def list_deliveries(session: Session, message_id: str) -> DeliveryList:
    """A message's per-recipient delivery records."""
    rows = deliveries.list_deliveries(session, acting_org(), message_id)
    return DeliveryList.of([Delivery.of(d) for d in rows])


def _page(
    session: Session,
    query: PageQuery,
    *,
    thread_id: str | None = None,
    channel_id: str | None = None,
    pending: bool = False,
) -> MessageList:
    # A page of the organization's thread's or channel's messages, newest first.
    rows, has_more = messages.page_messages(
        session,
        acting_org(),
        thread_id=thread_id,
        channel_id=channel_id,
        pending=pending,
        limit=query.limit,
        before=query.before,
    )
    return MessageList.of(load_messages(session, rows), has_more)


def _post(
    session: Session,
    post: Callable[[Session, Settings, Actor, str, Draft], Posted],
    target_id: str,
    body: MessageCreate,
) -> Message:
    # Post to a thread or a channel; what it made is enqueued once the transaction commits.
    rt = runtime()
    draft = Draft.of(body.text, body.type, body.media_urls, body.publish_to_channel_at)
    posted = post(session, rt.settings, g.actor, target_id, draft)
    after_commit(session, lambda: enqueue_posted(rt.redis, posted))
    return load_message(session, posted.message)
