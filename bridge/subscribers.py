"""Subscriber profiles: the user, organization or contact behind a subscriber id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, null, select, union_all
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
    """Profiles for these subscriber ids, in one query whatever their number and kinds."""
    kinds = {sid: SubscriberType(kind) for sid in set(ids) if (kind := kind_of(sid))}
    by_kind: dict[str, list[str]] = {"user": [], "contact": [], "api_key": []}
    for sid, kind in kinds.items():
        by_kind[kind].append(sid)
    # Columns, not ORM objects: a thread read builds one profile per subscriber (50 on a busy
    # one), and an ORM load per row costs more than the query. One UNION ALL of the kinds present,
    # so a read costs the same number of queries whichever kinds its subscribers are.
    parts: list[Select[str, str | None, str | None, str | None]] = []
    if by_kind["user"]:
        parts.append(
            select(User.id, User.name, User.email, User.phone).where(User.id.in_(by_kind["user"]))
        )
    if by_kind["contact"]:
        parts.append(
            select(Contact.id, Contact.name, Contact.email, Contact.phone).where(
                Contact.id.in_(by_kind["contact"])
            )
        )
    if by_kind["api_key"]:
        no_text = null().cast(String)
        parts.append(
            select(Organization.id, Organization.name, no_text, no_text).where(
                Organization.id.in_(by_kind["api_key"])
            )
        )
    if not parts:
        return {}
    query = parts[0] if len(parts) == 1 else union_all(*parts)
    return {
        sid: Profile(sid, kinds[sid], name, email, phone)
        for sid, name, email, phone in session.execute(query)
    }


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
