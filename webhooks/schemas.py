"""The API's request bodies and query strings as pydantic models: they validate and document.

Responses are the models of `bridge.serialize` (DESIGN section 4), defined there once, and the
error body is `webhooks.errors.Error`. Request models are strict (no "5" for 5) and forbid unknown
fields, so a typo in a field name is a 422 instead of an ignored value. The domain functions keep
the final word on every rule; the constraints here repeat the ones a schema can express, so the
OpenAPI tells the truth about them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bridge.messages import MAX_MEDIA, MAX_TEXT_LENGTH, MAX_URL_LENGTH
from bridge.pages import MAX_PAGE
from bridge.serialize import Epoch

PostableKind = Literal["text", "tracking_update", "pickup_reminder"]
InboundState = Literal["received", "matched", "unmatched", "keyword"]

# DESIGN section 3: 1 to 128 letters, digits and `_ - . :` (bridge.ids.RESOURCE_ID decides).
RESOURCE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

# C0 control characters but tab, LF and CR (DESIGN 6): they break what the text is shown in (TwiML,
# terminals, CSV) and no person types them. The JSON schema says so as a pattern; the check itself
# is the validator, whose message says what is wrong.
_NO_CONTROL = "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]"


def _refuse_control_characters(value: str) -> str:
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in value):
        raise ValueError("must not contain control characters other than tab, CR and LF")
    return value


def _text(shown: str = f"^{_NO_CONTROL}*$", **constraints: Any) -> Any:
    """A text field of a request: control characters refused, and these constraints.

    `shown` is the pattern the schema shows: the one of `constraints` (if any) with the rule.
    """
    return Annotated[
        str,
        Field(json_schema_extra={"pattern": shown}, **constraints),
        AfterValidator(_refuse_control_characters),
    ]


# Every text the API takes is one of these.
Name = _text(min_length=1, max_length=200)
Label = _text(max_length=128)
Phone = _text(
    min_length=1,
    max_length=64,
    description="E.164, or the national format of DEFAULT_REGION.",
    examples=["+14155550123"],
)
Email = _text(f"^{_NO_CONTROL}*@{_NO_CONTROL}*$", min_length=3, max_length=320, pattern=r"@")
HelpText = _text(max_length=1600)
MessageText = _text(max_length=MAX_TEXT_LENGTH)
KeyLabel = _text(max_length=200)
MediaUrl = _text(r"^https://[^\s\x00-\x1f]+$", max_length=MAX_URL_LENGTH, pattern=r"^https://\S+$")
SubscriberId = Annotated[
    str, Field(min_length=5, max_length=64, pattern=r"^(usr|cnt|org)_[A-Za-z0-9]+$")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# Requests ---------------------------------------------------------------------------------------


class Empty(_Request):
    """No fields: the request needs no body, and an empty object is accepted."""


class OrganizationUpdate(_Request):
    """Change the organization's name or HELP text."""

    name: Name | None = None
    help_text: HelpText | None = None


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


class MessageCreate(_Request):
    """A message to post; it is published now, or at `publish_to_channel_at`."""

    text: MessageText | None = None
    type: PostableKind | None = None
    media_urls: Annotated[list[MediaUrl], Field(max_length=MAX_MEDIA)] | None = None
    publish_to_channel_at: Epoch | None = None


class MessageUpdate(_Request):
    """New text (and media) for a message: only its author may edit it."""

    text: MessageText | None = None
    media_urls: Annotated[list[MediaUrl], Field(max_length=MAX_MEDIA)] | None = None


class ApiKeyCreate(_Request):
    """A new API key, with a label to tell it apart (e.g. where it is deployed)."""

    label: KeyLabel | None = None


# Query strings (lax: every value arrives as a string) -------------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description="Page size.")]
Cursor = Annotated[
    str, Field(min_length=1, max_length=64, description="Return objects older than this id.")
]


class PageQuery(_Query):
    limit: Limit = 50
    before: Cursor | None = None


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


class InboundQuery(PageQuery):
    status: InboundState | None = None
