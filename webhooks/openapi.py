"""`GET /openapi.json`: the OpenAPI 3.1 description, built from the declared operations and the
same pydantic models that validate requests and shape responses."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import pydantic
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bridge import serialize
from webhooks.errors import Error
from webhooks.http import ID_PATTERN, OPERATIONS, Operation

bp = Blueprint("openapi", __name__)

PREFIX = "/v1"
REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")

# Named components even where no operation answers with them alone (DESIGN section 4).
COMPONENTS: tuple[type[pydantic.BaseModel], ...] = (
    serialize.Thread,
    serialize.Message,
    serialize.Subscriber,
    serialize.Channel,
    serialize.Delivery,
    serialize.InboundSms,
    serialize.User,
    serialize.Contact,
    serialize.Organization,
    Error,
)

ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON, or not a JSON object.",
    401: "No API key, or an unknown or revoked one.",
    403: "X-Subscriber-Id names no user of this organization, or the actor may not do this.",
    404: (
        "No such object in this organization (another organization's objects are 404 too), or "
        "a `before` cursor that names no object of the list."
    ),
    409: "The request clashes with the current state.",
    413: "The body is larger than 64 KiB (65,536 bytes), also when it arrives chunked.",
    415: "The body is not JSON.",
    422: (
        "A field or parameter is invalid; `param` names it. Text refuses the C0 control "
        "characters but tab, LF and CR, NUL included, and lone surrogates (escaped in JSON)."
    ),
    429: "Too many requests with this API key; see Retry-After.",
    503: "The database is unavailable; try again shortly.",
}


TAGS = {
    "organization": "The organization the API key names.",
    "users": "Members of the organization.",
    "contacts": "External people with a mobile number.",
    "threads": "Conversations about a resource, and their subscribers.",
    "messages": "Messages of threads and channels: post, page through, edit, cancel, deliveries.",
    "channels": "The SMS conversations between the organization and sets of contacts.",
    "inbound": "Inbound SMS records.",
    "webhook_endpoints": "Where the organization's events are sent, and the attempts to send them.",
    "events": "The event log: what happened, as the webhook endpoints receive it.",
    "api_keys": "The organization's API keys: create one, list them, revoke one (rotation).",
}

# Links from an operation's answers to the operations its ids feed (OpenAPI runtime expressions),
# so a client, or a stateful test, can go from what it created to what it can do with it.
_THREAD = "$response.body#/id"
_MESSAGE_ID = {"message_id": "$response.body#/id"}
_THREAD_LINKS = {
    "GetThread": ("get_thread", {"thread_id": _THREAD}),
    "UpdateThread": ("update_thread", {"thread_id": _THREAD}),
    "ListMessages": ("list_messages", {"thread_id": _THREAD}),
    "PostMessage": ("post_message", {"thread_id": _THREAD}),
    "AddSubscriber": ("add_subscriber", {"thread_id": _THREAD}),
    "ArchiveSubscriber": (
        "archive_subscriber",
        {"thread_id": _THREAD, "subscriber_id": "$response.body#/subscriber_ids/0"},
    ),
    "MarkViewed": ("mark_viewed", {"thread_id": _THREAD}),
    "EditRecentMessage": ("edit_message", {"message_id": "$response.body#/recent_messages/0/id"}),
}
_MESSAGE_LINKS = {
    "ListDeliveries": ("list_deliveries", _MESSAGE_ID),
    "EditMessage": ("edit_message", _MESSAGE_ID),
    "CancelMessage": ("cancel_message", _MESSAGE_ID),
    "GetThread": ("get_thread", {"thread_id": "$response.body#/thread_id"}),
    "GetChannel": ("get_channel", {"channel_id": "$response.body#/channel_id"}),
    "ListChannelMessages": ("list_channel_messages", {"channel_id": "$response.body#/channel_id"}),
}
_CHANNEL_LINKS = {
    "ListChannelMessages": ("list_channel_messages", {"channel_id": "$response.body#/id"}),
    "PostChannelMessage": ("post_channel_message", {"channel_id": "$response.body#/id"}),
}
_FIRST = "$response.body#/data/0/id"
_MESSAGE_PAGE_LINKS = {
    "ListDeliveries": ("list_deliveries", {"message_id": _FIRST}),
    "EditMessage": ("edit_message", {"message_id": _FIRST}),
    "CancelMessage": ("cancel_message", {"message_id": _FIRST}),
}
LINKS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "create_thread": _THREAD_LINKS,
    "get_thread": _THREAD_LINKS,
    "update_thread": _THREAD_LINKS,
    "add_subscriber": _THREAD_LINKS,
    "post_message": _MESSAGE_LINKS,
    "post_channel_message": _MESSAGE_LINKS,
    "edit_message": _MESSAGE_LINKS,
    "list_messages": {
        **_MESSAGE_PAGE_LINKS,
        "NextPage": (
            "list_messages",
            {"thread_id": "$request.path.thread_id", "before": "$response.body#/data/0/id"},
        ),
    },
    "list_channel_messages": _MESSAGE_PAGE_LINKS,
    "get_channel": _CHANNEL_LINKS,
    "find_channels": {
        "GetChannel": ("get_channel", {"channel_id": _FIRST}),
        "ListChannelMessages": ("list_channel_messages", {"channel_id": _FIRST}),
        "PostChannelMessage": ("post_channel_message", {"channel_id": _FIRST}),
    },
    "create_contact": {
        "GetContact": ("get_contact", {"contact_id": "$response.body#/id"}),
        "FindContacts": ("find_contacts", {"phone": "$response.body#/phone"}),
        "FindChannels": ("find_channels", {"phone": "$response.body#/phone"}),
    },
    "find_contacts": {"GetContact": ("get_contact", {"contact_id": _FIRST})},
    "create_user": {"GetUser": ("get_user", {"user_id": "$response.body#/id"})},
    # Only a key just created links to its revocation: the list starts with the oldest key, most
    # likely the one in use.
    "create_api_key": {"RevokeApiKey": ("revoke_api_key", {"key_id": "$response.body#/id"})},
    "list_inbound": {
        "NextPage": ("list_inbound", {"before": "$response.body#/data/0/id"}),
        "GetChannel": ("get_channel", {"channel_id": "$response.body#/data/0/channel_id"}),
    },
}

REQUEST_ID = {
    "description": (
        "The request's id, in the server's log lines too: the one the client sent when it is 8 to "
        "200 letters, digits and `_ . : -`, else a new one."
    ),
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{8,200}$"},
}


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    """The API's description."""
    return jsonify(build_description())


@cache
def build_description() -> dict[str, Any]:
    """The OpenAPI 3.1 document for every declared operation."""
    modes: dict[type[pydantic.BaseModel], JsonSchemaMode] = {}
    for model in COMPONENTS:
        modes[model] = "serialization"
    for op in OPERATIONS:
        for model in op.responses.values():
            modes[model] = "serialization"
        if op.body is not None:
            modes[op.body] = "validation"
    _, top = models_json_schema(list(modes.items()), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        path = PREFIX + _PATH_PARAM.sub(r"{\1}", op.rule)
        paths.setdefault(path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SMS bridge",
            "version": "1",
            "description": "Threads and channels carried over SMS. Timestamps are epoch seconds.",
        },
        "servers": [{"url": "/", "description": "The server that serves this description."}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


# The headers every operation takes, besides its path and query parameters.
_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-Subscriber-Id",
        "in": "header",
        "required": False,
        "description": "Act as this user of the organization instead of the organization.",
        "schema": {"type": "string", "pattern": r"^usr_[A-Za-z0-9]+$"},
    },
    {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": (
            "An id for the request, kept when it is 8 to 200 letters, digits and `_ . : -` "
            "(Heroku's router sends one); any other value is replaced, never refused."
        ),
        "schema": {"type": "string"},
    },
]


def _operation(op: Operation) -> dict[str, Any]:
    path_names = _PATH_PARAM.findall(op.rule)
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": f"^{ID_PATTERN}$"},
        }
        for name in path_names
    ]
    parameters.extend(copy.deepcopy(_HEADERS))
    if op.query is not None:
        parameters.extend(_query_parameters(op.query))
    result: dict[str, Any] = {
        "operationId": op.view,
        "summary": op.summary,
        "tags": [_tag(op.rule)],
        "parameters": parameters,
    }
    if op.body is not None:
        result["requestBody"] = {
            "description": "JSON, at most 64 KiB (65,536 bytes): a larger body is a 413.",
            "required": op.body_required,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
            },
        }
    result["responses"] = _responses(op, _error_statuses(op, bool(path_names)))
    return result


def _error_statuses(op: Operation, has_path_ids: bool) -> set[int]:
    # What any operation may answer, and what its ids, query and body add.
    errors = {401, 403, 429, 503, *op.errors}
    if has_path_ids or (op.query is not None and "before" in op.query.model_fields):
        errors.add(404)
    if op.query is not None or op.body is not None:
        errors.add(422)
    if op.body is not None:
        errors |= {400, 413, 415}
    return errors


def _responses(op: Operation, errors: set[int]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    links = {
        name: {"operationId": target, "parameters": parameters}
        for name, (target, parameters) in LINKS.get(op.view, {}).items()
    }
    for status, model in sorted(op.responses.items()):
        responses[str(status)] = _json_response(model, _success(op, status))
        if links:
            responses[str(status)]["links"] = links
    for status in sorted(errors):
        responses[str(status)] = _json_response(Error, ERROR_DESCRIPTIONS[status])
    responses["429"]["headers"]["Retry-After"] = {
        "description": "Seconds until the rate-limit window resets.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
    return responses


def _tag(rule: str) -> str:
    # Message routes nest in threads and channels; the rest go by their first segment.
    segments = rule.strip("/").split("/")
    return "messages" if "messages" in segments else segments[0]


def _success(op: Operation, status: int) -> str:
    if status == 201:
        return "Created."
    if status == 200 and 201 in op.responses:
        return "It already existed."
    return "OK."


def _json_response(model: type[pydantic.BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": REQUEST_ID},
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


def _query_parameters(model: type[pydantic.BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _without_null(dict(prop))
        description = prop.pop("description", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    # A query parameter is either absent or a string: "null" is not a value it can take.
    options = [o for o in prop.get("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return prop
