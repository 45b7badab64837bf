"""Webhook endpoints and the event log (DESIGN 5.8; nested in /v1 by `webhooks.api`).

Views stay thin, in the fixed order: read the request (done by `operation`, the actor by the
blueprint), call one domain function in a transaction, enqueue after commit, answer.
"""

from __future__ import annotations

from flask import Blueprint, g
from flask.typing import ResponseReturnValue

from bridge import event_sending, events, webhook_endpoints
from bridge.db import transaction
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
from webhooks.context import runtime
from webhooks.event_schemas import (
    AttemptQuery,
    EndpointQuery,
    EventQuery,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from webhooks.http import operation, respond
from workers.enqueue import enqueue_event_drain

bp = Blueprint("events", __name__)


@operation(
    bp,
    "POST",
    "/webhook_endpoints",
    summary="Register an endpoint for events; the answer holds its secret, shown this once",
    body=WebhookEndpointCreate,
    responses={201: WebhookEndpointWithSecret},
    errors=(409,),
)
def create_webhook_endpoint(body: WebhookEndpointCreate) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        endpoint = webhook_endpoints.create_endpoint(
            session,
            rt.settings,
            g.actor.organization_id,
            body.url,
            body.events,
            body.description,
            body.enabled,
        )
        answer = WebhookEndpointWithSecret.with_secret(endpoint, endpoint.secret)
    return respond(answer, 201)


@operation(
    bp,
    "GET",
    "/webhook_endpoints",
    summary="The organization's webhook endpoints, newest first",
    query=EndpointQuery,
    responses={200: WebhookEndpointList},
)
def list_webhook_endpoints(query: EndpointQuery) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        rows, has_more = webhook_endpoints.list_endpoints(
            session, g.actor.organization_id, query.limit, query.before
        )
        answer = WebhookEndpointList.of([WebhookEndpoint.of(e) for e in rows], has_more)
    return respond(answer)


@operation(
    bp,
    "GET",
    "/webhook_endpoints/<id:endpoint_id>",
    summary="A webhook endpoint (without its secret)",
    responses={200: WebhookEndpoint},
)
def get_webhook_endpoint(endpoint_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        endpoint = webhook_endpoints.get_endpoint(session, g.actor.organization_id, endpoint_id)
        answer = WebhookEndpoint.of(endpoint)
    return respond(answer)


@operation(
    bp,
    "PATCH",
    "/webhook_endpoints/<id:endpoint_id>",
    summary="Change an endpoint's url, events, description, or enable or disable it",
    body=WebhookEndpointUpdate,
    responses={200: WebhookEndpoint},
)
def update_webhook_endpoint(endpoint_id: str, body: WebhookEndpointUpdate) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        endpoint = webhook_endpoints.update_endpoint(
            session,
            rt.settings,
            g.actor.organization_id,
            endpoint_id,
            body.model_dump(exclude_unset=True),
        )
        answer = WebhookEndpoint.of(endpoint)
    return respond(answer)


@operation(
    bp,
    "DELETE",
    "/webhook_endpoints/<id:endpoint_id>",
    summary="Remove an endpoint; events it had yet to receive are dropped",
    responses={200: WebhookEndpointDeleted},
)
def delete_webhook_endpoint(endpoint_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        endpoint = webhook_endpoints.delete_endpoint(session, g.actor.organization_id, endpoint_id)
        answer = WebhookEndpointDeleted.of(endpoint)
    return respond(answer)


@operation(
    bp,
    "POST",
    "/webhook_endpoints/<id:endpoint_id>/rotate_secret",
    summary="A new signing secret, shown this once; the old one also signs for 24 hours",
    responses={200: WebhookEndpointWithSecret},
)
def rotate_webhook_secret(endpoint_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        endpoint, secret = webhook_endpoints.rotate_secret(
            session, g.actor.organization_id, endpoint_id
        )
        answer = WebhookEndpointWithSecret.with_secret(endpoint, secret)
    return respond(answer)


@operation(
    bp,
    "GET",
    "/webhook_endpoints/<id:endpoint_id>/attempts",
    summary="The endpoint's delivery attempts, newest first",
    query=AttemptQuery,
    responses={200: WebhookAttemptList},
)
def list_webhook_attempts(endpoint_id: str, query: AttemptQuery) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        rows, has_more = webhook_endpoints.list_attempts(
            session, g.actor.organization_id, endpoint_id, query.limit, query.before
        )
        answer = WebhookAttemptList.of([WebhookAttempt.of(a) for a in rows], has_more)
    return respond(answer)


@operation(
    bp,
    "GET",
    "/events",
    summary="The event log, newest first, of one type when `type` is given",
    query=EventQuery,
    responses={200: EventList},
)
def list_events(query: EventQuery) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        rows, has_more = events.list_events(
            session, g.actor.organization_id, query.type, query.limit, query.before
        )
        answer = EventList.of([Event.of(e) for e in rows], has_more)
    return respond(answer)


@operation(
    bp,
    "GET",
    "/events/<id:event_id>",
    summary="An event",
    responses={200: Event},
)
def get_event(event_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        answer = Event.of(events.get_event(session, g.actor.organization_id, event_id))
    return respond(answer)


@operation(
    bp,
    "POST",
    "/events/<id:event_id>/resend",
    summary="Send an event again to every enabled endpoint that subscribes to its type",
    responses={202: Event},
)
def resend_event(event_id: str) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        endpoints = event_sending.resend_event(session, g.actor.organization_id, event_id)
        answer = Event.of(events.get_event(session, g.actor.organization_id, event_id))
    for endpoint_id in endpoints:
        enqueue_event_drain(rt.redis, endpoint_id)
    return respond(answer, 202)
