"""Threads and their subscribers (nested in /v1; their messages are in `webhooks.api_messages`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g
from sqlalchemy.orm import Session

from bridge import threads
from bridge.serialize import Thread
from webhooks.auth import acting_org
from webhooks.context import runtime
from webhooks.http import operation
from webhooks.schemas import Empty, SubscriberAdd, SubscriberSpec, ThreadCreate, ThreadUpdate

bp = Blueprint("threads", __name__)

_THREAD = {200: Thread}


def _thread(session: Session, thread_id: str) -> Thread:
    return Thread.of(threads.load_thread_view(session, acting_org(), thread_id))


def _spec(spec: SubscriberSpec) -> str | dict[str, Any]:
    return spec if isinstance(spec, str) else spec.model_dump(exclude_none=True)


@operation(
    bp, "POST /threads", body=ThreadCreate, responses={201: Thread, 200: Thread}, errors=(404, 409)
)
def create_thread(session: Session, body: ThreadCreate) -> tuple[Thread, int]:
    """Create the thread about a resource (201), or get it if it exists (200)."""
    thread, created = threads.create_thread(
        session,
        runtime().settings,
        g.actor,
        body.resource_id,
        name=body.name,
        location_id=body.location_id,
        subscribers=[_spec(s) for s in body.subscribers],
    )
    return _thread(session, thread.id), 201 if created else 200


@operation(bp, "GET /threads/<id:thread_id>", responses=_THREAD, errors=(404,))
def get_thread(session: Session, thread_id: str) -> Thread:
    """A thread with its 150 most recent messages and its subscribers."""
    return _thread(session, thread_id)


@operation(bp, "PATCH /threads/<id:thread_id>", body=ThreadUpdate, responses=_THREAD, errors=(404,))
def update_thread(session: Session, thread_id: str, body: ThreadUpdate) -> Thread:
    """Rename a thread or move it to another location."""
    threads.update_thread(session, g.actor, thread_id, body.model_dump(exclude_unset=True))
    return _thread(session, thread_id)


@operation(
    bp,
    "POST /threads/<id:thread_id>/subscribers",
    body=SubscriberAdd,
    responses=_THREAD,
    errors=(404,),
)
def add_subscriber(session: Session, thread_id: str, body: SubscriberAdd) -> Thread:
    """Subscribe a user, a contact or the organization (an archived one comes back)."""
    threads.add_subscriber(session, runtime().settings, g.actor, thread_id, _spec(body.subscriber))
    return _thread(session, thread_id)


@operation(
    bp,
    "DELETE /threads/<id:thread_id>/subscribers/<id:subscriber_id>",
    responses=_THREAD,
    errors=(404, 409),
)
def archive_subscriber(session: Session, thread_id: str, subscriber_id: str) -> Thread:
    """Remove a subscriber: archived, still listed in subscribers."""
    threads.archive_subscriber(session, g.actor, thread_id, subscriber_id)
    return _thread(session, thread_id)


@operation(
    bp,
    "POST /threads/<id:thread_id>/viewed",
    body=Empty,
    body_required=False,
    responses=_THREAD,
    errors=(404,),
)
def mark_viewed(session: Session, thread_id: str, body: Empty) -> Thread:
    """Mark the thread viewed by the acting subscriber."""
    threads.mark_viewed(session, g.actor, thread_id)
    return _thread(session, thread_id)
