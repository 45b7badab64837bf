"""The organization's API keys (nested in /v1): rotate one by creating another, then revoking it."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy.orm import Session

from bridge import keys
from bridge.serialize import ApiKey, ApiKeyList, NewApiKey
from webhooks.auth import acting_org
from webhooks.http import operation
from webhooks.schemas import ApiKeyCreate

bp = Blueprint("api_keys", __name__)


@operation(
    bp,
    "GET /api_keys",
    responses={200: ApiKeyList},
    summary=f"The organization's active API keys, oldest first (at most {keys.MAX_ACTIVE_KEYS})",
)
def list_api_keys(session: Session) -> ApiKeyList:
    """The organization's active API keys, oldest first."""
    return ApiKeyList.of([ApiKey.of(r) for r in keys.list_api_keys(session, acting_org())])


@operation(
    bp,
    "POST /api_keys",
    body=ApiKeyCreate,
    body_required=False,
    responses={201: NewApiKey},
    errors=(409,),
)
def create_api_key(session: Session, body: ApiKeyCreate) -> NewApiKey:
    """Create an API key; the key is in this answer only."""
    new = keys.issue_api_key(session, acting_org(), body.label)
    return NewApiKey.issued(new.row, new.api_key)


@operation(bp, "DELETE /api_keys/<id:key_id>", responses={200: ApiKey}, errors=(404, 409))
def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Revoke an API key: refused from the next request on, in every process."""
    return ApiKey.of(keys.revoke_api_key(session, acting_org(), key_id))
