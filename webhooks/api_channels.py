"""Channels, the messages posted straight to them, and messages by id (nested in /v1)."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from bridge import channels, deliveries, messages
from bridge.db import transaction
from bridge.errors import ValidationError
from bridge.phones import normalize_phone, phone_hash
from bridge.serialize import channel_json, delivery_json
from webhooks.api_threads import message_page, post_and_enqueue
from webhooks.auth import authenticate
from webhooks.context import runtime
from webhooks.http import json_body, operation, query_args, respond, respond_list
from webhooks.present import message_data
from webhooks.schemas import (
    Channel,
    ChannelList,
    ChannelQuery,
    DeliveryList,
    Message,
    MessageCreate,
    MessageList,
    MessageUpdate,
    PageQuery,
)

bp = Blueprint("channels", __name__)


@operation(
    bp,
    "GET",
    "/channels",
    summary="The channels a phone number is in, most recently updated first",
    query=ChannelQuery,
    responses={200: ChannelList},
)
def find_channels() -> ResponseReturnValue:
    actor = authenticate()
    args = query_args(ChannelQuery)
    rt = runtime()
    digest = phone_hash(
        normalize_phone(args.phone, rt.settings.default_region), rt.settings.phone_hash_key
    )
    with transaction(rt.sessions) as session:
        found = channels.channels_for_phone_hash(session, actor.organization_id, digest)
        ids = [c.id for c in found]
        if args.before is not None:
            if args.before not in ids:
                raise ValidationError("before must be the id of a channel in this list", "before")
            ids = ids[ids.index(args.before) + 1 :]
        page = ids[: args.limit]
        data = [
            channel_json(channels.load_channel_view(session, actor.organization_id, cid))
            for cid in page
        ]
    return respond_list(ChannelList, data, len(ids) > len(page))


@operation(
    bp,
    "GET",
    "/channels/<id:channel_id>",
    summary="A channel with its recent and pending messages and its subscribers",
    responses={200: Channel},
    errors=(404,),
)
def get_channel(channel_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        data = channel_json(channels.load_channel_view(session, actor.organization_id, channel_id))
    return respond(Channel, data)


@operation(
    bp,
    "GET",
    "/channels/<id:channel_id>/messages",
    summary="Page through a channel's published messages, newest first",
    query=PageQuery,
    responses={200: MessageList},
    errors=(404,),
)
def list_channel_messages(channel_id: str) -> ResponseReturnValue:
    return message_page(channel_id=channel_id)


@operation(
    bp,
    "POST",
    "/channels/<id:channel_id>/messages",
    summary="Post a message straight to a channel, now or at publish_to_channel_at",
    body=MessageCreate,
    responses={201: Message},
    errors=(404,),
)
def post_channel_message(channel_id: str) -> ResponseReturnValue:
    return post_and_enqueue(messages.post_channel_message, channel_id)


@operation(
    bp,
    "PATCH",
    "/messages/<id:message_id>",
    summary="Edit a message's text or media (its author only)",
    body=MessageUpdate,
    responses={200: Message},
    errors=(403, 404, 409),
)
def edit_message(message_id: str) -> ResponseReturnValue:
    actor = authenticate()
    body = json_body(MessageUpdate)
    with transaction(runtime().sessions) as session:
        message = messages.edit_message(
            session, actor, message_id, body.model_dump(exclude_unset=True)
        )
        data = message_data(session, message)
    return respond(Message, data)


@operation(
    bp,
    "DELETE",
    "/messages/<id:message_id>",
    summary="Cancel a message not yet published; a published one is a 409",
    responses={200: Message},
    errors=(403, 404, 409),
)
def cancel_message(message_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        data = message_data(session, messages.cancel_message(session, actor, message_id))
    return respond(Message, data)


@operation(
    bp,
    "GET",
    "/messages/<id:message_id>/deliveries",
    summary="A message's per-recipient delivery records",
    responses={200: DeliveryList},
    errors=(404,),
)
def list_deliveries(message_id: str) -> ResponseReturnValue:
    actor = authenticate()
    with transaction(runtime().sessions) as session:
        rows = deliveries.list_deliveries(session, actor.organization_id, message_id)
        data = [delivery_json(d) for d in rows]
    return respond_list(DeliveryList, data, False)
