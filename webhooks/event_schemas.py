"""Request and response bodies of the events API (DESIGN 5.8, section 6), with examples.

Kept apart from `webhooks.schemas` but built on its bases, so they validate and describe
themselves the same way: strict requests, responses that forbid fields they do not declare.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from webhooks.schemas import Epoch, PageQuery, _Request, _Response

EventType = Literal[
    "message.created",
    "message.updated",
    "delivery.updated",
    "inbound.received",
    "contact.opted_out",
    "contact.opted_in",
]
Subscription = EventType | Literal["*"]
EndpointUrl = Annotated[
    str,
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
Description = Annotated[str, Field(max_length=500)]

_ENDPOINT_EXAMPLE: dict[str, Any] = {
    "object": "webhook_endpoint",
    "id": "we_5f0c2b9a1d3e4f5a6b7c8d9e",
    "url": "https://app.example.com/bridge/events",
    "events": ["message.created", "delivery.updated"],
    "description": "Orders app",
    "enabled": True,
    "disabled_reason": None,
    "created_at": 1764547200,
    "updated_at": 1764547200,
}
_SECRET_EXAMPLE = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
_EVENT_EXAMPLE: dict[str, Any] = {
    "object": "event",
    "id": "evt_1a2b3c4d5e6f7a8b9c0d1e2f",
    "type": "contact.opted_out",
    "created_at": 1764547260,
    "organization_id": "org_0a1b2c3d4e5f6a7b8c9d0e1f",
    "data": {
        "object": {
            "object": "contact",
            "id": "cnt_9f8e7d6c5b4a3f2e1d0c9b8a",
            "organization_id": "org_0a1b2c3d4e5f6a7b8c9d0e1f",
            "name": "Cora Contact",
            "email": None,
            "phone": "+14155550123",
            "phone_hash": "3b0c…",
            "opted_out": True,
            "created_at": 1764540000,
        }
    },
}
_ATTEMPT_EXAMPLE: dict[str, Any] = {
    "object": "webhook_attempt",
    "id": "wha_0f1e2d3c4b5a69788796a5b4",
    "endpoint_id": "we_5f0c2b9a1d3e4f5a6b7c8d9e",
    "event_id": "evt_1a2b3c4d5e6f7a8b9c0d1e2f",
    "attempted_at": 1764547261,
    "succeeded": False,
    "status_code": 503,
    "error": "HTTP 503",
    "duration_ms": 84,
    "next_retry_at": 1764547266,
    "response_body": "Service Unavailable",
}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={"examples": list(examples)}
    )


class WebhookEndpoint(_Response):
    """A URL of the organization's application that receives events, signed with its secret."""

    model_config = _examples(_ENDPOINT_EXAMPLE)

    object: Literal["webhook_endpoint"]
    id: str
    url: str
    events: list[Subscription]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled, when it was.")
    created_at: Epoch
    updated_at: Epoch


class WebhookEndpointWithSecret(WebhookEndpoint):
    """An endpoint just created or rotated, with its signing secret: shown this once only."""

    model_config = _examples({**_ENDPOINT_EXAMPLE, "secret": _SECRET_EXAMPLE})

    secret: str = Field(
        description="`whsec_` + base64 of 24 random bytes; verify with Standard Webhooks."
    )


class WebhookEndpointDeleted(_Response):
    """An endpoint removed, with what it still had to receive."""

    model_config = _examples({"object": "webhook_endpoint", "id": _ENDPOINT_EXAMPLE["id"]})

    object: Literal["webhook_endpoint"]
    id: str
    deleted: Literal[True]


class WebhookEndpointList(_Response):
    """The organization's endpoints, newest first."""

    object: Literal["list"]
    data: list[WebhookEndpoint]
    has_more: bool


class WebhookAttempt(_Response):
    """One POST of an event to an endpoint."""

    model_config = _examples(_ATTEMPT_EXAMPLE)

    object: Literal["webhook_attempt"]
    id: str
    endpoint_id: str
    event_id: str
    attempted_at: Epoch
    succeeded: bool
    status_code: int | None = Field(description="The HTTP status, when an answer came.")
    error: str | None
    duration_ms: int
    next_retry_at: Epoch | None
    response_body: str | None = Field(description="At most the first 1 KiB of the answer.")


class WebhookAttemptList(_Response):
    """An endpoint's attempts, newest first."""

    object: Literal["list"]
    data: list[WebhookAttempt]
    has_more: bool


class EventData(_Response):
    object: dict[str, Any] = Field(description="The object as the API returned it then.")


class Event(_Response):
    """Something that happened; endpoints receive exactly this as the POST body."""

    model_config = _examples(_EVENT_EXAMPLE)

    object: Literal["event"]
    id: str
    type: EventType
    created_at: Epoch
    organization_id: str
    data: EventData


class EventList(_Response):
    """Events, newest first."""

    object: Literal["list"]
    data: list[Event]
    has_more: bool


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


class EventQuery(PageQuery):
    type: EventType | None = None
