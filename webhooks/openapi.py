"""`GET /openapi.json`: the OpenAPI 3.1 description, built from the declared operations and the
same pydantic models that validate requests and shape responses."""

from __future__ import annotations

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
    404: "No such object in this organization (another organization's objects are 404 too).",
    409: "The request clashes with the current state.",
    413: "The body is larger than 64 KiB.",
    415: "The body is not JSON.",
    422: "A field or parameter is invalid; `param` names it.",
    429: "Too many requests with this API key; see Retry-After.",
    503: "The database is unavailable; try again shortly.",
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
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


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
    parameters.append(
        {
            "name": "X-Subscriber-Id",
            "in": "header",
            "required": False,
            "description": "Act as this user of the organization instead of the organization.",
            "schema": {"type": "string", "pattern": r"^usr_[A-Za-z0-9]+$"},
        }
    )
    if op.query is not None:
        parameters.extend(_query_parameters(op.query))
    errors = {401, 403, 429, 503, *op.errors}
    if path_names:
        errors.add(404)
    if op.query is not None or op.body is not None:
        errors.add(422)
    result: dict[str, Any] = {
        "operationId": op.view,
        "summary": op.summary,
        "parameters": parameters,
    }
    if op.body is not None:
        errors |= {400, 413, 415}
        result["requestBody"] = {
            "required": op.body_required,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}
            },
        }
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        responses[str(status)] = _json_response(model, _success(op, status))
    for status in sorted(errors):
        responses[str(status)] = _json_response(Error, ERROR_DESCRIPTIONS[status])
    responses["429"]["headers"] = {
        "Retry-After": {
            "description": "Seconds until the rate-limit window resets.",
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    result["responses"] = responses
    return result


def _success(op: Operation, status: int) -> str:
    if status == 201:
        return "Created."
    if status == 200 and 201 in op.responses:
        return "It already existed."
    return "OK."


def _json_response(model: type[pydantic.BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
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
