"""Reading channels: a phone's channels, keyset-paged by (updated_at, id)."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from bridge.channel_views import channels_for_phone
from bridge.channels import get_or_create_channel
from bridge.db import utcnow
from bridge.errors import NotFound
from bridge.models import Channel
from bridge.settings import Settings
from tests import factories


def test_pages_walk_a_phones_channels_once_even_when_their_times_tie(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    cora = factories.contact(session, settings, org)
    made = [
        get_or_create_channel(
            session, org.id, [cora.id, factories.contact(session, settings, org).id]
        )[0].id
        for _ in range(3)
    ]
    session.execute(update(Channel).where(Channel.id.in_(made)).values(updated_at=utcnow()))
    session.commit()

    seen: list[str] = []
    before = None
    while True:
        views, has_more = channels_for_phone(session, settings, org.id, cora.phone, 1, before)
        seen += [v.channel.id for v in views]
        if not has_more:
            break
        before = seen[-1]
    assert seen == sorted(made)  # a tie in updated_at is broken by id


def test_the_cursor_must_be_a_channel_of_the_same_list(
    session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    cora, omar = (
        factories.contact(session, settings, org),
        factories.contact(session, settings, org),
    )
    omars, _ = get_or_create_channel(session, org.id, [omar.id])
    session.commit()
    with pytest.raises(NotFound) as caught:
        channels_for_phone(session, settings, org.id, cora.phone, 10, omars.id)
    assert caught.value.param == "before"
