"""API keys: issued, checked, listed, revoked (DESIGN 5.1, 6, 7).

An organization holds several keys at once, each with a label, so a key is rotated without
downtime: create the new one, deploy it, revoke the old. Only a key's SHA-256 is stored, and every
request looks its key up in the database: nothing caches a key, so a revoked key is refused at
once by every web process, and the console's sessions (which keep only the key's id and ask
`active_key_holder` on every request) end with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge.db import get_owned, utcnow
from bridge.errors import Conflict
from bridge.ids import new_id
from bridge.models import ApiKey, Organization

API_KEY_PREFIX = "brk_"
MAX_ACTIVE_KEYS = 20  # per organization: enough to rotate, and the list stays one short page
MAX_LABEL = 200
# last_used_at is a hint for rotation ("is the old key still in use?"), not an audit log: one
# write a minute per key is plenty, and a write on every request would serialize them.
LAST_USED_PRECISION = timedelta(seconds=60)


def hash_api_key(key: str) -> str:
    """The stored form of an API key: its SHA-256 (keys are 256-bit random: no salt is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A key just issued: its row, and the key itself, shown this once."""

    row: ApiKey
    api_key: str


@dataclass(frozen=True)
class KeyHolder:
    """The organization an active API key belongs to."""

    key_id: str
    organization_id: str
    organization_name: str


def issue_api_key(session: Session, organization_id: str, label: str | None = None) -> NewKey:
    """A new API key for the organization; only its hash is kept. Conflict past MAX_ACTIVE_KEYS."""
    if len(list_api_keys(session, organization_id)) >= MAX_ACTIVE_KEYS:
        raise Conflict(
            f"an organization holds at most {MAX_ACTIVE_KEYS} active keys: revoke one first"
        )
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        organization_id=organization_id,
        key_hash=hash_api_key(key),
        prefix=key[:8],
        label=(label or "").strip()[:MAX_LABEL] or None,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return NewKey(row, key)


def sign_in(session: Session, key: str) -> KeyHolder | None:
    """The key's id and organization, or None when the key is unknown or revoked (one query).

    Its `last_used_at` is brought up to date at most once a minute.
    """
    if not key or len(key) > 200:
        return None
    digest = hash_api_key(key)
    row = session.execute(
        select(ApiKey.id, ApiKey.key_hash, ApiKey.last_used_at, Organization.id, Organization.name)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None or not hmac.compare_digest(row[1], digest):
        return None
    note_key_used(session, row[0], row[2])
    return KeyHolder(row[0], row[3], row[4])


def authenticate(session: Session, key: str) -> Organization | None:
    """The organization an API key names, or None; the stored hash is compared in constant time."""
    holder = sign_in(session, key)
    return None if holder is None else session.get(Organization, holder.organization_id)


def note_key_used(session: Session, key_id: str, last_used_at: datetime | None) -> None:
    """Record that the key was used now, unless that was recorded less than a minute ago.

    The update is conditional, so processes that race write it once; a key read as recently used
    costs no write at all.
    """
    now = utcnow()
    stale = now - LAST_USED_PRECISION
    if last_used_at is not None and last_used_at >= stale:
        return
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < stale))
        .values(last_used_at=now)
    )


def active_key_holder(session: Session, key_id: str) -> KeyHolder | None:
    """The organization of an unrevoked key, by the key's id, in one query; None once revoked."""
    row = session.execute(
        select(ApiKey.id, Organization.id, Organization.name)
        .join(Organization, Organization.id == ApiKey.organization_id)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return KeyHolder(*row) if row else None


def list_api_keys(session: Session, organization_id: str) -> list[ApiKey]:
    """The organization's active keys, oldest first (at most MAX_ACTIVE_KEYS)."""
    return list(
        session.execute(
            select(ApiKey)
            .where(ApiKey.organization_id == organization_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at, ApiKey.id)
            .limit(MAX_ACTIVE_KEYS)
        ).scalars()
    )


def revoke_api_key(
    session: Session, organization_id: str, key_id: str, keep_one: bool = True
) -> ApiKey:
    """Revoke one of the organization's active keys; it is refused from the next request on.

    With `keep_one` (the API), the organization's last active key is a Conflict: revoking it
    through the API would lock the organization out of the API for good.
    """
    # The organization's row is locked (PostgreSQL; SQLite serializes writers already), so two
    # requests revoking its last two keys at once cannot both see another key left.
    session.execute(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )
    key = get_owned(session, ApiKey, organization_id, key_id)
    session.refresh(key)
    if key.revoked_at is not None:
        return key
    if keep_one:
        active = session.execute(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.organization_id == organization_id, ApiKey.revoked_at.is_(None))
        ).scalar_one()
        if active <= 1:
            raise Conflict("this is the organization's last active key: create another first", "id")
    key.revoked_at = utcnow()
    session.flush()
    return key


def revoke_any_api_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key by its id alone, whichever organization holds it (the operator's CLI)."""
    key = session.get(ApiKey, key_id)
    organization_id = key.organization_id if key is not None else ""
    return revoke_api_key(session, organization_id, key_id, keep_one=False)
