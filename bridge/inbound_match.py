"""Matching an inbound SMS: its sender's contact, the channel it answers (DESIGN 5.5 step 5, 5.6).

The SMS of one or many contacts of an organization (`match_senders` then `choose`): a worker's
batch of SMS looks its senders' channels up in one statement instead of one per SMS, and a single
SMS goes the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, func, select
from sqlalchemy.orm import Session

from bridge.claims import status_in
from bridge.models import (
    Channel,
    ChannelPhoneHash,
    ChannelSubscriber,
    Contact,
    Delivery,
    DeliveryStatus,
)

# An SMS is matched among the contact's most recently updated channels, this many at most: a
# reply answers a live conversation, and a keyword's meta messages go to each of them.
MAX_CONTACT_CHANNELS = 500

# A send Twilio accepted (or may have): the contact has received, or is receiving, this SMS.
_SENT_STATES = (
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.UNKNOWN,
)


@dataclass(frozen=True)
class Match:
    """Who sent an SMS and the channel it answers (DESIGN 5.5 step 5), as ids."""

    contact_id: str | None = None
    channel_id: str | None = None  # None: the contact is in no channel


# A contact outer-joined to the channels its phone hash is in: what matching reads first.
_contacts = cast(Table, Contact.__table__)
_hashes = cast(Table, ChannelPhoneHash.__table__)
_channels = cast(Table, Channel.__table__)
_members = cast(Table, ChannelSubscriber.__table__)
_sends = cast(Table, Delivery.__table__)
_CONTACT_CHANNELS = _contacts.outerjoin(
    _hashes,
    and_(
        _hashes.c.organization_id == _contacts.c.organization_id,
        _hashes.c.phone_hash == _contacts.c.phone_hash,
    ),
).outerjoin(_channels, _channels.c.id == _hashes.c.channel_id)


def match_contact(
    session: Session, organization_id: str, digest: str
) -> tuple[Contact | None, list[Channel]]:
    """The organization's contact with this phone hash and its channels, latest updated first
    (at most MAX_CONTACT_CHANNELS of them)."""
    # One query for both: the contact, outer-joined to the channels its phone hash is in.
    rows = session.execute(
        select(Contact, Channel)
        .select_from(_CONTACT_CHANNELS)
        .where(Contact.organization_id == organization_id, Contact.phone_hash == digest)
        .order_by(Channel.updated_at.desc(), Channel.id)
        .limit(MAX_CONTACT_CHANNELS)
    ).all()
    if not rows:
        return None, []
    return rows[0][0], [channel for _, channel in rows if channel is not None]


# Every step of the choice in one Core statement, built once: each of the contact's channels
# (latest updated first) with the pool number the contact has in it (the pool ties the channel to
# an SMS sent to that number) and the rank of the last SMS it sent the contact. Three ORM queries
# made matching 18 times an indexed lookup.
def _choice_columns(contact_id: Any, phone: Any, channel_id: Any) -> list[Any]:
    """The pool number of the contact in the channel, and the rank of its last SMS sent there."""
    sender_phone = select(_members.c.sender_phone).where(
        _members.c.channel_id == channel_id, _members.c.subscriber_id == contact_id
    )
    last_sent = select(func.max(_sends.c.publish_seq)).where(
        _sends.c.to_phone == phone,
        _sends.c.subscriber_id == contact_id,
        _sends.c.channel_id == channel_id,
        status_in(_sends.c.status, *_SENT_STATES),
    )
    return [
        sender_phone.scalar_subquery().label("sender_phone"),
        last_sent.scalar_subquery().label("last_sent"),
    ]


# For many phone hashes at once: each contact's channels ranked (a window, as a LIMIT cannot be
# per contact), the choice's columns read for the kept ones only.
_RANKED = (
    select(
        _contacts.c.id.label("contact_id"),
        _contacts.c.phone_hash.label("digest"),
        _contacts.c.phone.label("phone"),
        _channels.c.id.label("channel_id"),
        func.row_number()
        .over(
            partition_by=_contacts.c.id,
            order_by=(_channels.c.updated_at.desc(), _channels.c.id),
        )
        .label("rank"),
    )
    .select_from(_CONTACT_CHANNELS)
    .where(
        _contacts.c.organization_id == bindparam("organization_id"),
        _contacts.c.phone_hash.in_(bindparam("digests", expanding=True)),
    )
    .subquery("ranked")
)
_MATCH_MANY = (
    select(
        _RANKED.c.contact_id,
        _RANKED.c.digest,
        _RANKED.c.channel_id,
        *_choice_columns(_RANKED.c.contact_id, _RANKED.c.phone, _RANKED.c.channel_id),
    )
    .where(_RANKED.c.rank <= MAX_CONTACT_CHANNELS)
    .order_by(_RANKED.c.digest, _RANKED.c.rank)
)


def match_senders(
    session: Session, organization_id: str, digests: Sequence[str]
) -> dict[str, list[Row[Any]]]:
    """For each phone hash of the organization's contacts among `digests`, what `choose` needs to
    match an SMS from it, in one statement (a hash of no contact is left out)."""
    found: dict[str, list[Row[Any]]] = {}
    if not digests:
        return found
    values = {"organization_id": organization_id, "digests": sorted(set(digests))}
    for row in session.connection().execute(_MATCH_MANY, values):
        found.setdefault(row.digest, []).append(row)
    return found


def choose(rows: Sequence[Row[Any]], to_phone: str) -> Match:
    """The channel an SMS to `to_phone` answers among its sender's channels (latest first): the
    pool's (From, To) pair; else the channel that last sent the contact an SMS; else the latest."""
    if not rows:
        return Match()
    channels = [row for row in rows if row.channel_id is not None]
    if len(channels) <= 1:
        return Match(rows[0].contact_id, channels[0].channel_id if channels else None)
    paired = [row for row in channels if row.sender_phone == to_phone]
    if len(paired) == 1:
        return Match(rows[0].contact_id, paired[0].channel_id)
    # Pool exhausted (or one number): several channels share this pair; narrow to them.
    candidates = paired or channels
    sent = [row for row in candidates if row.last_sent is not None]
    chosen = max(sent, key=lambda row: row.last_sent) if sent else candidates[0]
    return Match(rows[0].contact_id, chosen.channel_id)
