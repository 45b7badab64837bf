"""Request bodies and query strings of the events API (DESIGN 5.8, section 6), with examples.

Kept apart from `webhooks.schemas` but built on its bases, so they validate and describe
themselves the same way: strict, and no field beyond the declared ones. The responses are the
models of `bridge.serialize` (`WebhookEndpoint`, `WebhookAttempt`, `Event` and their lists).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from bridge.serialize import EventType, Subscription
from bridge.webhook_endpoints import MAX_DESCRIPTION_LENGTH, MAX_URL_LENGTH
from webhooks.schemas import (
    CONTROL,
    SPACE,
    AttemptCursor,
    EndpointCursor,
    EventCursor,
    PageQuery,
    Text,
    _no_default,
    _not_null,
    _Request,
)

# A port from 0 to 65535, as urllib reads it.
_PORT = r"([0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# https to a named host, or http to this machine (DESIGN 5.8; production refuses http anyway, and
# resolves the host to refuse private addresses, which no pattern can say).
_ENDPOINT_URL = (
    rf"^(https://[A-Za-z0-9.-]+|http://(localhost|127\.0\.0\.1|\[::1\]))(:{_PORT})?"
    rf"([/?#][^{CONTROL}{SPACE}]*)?$"
)


def _chosen(items: list[str]) -> list[str]:
    # Item by item pydantic checks each name; the list as a whole is checked here.
    if len(set(items)) != len(items):
        raise PydanticCustomError("unique", "must not name an event type twice")
    if "*" in items and len(items) > 1:
        raise PydanticCustomError("all_alone", "'*' already names every type; give it alone")
    return items


EndpointUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        pattern=_ENDPOINT_URL,
        description="https (http only to a loopback address outside production).",
        examples=["https://app.example.com/bridge/events"],
    ),
]
Subscriptions = Annotated[
    list[Subscription],
    Field(
        min_length=1,
        max_length=6,
        description='Event types to receive (each once), or ["*"] alone for all.',
        examples=[["message.created", "delivery.updated"]],
        json_schema_extra={
            "uniqueItems": True,
            "anyOf": [{"maxItems": 1}, {"not": {"contains": {"const": "*"}}}],
        },
    ),
    AfterValidator(_chosen),
]
Description = Annotated[Text, Field(max_length=MAX_DESCRIPTION_LENGTH)]


class WebhookEndpointCreate(_Request):
    """A new endpoint; its secret is in the answer, and only there."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "url": "https://app.example.com/bridge/events",
                    "events": ["message.created", "delivery.updated"],
                    "description": "Orders app",
                }
            ]
        },
    )

    url: EndpointUrl
    events: Subscriptions
    description: Description | None = None
    enabled: bool = True


class WebhookEndpointUpdate(_Request):
    """Change an endpoint; `enabled: true` re-enables one that was disabled."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"enabled": True}]}
    )

    url: EndpointUrl | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    events: Subscriptions | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_no_default
    )
    description: Description | None = None
    enabled: bool | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)

    _no_null = field_validator("url", "events", "enabled", mode="before")(_not_null)


class EndpointQuery(PageQuery):
    before: EndpointCursor | None = None


class AttemptQuery(PageQuery):
    before: AttemptCursor | None = None


class EventQuery(PageQuery):
    type: EventType | None = None
    before: EventCursor | None = None
