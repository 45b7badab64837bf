"""Channels (nested in /v1; their messages are in `webhooks.api_messages`)."""

from __future__ import annotations

from flask import Blueprint, g
from flask.typing import ResponseReturnValue

from bridge import channel_views
from bridge.db import transaction
from bridge.serialize import Channel, ChannelList
from webhooks.context import runtime
from webhooks.http import operation, respond
from webhooks.schemas import ChannelQuery

bp = Blueprint("channels", __name__)


@operation(
    bp,
    "GET",
    "/channels",
    summary="The channels a phone number is in, most recently updated first",
    query=ChannelQuery,
    responses={200: ChannelList},
)
def find_channels(query: ChannelQuery) -> ResponseReturnValue:
    rt = runtime()
    with transaction(rt.sessions) as session:
        views, has_more = channel_views.channels_for_phone(
            session, rt.settings, g.actor.organization_id, query.phone, query.limit, query.before
        )
        answer = ChannelList.of([Channel.of(v) for v in views], has_more)
    return respond(answer)


@operation(
    bp,
    "GET",
    "/channels/<id:channel_id>",
    summary="A channel with its recent and pending messages and its subscribers",
    responses={200: Channel},
    errors=(404,),
)
def get_channel(channel_id: str) -> ResponseReturnValue:
    with transaction(runtime().sessions) as session:
        view = channel_views.load_channel_view(session, g.actor.organization_id, channel_id)
    return respond(Channel.of(view))
