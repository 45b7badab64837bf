"""Threads, their subscribers, and the messages posted to them (nested in the /v1 blueprint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from bridge import channels, messages, threads
from bridge.db import transaction
from bridge.messages import Posted
from bridge.serialize import thread_json
from webhooks.auth import authenticate
from webhooks.context import runtime
from webhooks.http import json_body, operation, query_args, respond, respond_list
from webhooks.present import message_data, messages_data
from webhooks.schemas import (
    Empty,
    Message,
    MessageCreate,
    MessageList,
    PageQuery,
    SubscriberAdd,
    SubscriberSpec,
    Thread,
    ThreadCreate,
    ThreadUpdate,
)
from workers.enqueue import enqueue_posted

bp = Blueprint("threads", __name__)


def _thread_data(session: Session, organization_id: str, thread_id: str) -> dict[str, Any]:
    return thread_json(threads.load_thread_view(session, organization_id, thread_id))


def _spec(spec: SubscriberSpec) -> str | dict[str, Any]:
    return spec if isinstance(spec, str) else spec.model_dump(exclude_none=True)


@operation(
    bp,
    "POST",
    "/threads",
    summary="Create the thread about a resource (201), or get it if it exists (200)",
    body=ThreadCreate,
    responses={201: Thread, 200: Thread},
    errors=(404, 409),
)
def create_thread() -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(ThreadCreate)
    rt = runtime()
    with transaction(rt.sessions) as session:
        thread, created = threads.create_thread(
            session,
            rt.settings,
            actor,
            body.resource_id,
            name=body.name,
            location_id=body.location_id,
            subscribers=[_spec(s) for s in body.subscribers],
        )
        data = _thread_data(session, actor.organization_id, thread.id)
    return respond(Thread, data, 201 if created else 200)


@operation(
    bp,
    "GET",
    "/threads/<id:thread_id>",
    summary="A thread with its 150 most recent messages and its subscribers",
    responses={200: Thread},
    errors=(404,),
)
def get_thread(thread_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        data = _thread_data(session, actor.organization_id, thread_id)
    return respond(Thread, data)


@operation(
    bp,
    "PATCH",
    "/threads/<id:thread_id>",
    summary="Rename a thread or move it to another location",
    body=ThreadUpdate,
    responses={200: Thread},
    errors=(404,),
)
def update_thread(thread_id: str) -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(ThreadUpdate)
    with transaction(runtime().sessions) as session:
        threads.update_thread(session, actor, thread_id, body.model_dump(exclude_unset=True))
        data = _thread_data(session, actor.organization_id, thread_id)
    return respond(Thread, data)


@operation(
    bp,
    "POST",
    "/threads/<id:thread_id>/subscribers",
    summary="Subscribe a user, a contact or the organization (an archived one comes back)",
    body=SubscriberAdd,
    responses={200: Thread},
    errors=(404,),
)
def add_subscriber(thread_id: str) -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(SubscriberAdd)
    rt = runtime()
    with transaction(rt.sessions) as session:
        threads.add_subscriber(session, rt.settings, actor, thread_id, _spec(body.subscriber))
        data = _thread_data(session, actor.organization_id, thread_id)
    return respond(Thread, data)


@operation(
    bp,
    "DELETE",
    "/threads/<id:thread_id>/subscribers/<id:subscriber_id>",
    summary="Remove a subscriber: archived, still listed in subscribers",
    responses={200: Thread},
    errors=(404, 409),
)
def archive_subscriber(thread_id: str, subscriber_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        threads.archive_subscriber(session, actor, thread_id, subscriber_id)
        data = _thread_data(session, actor.organization_id, thread_id)
    return respond(Thread, data)


@operation(
    bp,
    "POST",
    "/threads/<id:thread_id>/viewed",
    summary="Mark the thread viewed by the acting subscriber",
    body=Empty,
    body_required=False,
    responses={200: Thread},
    errors=(404,),
)
def mark_viewed(thread_id: str) -> ResponseReturnValue:
    actor = authenticate()
    json_body(Empty, required=False)
    with transaction(runtime().sessions) as session:
        threads.mark_viewed(session, actor, thread_id)
        data = _thread_data(session, actor.organization_id, thread_id)
    return respond(Thread, data)


@operation(
    bp,
    "GET",
    "/threads/<id:thread_id>/messages",
    summary="Page through a thread's messages, newest first",
    query=PageQuery,
    responses={200: MessageList},
    errors=(404,),
)
def list_messages(thread_id: str) -> ResponseReturnValue:
    return message_page(thread_id=thread_id)


@operation(
    bp,
    "POST",
    "/threads/<id:thread_id>/messages",
    summary="Post a message; it goes to the channel of the thread's contacts now or when due",
    body=MessageCreate,
    responses={201: Message},
    errors=(404,),
)
def post_message(thread_id: str) -> ResponseReturnValue:
    return post_and_enqueue(messages.post_message, thread_id)


def message_page(
    *, thread_id: str | None = None, channel_id: str | None = None
) -> ResponseReturnValue:
    """A page of the organization's thread's or channel's messages, newest first."""
    actor = authenticate()
    args = query_args(PageQuery)
    with transaction(runtime().sessions) as session:
        if thread_id is not None:
            thread_id = threads.get_thread(session, actor.organization_id, thread_id).id
        if channel_id is not None:
            channel_id = channels.get_channel(session, actor.organization_id, channel_id).id
        rows, has_more = messages.page_messages(
            session,
            actor.organization_id,
            thread_id=thread_id,
            channel_id=channel_id,
            limit=args.limit,
            before=args.before,
        )
        data = messages_data(session, rows)
    return respond_list(MessageList, data, has_more)


def post_and_enqueue(post: Callable[..., Posted], target_id: str) -> ResponseReturnValue:
    """Post a message to a thread or a channel, commit, then enqueue what it made; answer 201."""
    actor = authenticate()
    body = json_body(MessageCreate)
    rt = runtime()
    with transaction(rt.sessions) as session:
        posted = post(
            session,
            rt.settings,
            actor,
            target_id,
            body.text,
            body.type,
            body.media_urls,
            body.publish_to_channel_at,
        )
        data = message_data(session, posted.message)
    enqueue_posted(rt.redis, posted)  # after commit; never fails the request
    return respond(Message, data, 201)
