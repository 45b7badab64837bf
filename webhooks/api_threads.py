"""Threads and their subscribers (nested in /v1; their messages are in `webhooks.api_messages`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from bridge import threads
from bridge.db import transaction
from bridge.serialize import Thread
from webhooks.context import runtime
from webhooks.http import operation, respond
from webhooks.schemas import Empty, SubscriberAdd, SubscriberSpec, ThreadCreate, ThreadUpdate

bp = Blueprint("threads", __name__)


def _thread(session: Session, thread_id: str) -> Thread:
    return Thread.of(threads.load_thread_view(session, g.actor.organization_id, thread_id))


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
def create_thread(body: ThreadCreate) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        thread, created = threads.create_thread(
            session,
            rt.settings,
            g.actor,
            body.resource_id,
            name=body.name,
            location_id=body.location_id,
            subscribers=[_spec(s) for s in body.subscribers],
        )
        answer = _thread(session, thread.id)
    return respond(answer, 201 if created else 200)


@operation(
    bp,
    "GET",
    "/threads/<id:thread_id>",
    summary="A thread with its 150 most recent messages and its subscribers",
    responses={200: Thread},
    errors=(404,),
)
def get_thread(thread_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        answer = _thread(session, thread_id)
    return respond(answer)


@operation(
    bp,
    "PATCH",
    "/threads/<id:thread_id>",
    summary="Rename a thread or move it to another location",
    body=ThreadUpdate,
    responses={200: Thread},
    errors=(404,),
)
def update_thread(thread_id: str, body: ThreadUpdate) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        threads.update_thread(session, g.actor, thread_id, body.model_dump(exclude_unset=True))
        answer = _thread(session, thread_id)
    return respond(answer)


@operation(
    bp,
    "POST",
    "/threads/<id:thread_id>/subscribers",
    summary="Subscribe a user, a contact or the organization (an archived one comes back)",
    body=SubscriberAdd,
    responses={200: Thread},
    errors=(404,),
)
def add_subscriber(thread_id: str, body: SubscriberAdd) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        threads.add_subscriber(session, rt.settings, g.actor, thread_id, _spec(body.subscriber))
        answer = _thread(session, thread_id)
    return respond(answer)


@operation(
    bp,
    "DELETE",
    "/threads/<id:thread_id>/subscribers/<id:subscriber_id>",
    summary="Remove a subscriber: archived, still listed in subscribers",
    responses={200: Thread},
    errors=(404, 409),
)
def archive_subscriber(thread_id: str, subscriber_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        threads.archive_subscriber(session, g.actor, thread_id, subscriber_id)
        answer = _thread(session, thread_id)
    return respond(answer)


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
def mark_viewed(thread_id: str, body: Empty) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        threads.mark_viewed(session, g.actor, thread_id)
        answer = _thread(session, thread_id)
    return respond(answer)
