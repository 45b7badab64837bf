"""The organization's API keys (nested in /v1): rotate one by creating another, then revoking it."""

from __future__ import annotations

from flask import Blueprint, g
from flask.typing import ResponseReturnValue

from bridge import keys
from bridge.db import transaction
from bridge.serialize import ApiKey, ApiKeyList, NewApiKey
from webhooks.context import runtime
from webhooks.http import operation, respond
from webhooks.schemas import ApiKeyCreate

bp = Blueprint("api_keys", __name__)


@operation(
    bp,
    "GET",
    "/api_keys",
    summary=f"The organization's active API keys, oldest first (at most {keys.MAX_ACTIVE_KEYS})",
    responses={200: ApiKeyList},
)
def list_api_keys() -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        rows = keys.list_api_keys(session, g.actor.organization_id)
    return respond(ApiKeyList.of([ApiKey.of(r) for r in rows]))


@operation(
    bp,
    "POST",
    "/api_keys",
    summary="Create an API key; the key is in this answer only",
    body=ApiKeyCreate,
    body_required=False,
    responses={201: NewApiKey},
    errors=(409,),
)
def create_api_key(body: ApiKeyCreate) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        new = keys.issue_api_key(session, g.actor.organization_id, body.label)
    return respond(NewApiKey.issued(new.row, new.api_key), 201)


@operation(
    bp,
    "DELETE",
    "/api_keys/<id:key_id>",
    summary="Revoke an API key: refused from the next request on, in every process",
    responses={200: ApiKey},
    errors=(404, 409),
)
def revoke_api_key(key_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        key = keys.revoke_api_key(session, g.actor.organization_id, key_id)
    return respond(ApiKey.of(key))
