"""Webhook endpoints and the event log (DESIGN 5.8; nested in /v1 by `webhooks.api`).

Views stay thin: `operation` reads the request and holds the transaction, the blueprint the actor;
a view calls one domain function and returns the answer, enqueueing with `after_commit`.
"""

from __future__ import annotations

import functools

from flask import Blueprint
from sqlalchemy.orm import Session

from bridge import event_dispatch, events, webhook_endpoints
from bridge.serialize import (
    Event,
    EventList,
    WebhookAttempt,
    WebhookAttemptList,
    WebhookEndpoint,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from webhooks.auth import acting_org
from webhooks.context import runtime
from webhooks.event_schemas import (
    AttemptQuery,
    EndpointQuery,
    EventQuery,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from webhooks.http import after_commit, operation
from workers.enqueue import enqueue_event_drain

bp = Blueprint("events", __name__)


_ENDPOINT = {200: WebhookEndpoint}
_ONE_ENDPOINT = "/webhook_endpoints/<id:endpoint_id>"


@operation(
    bp,
    "POST /webhook_endpoints",
    body=WebhookEndpointCreate,
    responses={201: WebhookEndpointWithSecret},
    errors=(409,),
)
def create_webhook_endpoint(
    session: Session, body: WebhookEndpointCreate
) -> WebhookEndpointWithSecret:
    """Register an endpoint for events; the answer holds its secret, shown this once."""
    endpoint = webhook_endpoints.create_endpoint(
        session,
        runtime().settings,
        acting_org(),
        body.url,
        body.events,
        body.description,
        body.enabled,
    )
    return WebhookEndpointWithSecret.with_secret(endpoint, endpoint.secret)


@operation(bp, "GET /webhook_endpoints", query=EndpointQuery, responses={200: WebhookEndpointList})
def list_webhook_endpoints(session: Session, query: EndpointQuery) -> WebhookEndpointList:
    """The organization's webhook endpoints, newest first."""
    rows, has_more = webhook_endpoints.list_endpoints(
        session, acting_org(), query.limit, query.before
    )
    return WebhookEndpointList.of([WebhookEndpoint.read(e) for e in rows], has_more)


@operation(bp, f"GET {_ONE_ENDPOINT}", responses=_ENDPOINT)
def get_webhook_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint:
    """A webhook endpoint (without its secret)."""
    return WebhookEndpoint.read(webhook_endpoints.get_endpoint(session, acting_org(), endpoint_id))


@operation(bp, f"PATCH {_ONE_ENDPOINT}", body=WebhookEndpointUpdate, responses=_ENDPOINT)
def update_webhook_endpoint(
    session: Session, endpoint_id: str, body: WebhookEndpointUpdate
) -> WebhookEndpoint:
    """Change an endpoint's url, events, description, or enable or disable it."""
    changes = body.model_dump(exclude_unset=True)
    endpoint = webhook_endpoints.update_endpoint(
        session, runtime().settings, acting_org(), endpoint_id, changes
    )
    return WebhookEndpoint.read(endpoint)


@operation(bp, f"DELETE {_ONE_ENDPOINT}", responses={200: WebhookEndpointDeleted})
def delete_webhook_endpoint(session: Session, endpoint_id: str) -> WebhookEndpointDeleted:
    """Remove an endpoint; events it had yet to receive are dropped."""
    endpoint = webhook_endpoints.delete_endpoint(session, acting_org(), endpoint_id)
    return WebhookEndpointDeleted.read(endpoint)


@operation(bp, f"POST {_ONE_ENDPOINT}/rotate_secret", responses={200: WebhookEndpointWithSecret})
def rotate_webhook_secret(session: Session, endpoint_id: str) -> WebhookEndpointWithSecret:
    """A new signing secret, shown this once; the old one also signs for 24 hours."""
    endpoint, secret = webhook_endpoints.rotate_secret(session, acting_org(), endpoint_id)
    return WebhookEndpointWithSecret.with_secret(endpoint, secret)


@operation(
    bp, f"GET {_ONE_ENDPOINT}/attempts", query=AttemptQuery, responses={200: WebhookAttemptList}
)
def list_webhook_attempts(
    session: Session, endpoint_id: str, query: AttemptQuery
) -> WebhookAttemptList:
    """The endpoint's delivery attempts, newest first."""
    rows, has_more = webhook_endpoints.list_attempts(
        session, acting_org(), endpoint_id, query.limit, query.before
    )
    return WebhookAttemptList.of([WebhookAttempt.read(a) for a in rows], has_more)


@operation(bp, "GET /events", query=EventQuery, responses={200: EventList})
def list_events(session: Session, query: EventQuery) -> EventList:
    """The event log, newest first, of one type when `type` is given."""
    rows, has_more = events.list_events(
        session, acting_org(), query.type, query.limit, query.before
    )
    return EventList.of([Event.read(e) for e in rows], has_more)


@operation(bp, "GET /events/<id:event_id>", responses={200: Event})
def get_event(session: Session, event_id: str) -> Event:
    """An event."""
    return Event.read(events.get_event(session, acting_org(), event_id))


@operation(bp, "POST /events/<id:event_id>/resend", responses={202: Event})
def resend_event(session: Session, event_id: str) -> Event:
    """Send an event again to every enabled endpoint that subscribes to its type."""
    redis = runtime().redis
    for endpoint_id in event_dispatch.resend_event(session, acting_org(), event_id):
        after_commit(session, functools.partial(enqueue_event_drain, redis, endpoint_id))
    return Event.read(events.get_event(session, acting_org(), event_id))
