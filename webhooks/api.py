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
from sqlalchemy.orm import Session

from bridge import inbound, organizations
from bridge.serialize import (
    Contact,
    ContactList,
    InboundSms,
    InboundSmsList,
    Organization,
    User,
)
from webhooks import api_channels, api_events, api_keys, api_messages, api_threads, openapi
from webhooks.auth import acting_org, authenticate
from webhooks.context import runtime
from webhooks.errors import register_database_errors
from webhooks.http import IdConverter, operation
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


@operation(bp, "GET /organization", responses={200: Organization})
def get_organization(session: Session) -> Organization:
    """The organization, its senders and subscriber record."""
    return Organization.load(session, organizations.get_organization(session, acting_org()))


@operation(bp, "PATCH /organization", body=OrganizationUpdate, responses={200: Organization})
def update_organization(session: Session, body: OrganizationUpdate) -> Organization:
    """Change the organization's name and HELP text."""
    org = organizations.update_organization(
        session, acting_org(), name=body.name, help_text=body.help_text
    )
    return Organization.load(session, org)


@operation(bp, "POST /users", body=UserCreate, responses={201: User})
def create_user(session: Session, body: UserCreate) -> User:
    """Add a member."""
    settings = runtime().settings
    return User.read(
        organizations.create_user(
            session, settings, acting_org(), body.name, body.email, body.phone
        )
    )


@operation(bp, "GET /users/<id:user_id>", responses={200: User}, errors=(404,))
def get_user(session: Session, user_id: str) -> User:
    """A member."""
    return User.read(organizations.get_user(session, acting_org(), user_id))


@operation(bp, "POST /contacts", body=ContactCreate, responses={201: Contact, 200: Contact})
def create_contact(session: Session, body: ContactCreate) -> tuple[Contact, int]:
    """Find or create the contact with a phone number."""
    contact, created = organizations.find_or_create_contact(
        session, runtime().settings, acting_org(), body.phone, body.name, body.email
    )
    return Contact.load(session, contact), 201 if created else 200


@operation(bp, "GET /contacts/<id:contact_id>", responses={200: Contact}, errors=(404,))
def get_contact(session: Session, contact_id: str) -> Contact:
    """A contact."""
    return Contact.load(session, organizations.get_contact(session, acting_org(), contact_id))


@operation(bp, "GET /contacts", query=PhoneQuery, responses={200: ContactList})
def find_contacts(session: Session, query: PhoneQuery) -> ContactList:
    """The contact with a phone number (a list of zero or one)."""
    settings = runtime().settings
    contact = organizations.find_contact_by_phone(session, settings, acting_org(), query.phone)
    return ContactList.of([Contact.load(session, contact)] if contact else [])


@operation(bp, "GET /inbound", query=InboundQuery, responses={200: InboundSmsList})
def list_inbound(session: Session, query: InboundQuery) -> InboundSmsList:
    """Inbound SMS records, newest first."""
    rows, has_more = inbound.list_inbound(
        session, acting_org(), query.status, query.limit, query.before
    )
    return InboundSmsList.of([InboundSms.of(r) for r in rows], has_more)
