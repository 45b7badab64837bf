"""The REST API under /v1 (DESIGN section 6): the organization, users, contacts and inbound SMS.

Threads live in `webhooks.api_threads`, channels in `webhooks.api_channels`, the message routes
both share in `webhooks.api_messages`, and API keys in `webhooks.api_keys`; all are nested in `bp`.
The blueprint authenticates every request (`g.actor`) and `operation()` parses what a view
declares, so each view keeps one order: call one domain function in a transaction, enqueue after
commit, answer.
"""

from __future__ import annotations

from flask import Blueprint, g
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from bridge import inbound, organizations
from bridge.db import transaction
from bridge.serialize import (
    Contact,
    ContactList,
    InboundSms,
    InboundSmsList,
    Organization,
    User,
)
from webhooks import api_channels, api_events, api_keys, api_messages, api_threads, openapi
from webhooks.auth import authenticate
from webhooks.context import runtime
from webhooks.errors import register_database_errors
from webhooks.http import IdConverter, operation, respond
from webhooks.schemas import ContactCreate, InboundQuery, OrganizationUpdate, PhoneQuery, UserCreate

bp = Blueprint("api", __name__, url_prefix="/v1")


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    # Before any route is added: the `id` converter keeps ids that cannot exist out of the views.
    state.app.url_map.converters["id"] = IdConverter
    state.app.register_blueprint(openapi.bp)


register_database_errors(bp)
bp.register_blueprint(api_threads.bp)
bp.register_blueprint(api_channels.bp)
bp.register_blueprint(api_messages.bp)
bp.register_blueprint(api_events.bp)
bp.register_blueprint(api_keys.bp)


@bp.before_request
def _authenticate() -> None:
    # Every /v1 route (nested blueprints included) acts for someone: 401, 403 or 429 otherwise.
    g.actor = authenticate()


@operation(
    bp,
    "GET",
    "/organization",
    summary="The organization, its senders and subscriber record",
    responses={200: Organization},
)
def get_organization() -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        org = organizations.get_organization(session, g.actor.organization_id)
        answer = Organization.load(session, org)
    return respond(answer)


@operation(
    bp,
    "PATCH",
    "/organization",
    summary="Change the organization's name and HELP text",
    body=OrganizationUpdate,
    responses={200: Organization},
)
def update_organization(body: OrganizationUpdate) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        org = organizations.update_organization(
            session, g.actor.organization_id, name=body.name, help_text=body.help_text
        )
        answer = Organization.load(session, org)
    return respond(answer)


@operation(
    bp,
    "POST",
    "/users",
    summary="Add a member",
    body=UserCreate,
    responses={201: User},
)
def create_user(body: UserCreate) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        user = organizations.create_user(
            session, rt.settings, g.actor.organization_id, body.name, body.email, body.phone
        )
        answer = User.of(user)
    return respond(answer, 201)


@operation(
    bp,
    "GET",
    "/users/<id:user_id>",
    summary="A member",
    responses={200: User},
    errors=(404,),
)
def get_user(user_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        user = organizations.get_user(session, g.actor.organization_id, user_id)
    return respond(User.of(user))


@operation(
    bp,
    "POST",
    "/contacts",
    summary="Find or create the contact with a phone number",
    body=ContactCreate,
    responses={201: Contact, 200: Contact},
)
def create_contact(body: ContactCreate) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        contact, created = organizations.find_or_create_contact(
            session, rt.settings, g.actor.organization_id, body.phone, body.name, body.email
        )
        answer = Contact.load(session, contact)
    return respond(answer, 201 if created else 200)


@operation(
    bp,
    "GET",
    "/contacts/<id:contact_id>",
    summary="A contact",
    responses={200: Contact},
    errors=(404,),
)
def get_contact(contact_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        contact = organizations.get_contact(session, g.actor.organization_id, contact_id)
        answer = Contact.load(session, contact)
    return respond(answer)


@operation(
    bp,
    "GET",
    "/contacts",
    summary="The contact with a phone number (a list of zero or one)",
    query=PhoneQuery,
    responses={200: ContactList},
)
def find_contacts(query: PhoneQuery) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        contact = organizations.find_contact_by_phone(
            session, rt.settings, g.actor.organization_id, query.phone
        )
        answer = ContactList.of([Contact.load(session, contact)] if contact else [])
    return respond(answer)


@operation(
    bp,
    "GET",
    "/inbound",
    summary="Inbound SMS records, newest first",
    query=InboundQuery,
    responses={200: InboundSmsList},
)
def list_inbound(query: InboundQuery) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        rows, has_more = inbound.list_inbound(
            session, g.actor.organization_id, query.status, query.limit, query.before
        )
    return respond(InboundSmsList.of([InboundSms.of(r) for r in rows], has_more))
