"""The API's request bodies and query strings as pydantic models: they validate and document.

Responses are the models of `bridge.serialize` (DESIGN section 4), defined there once, and the
error body is `webhooks.errors.Error`. Request models are strict (no "5" for 5) and forbid unknown
fields, so a typo in a field name is a 422 instead of an ignored value. The domain functions keep
the final word on every rule; the constraints here repeat the ones a schema can express, so the
OpenAPI tells the truth about them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from bridge.messages import MAX_MEDIA, MAX_PUBLISH_AT, MAX_TEXT_LENGTH, MAX_URL_LENGTH
from bridge.pages import MAX_PAGE
from bridge.serialize._records import InboundState

PostableKind = Literal["text", "tracking_update", "pickup_reminder"]

# DESIGN section 3: 1 to 128 letters, digits and `_ - . :` (bridge.ids.RESOURCE_ID decides).
RESOURCE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

# Patterns are written for every regex engine that reads them (pydantic's Rust one, the JSON
# Schema validators', Python's for generated clients and tests): explicit classes, no \s or \d.
# DESIGN 6: text fields refuse the C0 control characters but tab, LF and CR.
CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f"
Text = Annotated[str, Field(pattern=rf"^[^{CONTROL}]*$")]
# What str.strip() removes, less the control characters refused anyway: a "blank" string is
# made of these only, in the server's eyes and in the description's alike.
SPACE = r"\t\n\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"^[{SPACE}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$"

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]
Label = Annotated[Text, Field(max_length=128)]
MessageText = Annotated[Text, Field(max_length=MAX_TEXT_LENGTH)]
# A number is checked by libphonenumber, which no pattern can state: `format: phone` names it.
Phone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[0-9+()./ -]+$",
        description=(
            "A phone number in E.164 (`+14155550123`) or in the national format of the server's "
            "DEFAULT_REGION (`(415) 555-0123`), one libphonenumber finds valid."
        ),
        examples=["+14155550123"],
        json_schema_extra={"format": "phone"},
    ),
]
Email = Annotated[
    str,
    Field(min_length=3, max_length=320, pattern=rf"^[^{CONTROL}{SPACE}@]+@[^{CONTROL}{SPACE}@]+$"),
]
# An https URL with a host name (no user, no IP literal), as Twilio fetches media.
MediaUrl = Annotated[
    str,
    Field(
        min_length=9,
        max_length=MAX_URL_LENGTH,
        pattern=rf"^https://[A-Za-z0-9.-]+(:[0-9]{{1,5}})?([/?#][^{CONTROL}{SPACE}]*)?$",
    ),
]
SubscriberId = Annotated[
    str, Field(min_length=5, max_length=64, pattern=r"^(usr|cnt|org)_[A-Za-z0-9]+$")
]
PublishAt = Annotated[
    int,
    Field(
        ge=0,
        lt=MAX_PUBLISH_AT,
        description="Epoch seconds, before 2100; a time not in the future publishes at once.",
    ),
    # JSON has one number type: 1700000000.0 is an integer to it, and so to the description.
    BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_null(value: object) -> object:
    # For fields that may be left out but not sent as null.
    if value is None:
        raise PydanticCustomError("not_null", "must not be null: leave the field out instead")
    return value


def _no_default(schema: dict[str, Any]) -> None:
    # The default of a field that may only be left out is "absent", not the null pydantic shows.
    schema.pop("default", None)


# Requests ---------------------------------------------------------------------------------------


class Empty(_Request):
    """No fields: the request needs no body, and an empty object is accepted."""


class OrganizationUpdate(_Request):
    """Change the organization's name or HELP text."""

    name: Name | None = None
    help_text: Annotated[Text, Field(max_length=1600)] | None = None


class UserCreate(_Request):
    """A new member."""

    name: Name
    email: Email | None = None
    phone: Phone | None = None


class ContactCreate(_Request):
    """Find or create the contact with this phone number."""

    phone: Phone
    name: Name | None = None
    email: Email | None = None


class NewContact(_Request):
    """A contact to find or create by phone, as a subscriber."""

    type: Literal["contact"]
    phone: Phone
    name: Name | None = None
    email: Email | None = None


SubscriberSpec = SubscriberId | NewContact


class ThreadCreate(_Request):
    """Create the thread about a resource (idempotent)."""

    resource_id: Annotated[str, Field(pattern=RESOURCE_PATTERN, examples=["order-1042"])]
    name: Name | None = None
    location_id: Label | None = None
    subscribers: Annotated[list[SubscriberSpec], Field(max_length=100)] = []


class ThreadUpdate(_Request):
    """Rename a thread or move it to another location."""

    name: Name | None = None
    location_id: Label | None = None


class SubscriberAdd(_Request):
    """Subscribe a user, contact or the organization; an archived one comes back."""

    subscriber: SubscriberSpec


MediaUrls = Annotated[list[MediaUrl], Field(max_length=MAX_MEDIA)]


class MessageCreate(_Request):
    """A message to post; it is published now, or at `publish_to_channel_at`.

    It needs text that is not blank, or media (then the text may be blank or left out).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["text"], "properties": {"text": {"pattern": NOT_BLANK}}},
                {"required": ["media_urls"], "properties": {"media_urls": {"minItems": 1}}},
            ]
        }
    )

    # Absent, never null: a field left out is None here, an explicit null is refused (422).
    text: MessageText | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    type: PostableKind | None = None
    media_urls: MediaUrls | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_no_default
    )
    publish_to_channel_at: PublishAt | None = None

    _no_null = field_validator("text", "media_urls", mode="before")(_not_null)


class MessageUpdate(_Request):
    """New text or media for a message: only its author may edit it.

    Blank text needs media beside it, those of the request or those the message keeps: without
    them the edit clashes with the message (409).
    """

    text: MessageText | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    media_urls: MediaUrls | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_no_default
    )

    _no_null = field_validator("text", "media_urls", mode="before")(_not_null)


class ApiKeyCreate(_Request):
    """A new API key, with a label to tell it apart (e.g. where it is deployed)."""

    label: Annotated[Text, Field(max_length=200)] | None = None


# Query strings (lax: every value arrives as a string) -------------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description="Page size.")]


def _cursor(prefix: str, what: str) -> Any:
    # The `before` of a list whose objects' ids start with `prefix`.
    return Field(
        pattern=rf"^{prefix}_[A-Za-z0-9]{{1,60}}$",
        description=f"The id of {what} in this list: the page starts after it (404 if none).",
    )


MessageCursor = Annotated[str, _cursor("msg", "a message")]
ChannelCursor = Annotated[str, _cursor("chnl", "a channel")]
InboundCursor = Annotated[str, _cursor("in", "an inbound SMS")]
EndpointCursor = Annotated[str, _cursor("we", "a webhook endpoint")]
AttemptCursor = Annotated[str, _cursor("wha", "a webhook attempt")]
EventCursor = Annotated[str, _cursor("evt", "an event")]


class PageQuery(_Query):
    limit: Limit = 50
    before: MessageCursor | None = None


class ChannelMessagesQuery(PageQuery):
    pending: bool = Field(
        False,
        description="true: the messages waiting for their publish_to_channel_at (the channel "
        "shows only the 150 due first) instead of the published ones.",
    )


class PhoneQuery(_Query):
    phone: Phone


class ChannelQuery(PageQuery):
    phone: Phone
    before: ChannelCursor | None = None


class InboundQuery(PageQuery):
    status: InboundState | None = None
    before: InboundCursor | None = None
