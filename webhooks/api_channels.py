"""Channels (nested in /v1; their messages are in `webhooks.api_messages`)."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy.orm import Session

from bridge import channel_views
from bridge.serialize import Channel, ChannelList
from webhooks.auth import acting_org
from webhooks.context import runtime
from webhooks.http import operation
from webhooks.schemas import ChannelQuery

bp = Blueprint("channels", __name__)


@operation(bp, "GET /channels", query=ChannelQuery, responses={200: ChannelList})
def find_channels(session: Session, query: ChannelQuery) -> ChannelList:
    """The channels a phone number is in, most recently updated first."""
    views, has_more = channel_views.channels_for_phone(
        session, runtime().settings, acting_org(), query.phone, query.limit, query.before
    )
    return ChannelList.of([Channel.of(v) for v in views], has_more)


@operation(bp, "GET /channels/<id:channel_id>", responses={200: Channel}, errors=(404,))
def get_channel(session: Session, channel_id: str) -> Channel:
    """A channel with its recent and pending messages and its subscribers."""
    return Channel.of(channel_views.load_channel_view(session, acting_org(), channel_id))
