"""Request bodies and query strings of the events API (DESIGN 5.8, section 6), with examples.

Kept apart from `webhooks.schemas` but built on its bases, so they validate and describe
themselves the same way: strict, and no field beyond the declared ones. The responses are the
models of `bridge.serialize` (`WebhookEndpoint`, `WebhookAttempt`, `Event` and their lists).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from bridge.serialize import EventType, Subscription
from webhooks.schemas import AttemptCursor, EndpointCursor, EventCursor, PageQuery, Text, _Request

EndpointUrl = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=2048,
        description="https (http only to a loopback address outside production).",
        examples=["https://app.example.com/bridge/events"],
    ),
]
Subscriptions = Annotated[
    list[Subscription],
    Field(
        min_length=1,
        max_length=7,
        description='Event types to receive, or ["*"] for all.',
        examples=[["message.created", "delivery.updated"]],
    ),
]
Description = Annotated[Text, Field(max_length=500)]


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

    url: EndpointUrl | None = None
    events: Subscriptions | None = None
    description: Description | None = None
    enabled: bool | None = None


class EndpointQuery(PageQuery):
    before: EndpointCursor | None = None


class AttemptQuery(PageQuery):
    before: AttemptCursor | None = None


class EventQuery(PageQuery):
    type: EventType | None = None
    before: EventCursor | None = None
