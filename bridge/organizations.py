"""Organizations, their sender numbers, users, contacts and opt-outs (DESIGN 5.1).

Their API keys are `bridge.keys`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bridge.db import get_owned, insert_or_get, utcnow
from bridge.errors import Conflict, NotFound, ValidationError
from bridge.events import record_opt_change
from bridge.ids import new_id
from bridge.keys import issue_api_key
from bridge.models import Contact, OptOut, Organization, SenderNumber, User
from bridge.phones import normalize_phone, phone_hash
from bridge.settings import Settings

MAX_NAME = 200


def default_help_text(organization_name: str) -> str:
    """The HELP answer an organization gets until it sets its own."""
    return (
        f"{organization_name}: messages about your orders and bookings. "
        "Reply STOP to unsubscribe, START to resubscribe. Msg&data rates may apply."
    )


@dataclass(frozen=True)
class NewOrganization:
    organization: Organization
    api_key: str


def _clean_name(name: object, param: str = "name", required: bool = True) -> str | None:
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"{param} must be a non-empty string", param)
    if len(name) > MAX_NAME:
        raise ValidationError(f"{param} must be at most {MAX_NAME} characters", param)
    return name.strip()


def create_organization(
    session: Session,
    settings: Settings,
    name: str,
    senders: Iterable[str] = (),
    messaging_service_sid: str | None = None,
    help_text: str | None = None,
) -> NewOrganization:
    """Create an organization with one API key (returned once, stored hashed) and its senders.

    It needs a sender number or a Messaging Service SID: without either no SMS could ever go.
    """
    clean_name = _clean_name(name)
    senders = list(senders)
    if not senders and not messaging_service_sid:
        raise ValidationError(
            "an organization needs a sender number or a Messaging Service SID to send SMS",
            "sender",
        )
    org = Organization(
        id=new_id("org"),
        name=clean_name,
        help_text=help_text,
        messaging_service_sid=messaging_service_sid,
    )
    session.add(org)
    session.flush()
    for sender in senders:
        add_sender(session, settings, org.id, sender)
    return NewOrganization(org, issue_api_key(session, org.id, label="default").api_key)


def add_sender(session: Session, settings: Settings, organization_id: str, phone: str) -> str:
    """Add a sender number (E.164) to the organization's pool; a number has one owner."""
    e164 = normalize_phone(phone, settings.default_region, param="sender")
    number = (
        _sender(session, e164)
        or insert_or_get(
            # Someone may add the same number at the same moment: the unique index decides.
            session,
            SenderNumber(id=new_id("snd"), organization_id=organization_id, phone=e164),
            lambda: _sender(session, e164),
        )[0]
    )
    if number.organization_id != organization_id:
        raise Conflict("that sender number belongs to another organization", "sender")
    return e164


def _sender(session: Session, e164: str) -> SenderNumber | None:
    return session.execute(
        select(SenderNumber).where(SenderNumber.phone == e164)
    ).scalar_one_or_none()


def sender_numbers(session: Session, organization_id: str) -> list[str]:
    """The organization's sender numbers, oldest first."""
    return list(
        session.execute(
            select(SenderNumber.phone)
            .where(SenderNumber.organization_id == organization_id)
            .order_by(SenderNumber.created_at, SenderNumber.phone)
        ).scalars()
    )


def organization_for_number(session: Session, e164: str) -> Organization | None:
    """The organization that owns a sender number (inbound `To`)."""
    return session.execute(
        select(Organization)
        .join(SenderNumber, SenderNumber.organization_id == Organization.id)
        .where(SenderNumber.phone == e164)
    ).scalar_one_or_none()


def get_organization(session: Session, organization_id: str) -> Organization:
    """The organization, or NotFound."""
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound("no such organization")
    return org


def update_organization(
    session: Session,
    organization_id: str,
    name: str | None = None,
    help_text: str | None = None,
) -> Organization:
    """Change the organization's name and HELP text."""
    org = get_organization(session, organization_id)
    if name is not None:
        org.name = _clean_name(name)  # type: ignore[assignment]
    if help_text is not None:
        if not isinstance(help_text, str) or len(help_text) > 1600:
            raise ValidationError(
                "help_text must be a string of at most 1600 characters", "help_text"
            )
        org.help_text = help_text.strip() or None
    org.updated_at = utcnow()
    return org


def help_text_for(org: Organization) -> str:
    """What the organization answers to HELP."""
    return org.help_text or default_help_text(org.name)


def create_user(
    session: Session,
    settings: Settings,
    organization_id: str,
    name: str,
    email: str | None = None,
    phone: str | None = None,
) -> User:
    """Add a member to the organization."""
    user = User(
        id=new_id("usr"),
        organization_id=organization_id,
        name=_clean_name(name),
        email=_clean_email(email, "email"),
        phone=normalize_phone(phone, settings.default_region) if phone else None,
    )
    session.add(user)
    session.flush()
    return user


def _clean_email(email: object, param: str) -> str | None:
    if email is None:
        return None
    if not isinstance(email, str) or "@" not in email or len(email) > 320 or " " in email.strip():
        raise ValidationError("email must be an email address", param)
    return email.strip()


def get_user(session: Session, organization_id: str, user_id: str) -> User:
    """One of the organization's users, or NotFound (also for another organization's)."""
    return get_owned(session, User, organization_id, user_id)


def find_or_create_contact(
    session: Session,
    settings: Settings,
    organization_id: str,
    phone: str,
    name: str | None = None,
    email: str | None = None,
    param: str = "phone",
) -> tuple[Contact, bool]:
    """The organization's contact with this phone, created if new; safe when two requests race.

    Returns the contact and whether it was created. A name given for a known contact without one
    fills it in.
    """
    e164 = normalize_phone(phone, settings.default_region, param=param)
    # The field names sit beside the phone's: "subscribers[0].phone" -> "subscribers[0].name".
    prefix = param[: -len("phone")] if param.endswith("phone") else ""
    name = _clean_name(name, prefix + "name", required=False)
    email = _clean_email(email, prefix + "email")
    digest = phone_hash(organization_id, e164, settings.phone_hash_key)
    existing = _contact_by_hash(session, organization_id, digest)
    if existing is not None:
        if name and not existing.name:
            existing.name = name
        return existing, False
    contact = Contact(
        id=new_id("cnt"),
        organization_id=organization_id,
        name=name,
        email=email,
        phone=e164,
        phone_hash=digest,
    )
    # Another request may create it between our read and our insert: then theirs is the contact.
    return insert_or_get(
        session, contact, lambda: _contact_by_hash(session, organization_id, digest)
    )


def _contact_by_hash(session: Session, organization_id: str, digest: str) -> Contact | None:
    return session.execute(
        select(Contact).where(
            Contact.organization_id == organization_id, Contact.phone_hash == digest
        )
    ).scalar_one_or_none()


def find_contact_by_phone(
    session: Session, settings: Settings, organization_id: str, phone: str
) -> Contact | None:
    """The organization's contact with this phone, or None."""
    e164 = normalize_phone(phone, settings.default_region)
    digest = phone_hash(organization_id, e164, settings.phone_hash_key)
    return _contact_by_hash(session, organization_id, digest)


def get_contact(session: Session, organization_id: str, contact_id: str) -> Contact:
    """One of the organization's contacts, or NotFound."""
    return get_owned(session, Contact, organization_id, contact_id)


def opt_out(session: Session, organization_id: str, digest: str, source: str = "keyword") -> bool:
    """Stop SMS from this organization to the phone with this hash; True if it was opted in."""
    if session.get(OptOut, (organization_id, digest)) is not None:
        return False
    row = OptOut(organization_id=organization_id, phone_hash=digest, source=source)
    _, added = insert_or_get(session, row, lambda: session.get(OptOut, (organization_id, digest)))
    if added:
        record_opt_change(session, organization_id, digest, opted_out=True)
    return added


def opt_in(session: Session, organization_id: str, digest: str) -> bool:
    """Allow SMS again (START); True if the phone was opted out.

    The contact keeps the time (`opted_in_at`): a status callback about an SMS sent before it,
    replayed or late, cannot opt them out again (`bridge.deliveries.apply_status`).
    """
    session.execute(
        update(Contact)
        .where(Contact.organization_id == organization_id, Contact.phone_hash == digest)
        .values(opted_in_at=utcnow())
    )
    result = session.execute(
        delete(OptOut).where(OptOut.organization_id == organization_id, OptOut.phone_hash == digest)
    )
    opted_in = bool(result.rowcount)  # type: ignore[attr-defined]
    if opted_in:
        record_opt_change(session, organization_id, digest, opted_out=False)
    return opted_in


def is_opted_out(session: Session, organization_id: str, digest: str) -> bool:
    """Whether the phone with this hash has opted out of this organization's SMS."""
    return session.get(OptOut, (organization_id, digest)) is not None


def opted_out_hashes(session: Session, organization_id: str, digests: Iterable[str]) -> set[str]:
    """Which of these phone hashes have opted out of this organization's SMS."""
    digests = list(digests)
    if not digests:
        return set()
    return set(
        session.execute(
            select(OptOut.phone_hash).where(
                OptOut.organization_id == organization_id, OptOut.phone_hash.in_(digests)
            )
        ).scalars()
    )
