"""Webhook endpoints and the event log (DESIGN 5.8; nested in /v1 by `webhooks.api`).

Views stay thin, in the fixed order: authenticate, read the request, call one domain function in a
transaction, enqueue after commit, answer.
"""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from bridge import event_sending, events, webhook_endpoints
from bridge.db import transaction
from webhooks.auth import authenticate
from webhooks.context import runtime
from webhooks.event_schemas import (
    Event,
    EventList,
    EventQuery,
    WebhookAttemptList,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from webhooks.http import json_body, operation, query_args, respond, respond_list
from webhooks.schemas import PageQuery
from workers.events import enqueue_drain

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
def create_webhook_endpoint() -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(WebhookEndpointCreate)
    rt = runtime()
    with transaction(rt.sessions) as session:
        endpoint = webhook_endpoints.create_endpoint(
            session,
            rt.settings,
            actor.organization_id,
            body.url,
            body.events,
            body.description,
            body.enabled,
        )
        data = webhook_endpoints.endpoint_json(endpoint, secret=endpoint.secret)
    return respond(WebhookEndpointWithSecret, data, 201)


@operation(
    bp,
    "GET",
    "/webhook_endpoints",
    summary="The organization's webhook endpoints, newest first",
    query=PageQuery,
    responses={200: WebhookEndpointList},
)
def list_webhook_endpoints() -> ResponseReturnValue:
    actor = authenticate()
    args = query_args(PageQuery)
    with transaction(runtime().sessions) as session:
        rows, has_more = webhook_endpoints.list_endpoints(
            session, actor.organization_id, args.limit, args.before
        )
        data = [webhook_endpoints.endpoint_json(e) for e in rows]
    return respond_list(WebhookEndpointList, data, has_more)


@operation(
    bp,
    "GET",
    "/webhook_endpoints/<id:endpoint_id>",
    summary="A webhook endpoint (without its secret)",
    responses={200: WebhookEndpoint},
)
def get_webhook_endpoint(endpoint_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        endpoint = webhook_endpoints.get_endpoint(session, actor.organization_id, endpoint_id)
        data = webhook_endpoints.endpoint_json(endpoint)
    return respond(WebhookEndpoint, data)


@operation(
    bp,
    "PATCH",
    "/webhook_endpoints/<id:endpoint_id>",
    summary="Change an endpoint's url, events, description, or enable or disable it",
    body=WebhookEndpointUpdate,
    responses={200: WebhookEndpoint},
)
def update_webhook_endpoint(endpoint_id: str) -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(WebhookEndpointUpdate)
    rt = runtime()
    with transaction(rt.sessions) as session:
        endpoint = webhook_endpoints.update_endpoint(
            session,
            rt.settings,
            actor.organization_id,
            endpoint_id,
            body.model_dump(exclude_unset=True),
        )
        data = webhook_endpoints.endpoint_json(endpoint)
    return respond(WebhookEndpoint, data)


@operation(
    bp,
    "DELETE",
    "/webhook_endpoints/<id:endpoint_id>",
    summary="Remove an endpoint; events it had yet to receive are dropped",
    responses={200: WebhookEndpointDeleted},
)
def delete_webhook_endpoint(endpoint_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        endpoint = webhook_endpoints.delete_endpoint(session, actor.organization_id, endpoint_id)
        data = {"object": "webhook_endpoint", "id": endpoint.id, "deleted": True}
    return respond(WebhookEndpointDeleted, data)


@operation(
    bp,
    "POST",
    "/webhook_endpoints/<id:endpoint_id>/rotate_secret",
    summary="A new signing secret, shown this once; the old one also signs for 24 hours",
    responses={200: WebhookEndpointWithSecret},
)
def rotate_webhook_secret(endpoint_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        endpoint, secret = webhook_endpoints.rotate_secret(
            session, actor.organization_id, endpoint_id
        )
        data = webhook_endpoints.endpoint_json(endpoint, secret=secret)
    return respond(WebhookEndpointWithSecret, data)


@operation(
    bp,
    "GET",
    "/webhook_endpoints/<id:endpoint_id>/attempts",
    summary="The endpoint's delivery attempts, newest first",
    query=PageQuery,
    responses={200: WebhookAttemptList},
)
def list_webhook_attempts(endpoint_id: str) -> ResponseReturnValue:
    actor = authenticate()
    args = query_args(PageQuery)
    with transaction(runtime().sessions) as session:
        rows, has_more = webhook_endpoints.list_attempts(
            session, actor.organization_id, endpoint_id, args.limit, args.before
        )
        data = [webhook_endpoints.attempt_json(a) for a in rows]
    return respond_list(WebhookAttemptList, data, has_more)


@operation(
    bp,
    "GET",
    "/events",
    summary="The event log, newest first, of one type when `type` is given",
    query=EventQuery,
    responses={200: EventList},
)
def list_events() -> ResponseReturnValue:
    actor = authenticate()
    args = query_args(EventQuery)
    with transaction(runtime().sessions) as session:
        rows, has_more = events.list_events(
            session, actor.organization_id, args.type, args.limit, args.before
        )
        data = [events.event_json(e) for e in rows]
    return respond_list(EventList, data, has_more)


@operation(
    bp,
    "GET",
    "/events/<id:event_id>",
    summary="An event",
    responses={200: Event},
)
def get_event(event_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        data = events.event_json(events.get_event(session, actor.organization_id, event_id))
    return respond(Event, data)


@operation(
    bp,
    "POST",
    "/events/<id:event_id>/resend",
    summary="Send an event again to every enabled endpoint that subscribes to its type",
    responses={202: Event},
)
def resend_event(event_id: str) -> ResponseReturnValue:
    actor = authenticate()
    rt = runtime()
    with transaction(rt.sessions) as session:
        endpoints = event_sending.resend_event(session, actor.organization_id, event_id)
        data = events.event_json(events.get_event(session, actor.organization_id, event_id))
    for endpoint_id in endpoints:
        enqueue_drain(rt.redis, endpoint_id)
    return respond(Event, data, 202)
