"""Messages: posting to threads and channels, editing, canceling, paging (DESIGN 5.2, 5.4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.channels import get_channel, get_or_create_channel
from bridge.db import get_owned, utcnow
from bridge.errors import Conflict, Forbidden, ValidationError
from bridge.events import record_message
from bridge.models import Message, MessageType, SubscriberType, Thread
from bridge.pages import page
from bridge.publishing import PUBLISHABLE_TYPES, PublishResult, publish_message
from bridge.settings import Settings
from bridge.threads import active_contact_ids, ensure_subscribed, get_thread
from bridge.twilio_client import MAX_MEDIA

MAX_TEXT_LENGTH = 16_000  # ten SMS parts of 1,600 characters
MAX_URL_LENGTH = 2048
# 2100-01-01T00:00:00Z: the end of the range publish_to_channel_at may take (epoch seconds).
MAX_PUBLISH_AT = 4_102_444_800


@dataclass(frozen=True)
class Posted:
    """A new message, and what publishing it made (None when it stays in the thread or waits)."""

    message: Message
    published: PublishResult | None


def validate_text(text: object, has_media: bool) -> str:
    """Message text: a string of at most 16,000 characters, not empty unless media go with it."""
    if text is None and has_media:
        return ""
    if not isinstance(text, str):
        raise ValidationError("text must be a string", "text")
    if not text.strip() and not has_media:
        raise ValidationError("text must not be empty", "text")
    if len(text) > MAX_TEXT_LENGTH:
        raise ValidationError(f"text must be at most {MAX_TEXT_LENGTH} characters", "text")
    return text


def validate_media_urls(media_urls: object) -> list[str]:
    """At most ten `https` URLs."""
    if media_urls is None:
        return []
    if not isinstance(media_urls, list):
        raise ValidationError("media_urls must be a list of https URLs", "media_urls")
    if len(media_urls) > MAX_MEDIA:
        raise ValidationError(f"media_urls takes at most {MAX_MEDIA} URLs", "media_urls")
    for i, url in enumerate(media_urls):
        if (
            not isinstance(url, str)
            or not url.startswith("https://")
            or len(url) > MAX_URL_LENGTH
            or len(url) <= len("https://")
            or any(ch.isspace() for ch in url)
        ):
            raise ValidationError("each media URL must be an https URL", f"media_urls[{i}]")
    return list(media_urls)


def validate_type(kind: object) -> MessageType:
    """A type a client may post: `text`, `tracking_update` or `pickup_reminder`."""
    if kind is None:
        return MessageType.TEXT
    if not isinstance(kind, str) or kind not in PUBLISHABLE_TYPES:
        raise ValidationError("type must be one of text, tracking_update, pickup_reminder", "type")
    return MessageType(kind)


def validate_publish_at(value: object) -> datetime | None:
    """Epoch seconds from 0 to before 2100; None, or a time not in the future, publishes at once."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            "publish_to_channel_at must be epoch seconds", "publish_to_channel_at"
        )
    # Fixed bounds, not ones relative to now, so the API description can state them exactly; the
    # upper one still refuses a time given in milliseconds.
    if not 0 <= value < MAX_PUBLISH_AT:
        raise ValidationError(
            "publish_to_channel_at must be epoch seconds before 2100", "publish_to_channel_at"
        )
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class Draft:
    """A new message's content, each part checked: text, type, media, and when it publishes."""

    text: str
    type: MessageType
    media_urls: list[str]
    publish_at: datetime | None

    @classmethod
    def of(
        cls,
        text: object,
        type: object = None,
        media_urls: object = None,
        publish_to_channel_at: object = None,
    ) -> Draft:
        """Check what a client sent (ValidationError names the field) and keep it."""
        kind = validate_type(type)
        media = validate_media_urls(media_urls)
        body = validate_text(text, bool(media))
        return cls(body, kind, media, validate_publish_at(publish_to_channel_at))

    def message(
        self, actor: Actor, now: datetime, thread_id: str | None, channel_id: str | None
    ) -> Message:
        """The message `actor` posts with this content, in a thread and/or a channel."""
        return Message.new(
            actor,
            self.text,
            now,
            thread_id=thread_id,
            channel_id=channel_id,
            type=self.type,
            media_urls=self.media_urls,
            publish_to_channel_at=self.publish_at,
        )

    def is_due(self, now: datetime) -> bool:
        """Whether it publishes now rather than later."""
        return self.publish_at is None or self.publish_at <= now


def post_message(
    session: Session, settings: Settings, actor: Actor, thread_id: str, draft: Draft
) -> Posted:
    """Post a message to a thread; publish it to the channel of its contacts now or when due."""
    thread = get_thread(session, actor.organization_id, thread_id)
    ensure_subscribed(session, thread, actor)
    channel_id = None
    # The channel is the thread's whole contact set; publishing leaves the author out.
    contacts = active_contact_ids(session, thread)
    if contacts:
        channel, _ = get_or_create_channel(session, actor.organization_id, contacts)
        channel_id = channel.id
    now = utcnow()
    message = draft.message(actor, now, thread.id, channel_id)
    thread.updated_at = now
    due = channel_id is not None and draft.is_due(now)
    return _store(session, settings, message, now, publish=due)


def post_channel_message(
    session: Session, settings: Settings, actor: Actor, channel_id: str, draft: Draft
) -> Posted:
    """Post a message straight to a channel, with no thread."""
    channel = get_channel(session, actor.organization_id, channel_id)
    now = utcnow()
    due = draft.is_due(now)
    if not due:
        channel.updated_at = now  # publishing moves it otherwise
    return _store(session, settings, draft.message(actor, now, None, channel.id), now, due)


def _store(
    session: Session, settings: Settings, message: Message, now: datetime, publish: bool
) -> Posted:
    # A posted message: added, published when it goes now, and reported as message.created.
    session.add(message)
    published = publish_message(session, settings, message, now) if publish else None
    record_message(session, "message.created", message)
    session.flush()
    return Posted(message, published)


def get_message(session: Session, organization_id: str, message_id: str) -> Message:
    """The organization's message, or NotFound."""
    return get_owned(session, Message, organization_id, message_id)


def edit_message(
    session: Session, actor: Actor, message_id: str, fields: dict[str, Any]
) -> Message:
    """Change a message's text (and media); only its author may."""
    message = get_message(session, actor.organization_id, message_id)
    if message.subscriber_id != actor.subscriber_id:
        raise Forbidden("only the author of a message can edit it", "id")
    if message.type == MessageType.META or message.canceled_at is not None:
        raise Conflict("this message cannot be edited", "id")
    media = message.media_urls or []
    if "media_urls" in fields:
        media = validate_media_urls(fields["media_urls"])
    text = fields.get("text", message.text)
    if not media and (text is None or (isinstance(text, str) and not text.strip())):
        # Blank text is fine beside media: the same edit suits one message and not another, so
        # it clashes with the message's state (409) rather than being a malformed request.
        raise Conflict("the message would be left with neither text nor media", "text")
    text = validate_text(text, bool(media))
    now = utcnow()
    message.text = text
    message.media_urls = media
    message.edited_at = now
    _touch(session, message, now)
    record_message(session, "message.updated", message)
    return message


def cancel_message(session: Session, actor: Actor, message_id: str) -> Message:
    """Cancel a message that has not been published; a published one is a Conflict."""
    message = get_message(session, actor.organization_id, message_id)
    # Lock the row (PostgreSQL) so a concurrent publish_due_messages cannot publish it while we
    # cancel; that one locks with SKIP LOCKED, so it passes this message by and finds it canceled.
    session.refresh(message, with_for_update=True)
    if message.subscriber_id != actor.subscriber_id and actor.type != SubscriberType.API_KEY:
        raise Forbidden("only the author or the organization can cancel a message", "id")
    if message.published_at is not None:
        raise Conflict("the message has already been published", "id")
    if message.type == MessageType.META:
        raise Conflict("meta messages cannot be canceled", "id")
    if message.canceled_at is None:
        now = utcnow()
        message.canceled_at = now
        _touch(session, message, now)
        record_message(session, "message.updated", message)
    return message


def _touch(session: Session, message: Message, now: datetime) -> None:
    if message.thread_id:
        thread = session.get(Thread, (message.organization_id, message.thread_id))
        if thread is not None:
            thread.updated_at = now


def page_messages(
    session: Session,
    organization_id: str,
    *,
    thread_id: str | None = None,
    channel_id: str | None = None,
    pending: bool = False,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[Message], bool]:
    """A page of a thread's (or channel's published, or `pending` ones) messages, newest first,
    older than `before`."""
    scope = [Message.organization_id == organization_id]
    if thread_id is not None:
        scope += [Message.thread_id == thread_id, Message.canceled_at.is_(None)]
    if channel_id is not None:
        scope.append(Message.channel_id == channel_id)
        if pending:
            scope += [Message.published_at.is_(None), Message.canceled_at.is_(None)]
        else:
            scope.append(Message.published_at.is_not(None))
    return page(session, Message, scope, limit, before, "a message")
