"""Plain factory functions for test data."""

from __future__ import annotations

import itertools
import json
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.models import Contact, Organization, User
from bridge.organizations import create_organization, create_user, find_or_create_contact
from bridge.settings import Settings

_numbers = itertools.count(1000)


def phone() -> str:
    """A fresh valid US mobile-looking number in E.164 (+1 415 555 xxxx style but valid)."""
    return f"+1415{next(_numbers) + 2000000:07d}"


def sender() -> str:
    """A fresh valid sender number."""
    return f"+1628{next(_numbers) + 3000000:07d}"


def organization(
    session: Session, settings: Settings, name: str = "Acme Logistics", senders: int = 1
) -> tuple[Organization, str]:
    """An organization with `senders` numbers (or a Messaging Service); returns it and its key."""
    # An organization needs something to send from: without numbers, a Messaging Service.
    service = None if senders else "MG" + "0" * 32
    made = create_organization(
        session, settings, name, [sender() for _ in range(senders)], messaging_service_sid=service
    )
    return made.organization, made.api_key


def user(session: Session, settings: Settings, org: Organization, name: str = "Uma User") -> User:
    """A user of `org`."""
    email = f"{name.split()[0].lower()}@example.com"
    return create_user(session, settings, org.id, name, email=email)


def contact(
    session: Session, settings: Settings, org: Organization, name: str = "Cora Contact"
) -> Contact:
    """A new contact of `org` with a fresh number."""
    made, _ = find_or_create_contact(session, settings, org.id, phone(), name=name)
    return made


def org_actor(org: Organization) -> Actor:
    """The organization acting through its API key."""
    return Actor.organization(org.id)


def as_json(response: BaseModel) -> dict[str, Any]:
    """A response model as the API sends it: its JSON, read back."""
    body: dict[str, Any] = json.loads(response.model_dump_json(by_alias=True))
    return body
