"""API keys as credentials of a signed-in console session (DESIGN 5.1, 7).

The console exchanges a key for a server-side session at once and keeps only the key's id; every
request then asks whether that key is still unrevoked, so revoking a key ends its sessions at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.models import ApiKey, Organization
from bridge.organizations import authenticate, hash_api_key


@dataclass(frozen=True)
class KeyHolder:
    """The organization an active API key belongs to."""

    key_id: str
    organization_id: str
    organization_name: str


def sign_in(session: Session, key: str) -> KeyHolder | None:
    """The key's id and organization, or None when the key is unknown or revoked."""
    org = authenticate(session, key)
    if org is None:
        return None
    key_id = session.execute(
        select(ApiKey.id).where(ApiKey.key_hash == hash_api_key(key))
    ).scalar_one()
    return KeyHolder(key_id, org.id, org.name)


def active_key_holder(session: Session, key_id: str) -> KeyHolder | None:
    """The organization of an unrevoked key, by the key's id, in one query; None once revoked."""
    row = session.execute(
        select(ApiKey.id, Organization.id, Organization.name)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return KeyHolder(*row) if row else None
