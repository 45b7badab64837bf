"""The JSON of each model, exactly as DESIGN section 4 lists it: the seed's fields and additions."""

from __future__ import annotations

from typing import Any

from bridge.channels import ChannelView
from bridge.db import epoch
from bridge.models import (
    ChannelSubscriber,
    Contact,
    Delivery,
    InboundSms,
    Message,
    Organization,
    SubscriberType,
    ThreadSubscriber,
    User,
)
from bridge.subscribers import Profile
from bridge.threads import ThreadView


def message_json(message: Message, name: str | None, resource_id: str | None) -> dict[str, Any]:
    """A Message: `name` is its thread's name (or its channel's, for a channel-only message)."""
    return {
        "object": "message",
        "id": message.id,
        "thread_id": message.thread_id,
        "channel_id": message.channel_id,
        "resource_id": resource_id,
        "subscriber_id": message.subscriber_id,
        "text": message.text,
        "type": message.type,
        "event": message.event,
        "media_urls": list(message.media_urls or []),
        "reactions": list(message.reactions or []),
        "name": name,
        "created_at": epoch(message.created_at),
        "edited_at": epoch(message.edited_at),
        "publish_to_channel_at": epoch(message.publish_to_channel_at),
        "published_at": epoch(message.published_at),
    }


def subscriber_json(
    row: ThreadSubscriber | ChannelSubscriber | None, profile: Profile | None, subscriber_id: str
) -> dict[str, Any]:
    """A Subscriber; `viewed_at` is always null for contacts."""
    kind = profile.type if profile else (row.type if row else None)
    viewed = getattr(row, "viewed_at", None) if kind != SubscriberType.CONTACT.value else None
    return {
        "id": subscriber_id,
        "type": kind,
        "name": profile.name if profile else None,
        "email": profile.email if profile else None,
        "phone": profile.phone if profile else None,
        "is_archived": bool(getattr(row, "is_archived", False)),
        "viewed_at": epoch(viewed),
    }


def thread_json(view: ThreadView) -> dict[str, Any]:
    """A Thread with its recent messages, subscribers and unread state."""
    thread = view.thread
    return {
        "object": "thread",
        "id": thread.id,
        "resource_id": thread.resource_id,
        "organization_id": thread.organization_id,
        "location_id": thread.location_id,
        "name": thread.name,
        "recent_messages": [
            message_json(m, thread.name, thread.resource_id) for m in view.recent_messages
        ],
        "has_more": view.has_more,
        "subscriber_ids": [r.subscriber_id for r in view.subscribers if not r.is_archived],
        "subscribers": [
            subscriber_json(r, view.profiles.get(r.subscriber_id), r.subscriber_id)
            for r in view.subscribers
        ],
        "unread_by": view.unread_by,
        "updated_at": epoch(thread.updated_at),
    }


def channel_message_json(view: ChannelView, message: Message) -> dict[str, Any]:
    """A Message as a channel shows it, named after its thread or else the channel."""
    if message.thread_id:
        return message_json(
            message,
            view.thread_names.get(message.thread_id),
            view.thread_resources.get(message.thread_id),
        )
    return message_json(message, view.channel.name, None)


def channel_json(view: ChannelView) -> dict[str, Any]:
    """A Channel with its subscribers, hashes, publishers, recent and pending messages."""
    channel = view.channel
    pending_times = [
        m.publish_to_channel_at for m in view.pending_messages if m.publish_to_channel_at
    ]
    return {
        "object": "channel",
        "id": channel.id,
        "name": channel.name,
        "organization_id": channel.organization_id,
        "recent_messages": [channel_message_json(view, m) for m in view.recent_messages],
        "has_more": view.has_more,
        "pending_messages": [channel_message_json(view, m) for m in view.pending_messages],
        "phone_hashes": view.phone_hashes,
        "publisher_ids": view.publisher_ids,
        "scheduled_publish_at": epoch(min(pending_times)) if pending_times else None,
        "subscriber_hash": channel.subscriber_hash,
        "subscriber_ids": [r.subscriber_id for r in view.subscribers],
        "subscribers": [
            subscriber_json(r, view.profiles.get(r.subscriber_id), r.subscriber_id)
            for r in view.subscribers
        ],
        "updated_at": epoch(channel.updated_at),
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """A Delivery: one SMS part to one recipient."""
    return {
        "object": "delivery",
        "id": delivery.id,
        "message_id": delivery.message_id,
        "subscriber_id": delivery.subscriber_id,
        "to": delivery.to_phone,
        "from": delivery.from_phone or delivery.messaging_service_sid,
        "status": delivery.status,
        "error_code": delivery.error_code,
        "error_message": delivery.error_message,
        "twilio_sid": delivery.twilio_sid,
        "part": delivery.part,
        "parts": delivery.parts,
        "segments": delivery.segments,
        "attempts": delivery.attempts,
        "created_at": epoch(delivery.created_at),
        "updated_at": epoch(delivery.updated_at),
    }


def inbound_json(inbound: InboundSms) -> dict[str, Any]:
    """An inbound SMS record, matched or not."""
    return {
        "object": "inbound_sms",
        "id": inbound.id,
        "message_sid": inbound.message_sid,
        "from": inbound.from_phone,
        "to": inbound.to_phone,
        "status": inbound.status,
        "keyword": inbound.keyword,
        "message_id": inbound.message_id,
        "channel_id": inbound.channel_id,
        "received_at": epoch(inbound.received_at),
    }


def user_json(user: User) -> dict[str, Any]:
    """A user of the organization."""
    return {
        "object": "user",
        "id": user.id,
        "organization_id": user.organization_id,
        "name": user.name,
        "email": user.email,
        "phone": user.phone,
        "created_at": epoch(user.created_at),
    }


def contact_json(contact: Contact, opted_out: bool) -> dict[str, Any]:
    """A contact of the organization, with whether it has opted out of SMS."""
    return {
        "object": "contact",
        "id": contact.id,
        "organization_id": contact.organization_id,
        "name": contact.name,
        "email": contact.email,
        "phone": contact.phone,
        "phone_hash": contact.phone_hash,
        "opted_out": opted_out,
        "created_at": epoch(contact.created_at),
    }


def organization_json(org: Organization, senders: list[str], help_text: str) -> dict[str, Any]:
    """The organization, its senders and its subscriber record."""
    return {
        "object": "organization",
        "id": org.id,
        "name": org.name,
        "senders": senders,
        "messaging_service_sid": org.messaging_service_sid,
        "help_text": help_text,
        "subscriber": subscriber_json(
            None, Profile(org.id, SubscriberType.API_KEY.value, org.name, None, None), org.id
        ),
        "created_at": epoch(org.created_at),
    }
