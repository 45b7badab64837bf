"""Subscriber profiles: the user, organization or contact behind a subscriber id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.errors import NotFound, ValidationError
from bridge.ids import kind_of
from bridge.models import Contact, Organization, SubscriberType, User
from bridge.organizations import find_or_create_contact, get_contact, get_user
from bridge.settings import Settings


@dataclass(frozen=True)
class Profile:
    """What a chat UI needs to show a subscriber."""

    id: str
    type: SubscriberType
    name: str | None
    email: str | None
    phone: str | None


def load_profiles(session: Session, ids: Iterable[str]) -> dict[str, Profile]:
    """Profiles for these subscriber ids, in at most three queries whatever their number."""
    by_kind: dict[str, list[str]] = {"user": [], "contact": [], "api_key": []}
    for sid in set(ids):
        kind = kind_of(sid)
        if kind:
            by_kind[kind].append(sid)
    profiles: dict[str, Profile] = {}
    # Columns, not ORM objects: a thread read builds one profile per subscriber (50 on a busy
    # one), and an ORM load per row costs more than the query.
    if by_kind["user"]:
        for uid, user_name, email, phone in session.execute(
            select(User.id, User.name, User.email, User.phone).where(User.id.in_(by_kind["user"]))
        ):
            profiles[uid] = Profile(uid, SubscriberType.USER, user_name, email, phone)
    if by_kind["contact"]:
        for cid, name, email, phone in session.execute(
            select(Contact.id, Contact.name, Contact.email, Contact.phone).where(
                Contact.id.in_(by_kind["contact"])
            )
        ):
            profiles[cid] = Profile(cid, SubscriberType.CONTACT, name, email, phone)
    if by_kind["api_key"]:
        for oid, org_name in session.execute(
            select(Organization.id, Organization.name).where(
                Organization.id.in_(by_kind["api_key"])
            )
        ):
            profiles[oid] = Profile(oid, SubscriberType.API_KEY, org_name, None, None)
    return profiles


def resolve_subscriber(
    session: Session,
    settings: Settings,
    organization_id: str,
    spec: str | Mapping[str, Any],
    param: str = "subscribers",
) -> tuple[str, str]:
    """Turn an id, or `{"type": "contact", "phone", "name"}`, into (subscriber id, type).

    Ids of another organization are NotFound, as if they did not exist.
    """
    if isinstance(spec, str):
        kind = kind_of(spec)
        try:
            if kind == SubscriberType.USER:
                get_user(session, organization_id, spec)
            elif kind == SubscriberType.CONTACT:
                get_contact(session, organization_id, spec)
        except NotFound as exc:
            # The error names the field of the request that held the id, not the lookup's own "id".
            raise NotFound(exc.message, param) from None
        if kind == SubscriberType.API_KEY and spec != organization_id:
            raise NotFound("no such subscriber", param)
        if kind is None:
            raise ValidationError("a subscriber id starts with usr_, cnt_ or org_", param)
        return spec, kind
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if kind == SubscriberType.CONTACT and spec.get("phone") is not None:
            contact, _ = find_or_create_contact(
                session,
                settings,
                organization_id,
                spec["phone"],
                name=spec.get("name"),
                email=spec.get("email"),
                param=f"{param}.phone",
            )
            return contact.id, SubscriberType.CONTACT
        if isinstance(spec.get("id"), str):
            return resolve_subscriber(session, settings, organization_id, spec["id"], param)
        raise ValidationError(
            'a subscriber is an id or {"type": "contact", "phone": "...", "name": "..."}', param
        )
    raise ValidationError("a subscriber is an id or an object", param)
