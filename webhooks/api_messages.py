"""Messages: the routes threads and channels share, and messages by id (nested in /v1)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, g
from flask.typing import ResponseReturnValue

from bridge import channels, deliveries, messages, threads
from bridge.db import transaction
from bridge.messages import Posted
from bridge.serialize import (
    Delivery,
    DeliveryList,
    Message,
    MessageList,
    load_message,
    load_messages,
)
from webhooks.context import runtime
from webhooks.http import operation, respond
from webhooks.schemas import ChannelMessagesQuery, MessageCreate, MessageUpdate, PageQuery
from workers.enqueue import enqueue_posted

bp = Blueprint("messages", __name__)


@operation(
    bp,
    "GET",
    "/threads/<id:thread_id>/messages",
    summary="Page through a thread's messages, newest first",
    query=PageQuery,
    responses={200: MessageList},
    errors=(404,),
)
def list_messages(thread_id: str, query: PageQuery) -> ResponseReturnValue:
    return _page(query, thread_id=thread_id)


@operation(
    bp,
    "POST",
    "/threads/<id:thread_id>/messages",
    summary="Post a message; it goes to the channel of the thread's contacts now or when due",
    body=MessageCreate,
    responses={201: Message},
    errors=(404,),
)
def post_message(thread_id: str, body: MessageCreate) -> ResponseReturnValue:
    return _post(messages.post_message, thread_id, body)


@operation(
    bp,
    "GET",
    "/channels/<id:channel_id>/messages",
    summary="Page through a channel's published (or, with pending=true, scheduled) messages, "
    "newest first",
    query=ChannelMessagesQuery,
    responses={200: MessageList},
    errors=(404,),
)
def list_channel_messages(channel_id: str, query: ChannelMessagesQuery) -> ResponseReturnValue:
    return _page(query, channel_id=channel_id, pending=query.pending)


@operation(
    bp,
    "POST",
    "/channels/<id:channel_id>/messages",
    summary="Post a message straight to a channel, now or at publish_to_channel_at",
    body=MessageCreate,
    responses={201: Message},
    errors=(404,),
)
def post_channel_message(channel_id: str, body: MessageCreate) -> ResponseReturnValue:
    return _post(messages.post_channel_message, channel_id, body)


@operation(
    bp,
    "PATCH",
    "/messages/<id:message_id>",
    summary="Edit a message's text or media (its author only)",
    body=MessageUpdate,
    responses={200: Message},
    errors=(403, 404, 409),
)
def edit_message(message_id: str, body: MessageUpdate) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        message = messages.edit_message(
            session, g.actor, message_id, body.model_dump(exclude_unset=True)
        )
        answer = load_message(session, message)
    return respond(answer)


@operation(
    bp,
    "DELETE",
    "/messages/<id:message_id>",
    summary="Cancel a message not yet published; a published one is a 409",
    responses={200: Message},
    errors=(403, 404, 409),
)
def cancel_message(message_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        answer = load_message(session, messages.cancel_message(session, g.actor, message_id))
    return respond(answer)


@operation(
    bp,
    "GET",
    "/messages/<id:message_id>/deliveries",
    summary="A message's per-recipient delivery records",
    responses={200: DeliveryList},
    errors=(404,),
)
def list_deliveries(message_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        rows = deliveries.list_deliveries(session, g.actor.organization_id, message_id)
    return respond(DeliveryList.of([Delivery.of(d) for d in rows]))


def _page(
    query: PageQuery,
    *,
    thread_id: str | None = None,
    channel_id: str | None = None,
    pending: bool = False,
) -> ResponseReturnValue:
    # A page of the organization's thread's or channel's messages, newest first.
    organization_id = g.actor.organization_id
    with transaction(runtime().sessions) as session:
        if thread_id is not None:
            thread_id = threads.get_thread(session, organization_id, thread_id).id
        if channel_id is not None:
            channel_id = channels.get_channel(session, organization_id, channel_id).id
        rows, has_more = messages.page_messages(
            session,
            organization_id,
            thread_id=thread_id,
            channel_id=channel_id,
            pending=pending,
            limit=query.limit,
            before=query.before,
        )
        answer = MessageList.of(load_messages(session, rows), has_more)
    return respond(answer)


def _post(post: Callable[..., Posted], target_id: str, body: MessageCreate) -> ResponseReturnValue:
    # Post to a thread or a channel, commit, then enqueue what it made; answer 201.
    rt = runtime()
    with transaction(rt.sessions) as session:
        posted = post(
            session,
            rt.settings,
            g.actor,
            target_id,
            body.text,
            body.type,
            body.media_urls,
            body.publish_to_channel_at,
        )
        answer = load_message(session, posted.message)
    enqueue_posted(rt.redis, posted)  # after commit; never fails the request
    return respond(answer, 201)
