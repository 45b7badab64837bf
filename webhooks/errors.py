"""One JSON error handler: `{"error": {"type", "message", "param"}}` for every failure."""

from __future__ import annotations

import logging
from typing import Literal

from flask import Blueprint, Flask, Response
from pydantic import Field
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from bridge import serialize
from bridge.errors import BridgeError, Conflict, Forbidden, NotFound, ValidationError

log = logging.getLogger(__name__)

ErrorType = Literal[
    "invalid_request", "authentication_error", "permission_error", "not_found",
    "method_not_allowed", "conflict", "payload_too_large", "unsupported_media_type",
    "validation_error", "rate_limited", "service_unavailable", "internal_error", "error",
]  # fmt: skip

_TYPES: dict[int, ErrorType] = {
    400: "invalid_request",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error a view raises to answer with a given status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}


class ErrorDetail(serialize.Response):
    type: ErrorType = Field(description="One per status; `error` for a status not listed here.")
    message: str
    param: str | None = Field(description="The field at fault, when there is one.")


class Error(serialize.Response):
    """Every error answers with this body."""

    error: ErrorDetail


def error_response(status: int, message: str, param: str | None = None) -> Response:
    """The JSON body every error answers with."""
    body = Error(error=ErrorDetail(type=_TYPES.get(status, "error"), message=message, param=param))
    return Response(body.model_dump_json(), status=status, mimetype="application/json")


_DOMAIN_STATUS: dict[type[BridgeError], int] = {
    ValidationError: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
}


def register(app: Flask) -> None:
    """Install the handlers on the app."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.message, exc.param)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(BridgeError)
    def _domain_error(exc: BridgeError) -> Response:
        for kind, status in _DOMAIN_STATUS.items():
            if isinstance(exc, kind):
                return error_response(
                    status, getattr(exc, "message", str(exc)), getattr(exc, "param", None)
                )
        log.exception("unhandled domain error")
        return error_response(500, "internal error")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            413: "the request body is larger than 64 KiB",
            405: "method not allowed",
            404: "not found",
            415: "the body must be JSON (Content-Type: application/json)",
        }
        response = error_response(status, messages.get(status, exc.description or exc.name))
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal error")


def register_database_errors(bp: Blueprint) -> None:
    """For the REST API only: a race lost in the database is a 409, a database away a 503.

    Not app-wide: Twilio retries its webhooks on 5xx only, so there a lost race must not become a
    4xx that drops the message.
    """

    @bp.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> Response:
        # Domain functions resolve the races they know of; one they do not is logged to be fixed.
        log.warning("unresolved write conflict: %s", type(exc.orig).__name__)
        return error_response(409, "the request clashed with a concurrent one; try again")

    @bp.errorhandler(OperationalError)
    def _database_away(exc: OperationalError) -> Response:
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return error_response(503, "the database is unavailable; try again shortly")
