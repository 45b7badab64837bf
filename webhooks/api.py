"""The REST API under /v1 (DESIGN section 6): the organization, users, contacts and inbound SMS.

Threads and their messages live in `webhooks.api_threads`, channels and messages by id in
`webhooks.api_channels`; both are nested in `bp`. Every view keeps one order: authenticate, read
and validate the request, call one domain function in a transaction, enqueue after commit, answer.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from bridge import inbound, models, organizations
from bridge.db import transaction
from bridge.serialize import inbound_json, organization_json, user_json
from webhooks import api_channels, api_events, api_threads, openapi
from webhooks.auth import authenticate
from webhooks.context import runtime
from webhooks.errors import register_database_errors
from webhooks.http import IdConverter, json_body, operation, query_args, respond, respond_list
from webhooks.present import contact_data
from webhooks.schemas import (
    Contact,
    ContactCreate,
    ContactList,
    InboundQuery,
    InboundSmsList,
    Organization,
    OrganizationUpdate,
    PhoneQuery,
    User,
    UserCreate,
)

bp = Blueprint("api", __name__, url_prefix="/v1")


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    # Before any route is added: the `id` converter keeps ids that cannot exist out of the views.
    state.app.url_map.converters["id"] = IdConverter
    state.app.register_blueprint(openapi.bp)


register_database_errors(bp)
bp.register_blueprint(api_threads.bp)
bp.register_blueprint(api_channels.bp)
bp.register_blueprint(api_events.bp)


def _organization_data(session: Session, org: models.Organization) -> dict[str, Any]:
    senders = organizations.sender_numbers(session, org.id)
    return organization_json(org, senders, organizations.help_text_for(org))


@operation(
    bp,
    "GET",
    "/organization",
    summary="The organization, its senders and subscriber record",
    responses={200: Organization},
)
def get_organization() -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        org = organizations.get_organization(session, actor.organization_id)
        data = _organization_data(session, org)
    return respond(Organization, data)


@operation(
    bp,
    "PATCH",
    "/organization",
    summary="Change the organization's name and HELP text",
    body=OrganizationUpdate,
    responses={200: Organization},
)
def update_organization() -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(OrganizationUpdate)
    with transaction(runtime().sessions) as session:
        org = organizations.update_organization(
            session, actor.organization_id, name=body.name, help_text=body.help_text
        )
        data = _organization_data(session, org)
    return respond(Organization, data)


@operation(
    bp,
    "POST",
    "/users",
    summary="Add a member",
    body=UserCreate,
    responses={201: User},
)
def create_user() -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(UserCreate)
    rt = runtime()
    with transaction(rt.sessions) as session:
        user = organizations.create_user(
            session, rt.settings, actor.organization_id, body.name, body.email, body.phone
        )
        data = user_json(user)
    return respond(User, data, 201)


@operation(
    bp,
    "GET",
    "/users/<id:user_id>",
    summary="A member",
    responses={200: User},
    errors=(404,),
)
def get_user(user_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        data = user_json(organizations.get_user(session, actor.organization_id, user_id))
    return respond(User, data)


@operation(
    bp,
    "POST",
    "/contacts",
    summary="Find or create the contact with a phone number",
    body=ContactCreate,
    responses={201: Contact, 200: Contact},
)
def create_contact() -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(ContactCreate)
    rt = runtime()
    with transaction(rt.sessions) as session:
        contact, created = organizations.find_or_create_contact(
            session, rt.settings, actor.organization_id, body.phone, body.name, body.email
        )
        data = contact_data(session, contact)
    return respond(Contact, data, 201 if created else 200)


@operation(
    bp,
    "GET",
    "/contacts/<id:contact_id>",
    summary="A contact",
    responses={200: Contact},
    errors=(404,),
)
def get_contact(contact_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        contact = organizations.get_contact(session, actor.organization_id, contact_id)
        data = contact_data(session, contact)
    return respond(Contact, data)


@operation(
    bp,
    "GET",
    "/contacts",
    summary="The contact with a phone number (a list of zero or one)",
    query=PhoneQuery,
    responses={200: ContactList},
)
def find_contacts() -> ResponseReturnValue:
    actor = authenticate()
    args = query_args(PhoneQuery)
    rt = runtime()
    with transaction(rt.sessions) as session:
        contact = organizations.find_contact_by_phone(
            session, rt.settings, actor.organization_id, args.phone
        )
        data = [contact_data(session, contact)] if contact else []
    return respond_list(ContactList, data, False)


@operation(
    bp,
    "GET",
    "/inbound",
    summary="Inbound SMS records, newest first",
    query=InboundQuery,
    responses={200: InboundSmsList},
)
def list_inbound() -> ResponseReturnValue:
    actor = authenticate()
    args = query_args(InboundQuery)
    with transaction(runtime().sessions) as session:
        rows, has_more = inbound.list_inbound(
            session, actor.organization_id, args.status, args.limit, args.before
        )
        data = [inbound_json(r) for r in rows]
    return respond_list(InboundSmsList, data, has_more)
