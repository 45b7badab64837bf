"""Request and response plumbing of the API: declared operations, bodies, query strings, answers.

Each view is declared with `operation(...)`, which adds the Flask route and records what it takes
and answers; `webhooks.openapi` builds the description from those records, so the routes and the
description cannot drift apart. The operation also does what every view would repeat: it reads
what the view declares (`body=` and `query=`, parsed and validated, beside the path parameters),
opens the transaction the view works in, and answers with the model the view returns.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic
from flask import Blueprint, Response, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from bridge.db import transaction
from webhooks.context import runtime
from webhooks.errors import ApiError
from webhooks.schemas import CONTROL

M = TypeVar("M", bound=pydantic.BaseModel)
View = TypeVar("View", bound=Callable[..., pydantic.BaseModel | tuple[pydantic.BaseModel, int]])

_AFTER_COMMIT = "webhooks.http.after_commit"  # session.info key: the view's work for after commit

# Ids in paths: what the bridge's ids and resource ids are made of. Anything else cannot name an
# object, so it is a 404 at routing and never reaches the database (PostgreSQL refuses NUL bytes).
ID_PATTERN = r"[A-Za-z0-9_\-.:]{1,160}"


class IdConverter(BaseConverter):
    regex = ID_PATTERN


@dataclass(frozen=True)
class Operation:
    """One API route as the description shows it."""

    method: str
    rule: str
    summary: str
    responses: Mapping[int, type[pydantic.BaseModel]]
    body: type[pydantic.BaseModel] | None = None
    body_required: bool = True
    query: type[pydantic.BaseModel] | None = None
    errors: tuple[int, ...] = ()
    view: str = field(default="")


OPERATIONS: list[Operation] = []


def operation(
    bp: Blueprint,
    route: str,
    *,
    responses: Mapping[int, type[pydantic.BaseModel]],
    body: type[pydantic.BaseModel] | None = None,
    body_required: bool = True,
    query: type[pydantic.BaseModel] | None = None,
    errors: Iterable[int] = (),
    summary: str | None = None,
) -> Callable[[View], View]:
    """Add the route `"METHOD /rule"` to `bp` (relative to /v1) and record it for the description.

    The view runs inside one transaction: it is called with the session, its path parameters, and
    `body=` and `query=` parsed into the models declared here (a request that does not fit them is
    answered 400, 415 or 422 before the view). It returns the response model, answered with the
    lowest status of `responses`, or `(model, status)`. Work registered with `after_commit` runs
    once the transaction has committed. The summary is the view's docstring's first line.
    """
    method, rule = route.split(" ", 1)
    success = min(responses)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def parsed(**path: str) -> Response:
            # The blueprint has authenticated the request by now: reading it comes next.
            given: dict[str, Any] = dict(path)
            if body is not None:
                given["body"] = _json_body(body, body_required)
            if query is not None:
                given["query"] = _query_args(query)
            return _run(view, given, success)

        bp.add_url_rule(rule, view_func=parsed, methods=[method])
        OPERATIONS.append(
            Operation(
                method=method.lower(),
                rule=rule,
                summary=summary or (view.__doc__ or "").strip().splitlines()[0].rstrip("."),
                responses=dict(responses),
                body=body,
                body_required=body_required,
                query=query,
                errors=tuple(errors),
                view=view.__name__,
            )
        )
        return view

    return decorate


def _run(view: View, given: dict[str, Any], success: int) -> Response:
    """Call `view` in one transaction, run its after-commit work, and answer what it returned."""
    with transaction(runtime().sessions) as session:
        waiting = session.info[_AFTER_COMMIT] = []
        answer = view(session, **given)
    for action in waiting:
        action()
    model, status = answer if isinstance(answer, tuple) else (answer, success)
    return respond(model, status)


def after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` (an enqueue) once the view's transaction has committed; never if it fails."""
    session.info[_AFTER_COMMIT].append(action)


def bound_streamed_body(limit: int) -> None:
    """Refuse a body without Content-Length (chunked) over `limit` bytes with a 413 (DESIGN 6).

    Flask refuses a declared Content-Length over MAX_CONTENT_LENGTH unread, but reads a chunked
    body only up to it and silently drops the rest, so a valid JSON start would pass for the
    whole body. Such a body is read here, up to one byte past the limit, before anything else
    sees it; what fits is handed on with its length known.
    """
    environ = request.environ
    if environ.get("CONTENT_LENGTH") or "wsgi.input_terminated" not in environ:
        return
    stream = environ["wsgi.input"]
    body = b""
    while len(body) <= limit:
        chunk = stream.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise RequestEntityTooLarge()
    # From here on it is a body of known length: werkzeug reads CONTENT_LENGTH only when the
    # transfer encoding is not chunked.
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    del environ["wsgi.input_terminated"]


def _json_body(model: type[M], required: bool = True) -> M:
    """The request body read as `model`: 415 if not JSON, 400 if malformed, 422 naming the field."""
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH this raises the 413
    if not raw.strip() and not required:
        return model()
    if not request.is_json:
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    _check_strings(data, "")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


def _query_args(model: type[M]) -> M:
    """The query string read as `model`; a bad value is a 422 naming the parameter."""
    args = request.args.to_dict()
    _check_strings(args, "")
    try:
        return model.model_validate(args)
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


def respond(model: pydantic.BaseModel, status: int = 200) -> Response:
    """Answer with a response model, built (and so checked) by the view."""
    body = model.model_dump_json(by_alias=True)
    return Response(body, status=status, mimetype="application/json")


def invalid(exc: pydantic.ValidationError) -> ApiError:
    """A 422 for the most specific of pydantic's complaints, naming its field."""
    errors = exc.errors(include_url=False)
    worst = max(errors, key=lambda e: len(e["loc"]))
    param = param_name(worst["loc"])
    message = worst["msg"]
    if worst["type"] == "extra_forbidden":
        message = "unknown field"
    elif worst["type"] == "missing":
        message = "this field is required"
    elif worst["type"] == "string_pattern_mismatch":
        message = _pattern_complaint(worst["input"]) or message
    return ApiError(422, f"{param}: {message}" if param else message, param or None)


_CONTROL = re.compile(f"[{CONTROL}]")


def _pattern_complaint(value: object) -> str | None:
    # The two patterns a client most often misses, said in words rather than as a regex.
    if isinstance(value, str) and _CONTROL.search(value):
        return "contains a control character (of C0, only tab, LF and CR are allowed)"
    if isinstance(value, str) and not value.strip():
        return "must not be blank"
    return None


# Pydantic names the member of a union that failed (`str`, `constrained-str`, `NewContact`) in the
# location; a client knows only its own field names, so those steps are left out.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def param_name(loc: tuple[int | str, ...]) -> str:
    """`("subscribers", 0, "NewContact", "phone")` -> `subscribers[0].phone`."""
    name = ""
    for step in loc:
        if isinstance(step, int):
            name += f"[{step}]"
        elif step in _UNION_TAGS or not step[:1].islower() or "[" in step or "-" in step:
            continue
        else:
            name += f".{step}" if name else step
    return name


def _check_strings(value: object, path: str) -> None:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8: both would
    # fail deep in the database driver, so they are refused here, naming the field.
    if isinstance(value, str):
        if "\x00" in value or not _encodes(value):
            raise ApiError(
                422, f"{path or 'value'}: contains a character that is not allowed", path or None
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path)
            _check_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{path}[{i}]")


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
