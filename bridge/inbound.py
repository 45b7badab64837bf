"""Inbound SMS: stored once, routed to an organization, matched to a channel (DESIGN 5.5, 5.6).

Keywords (STOP, START, HELP) change opt-out state and leave a meta message in the contact's
channels; anything else is the contact's message in the channel it answers, relayed to the others.
Twilio's form parameters, signatures and TwiML are `bridge.twilio_webhooks`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, bindparam, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.channels import last_publisher_thread
from bridge.claims import status_in
from bridge.db import utcnow
from bridge.errors import ValidationError
from bridge.events import inbound_object, record_event, record_message
from bridge.ids import new_id
from bridge.messages import Posted, record_contact_message
from bridge.models import (
    Channel,
    ChannelPhoneHash,
    ChannelSubscriber,
    Contact,
    Delivery,
    DeliveryStatus,
    InboundSms,
    InboundStatus,
    Message,
    MessageType,
    Organization,
)
from bridge.organizations import help_text_for, opt_in, opt_out, organization_for_number
from bridge.pages import page
from bridge.phones import classify_sender, mask_phone, normalize_phone, phone_hash
from bridge.publishing import publish_message
from bridge.settings import Settings
from bridge.twilio_webhooks import (
    Params,
    first_param,
    media_urls_from,
    storable,
    storable_params,
    twiml,
)

log = logging.getLogger(__name__)

# An SMS is matched among the contact's most recently updated channels, this many at most: a
# reply answers a live conversation, and a keyword's meta messages go to each of them.
MAX_CONTACT_CHANNELS = 500

# DESIGN 5.5 step 4: the whole body, trimmed, in any case. These are also the words Twilio's own
# opt-out handling reacts to on long codes, so our state follows what the carrier side does.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# A deferred SMS is matched by a worker within this (DESIGN 5.5 asks for a second at the 99th
# percentile): once the oldest one waiting is older, the webhook matches its own SMS instead.
INLINE_AFTER = timedelta(seconds=0.5)

_COLUMN = 64  # from_phone / to_phone / message_sid width; an odd sender id is cut, never rejected

# A send Twilio accepted (or may have): the contact has received, or is receiving, this SMS.
_SENT_STATES = (
    DeliveryStatus.SENDING,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.UNKNOWN,
)


def detect_keyword(body: str | None) -> tuple[str, str] | None:
    """The keyword a body is, as (kind, word) with kind `stop`, `start` or `help`; else None."""
    word = (body or "").strip().upper()
    if word in STOP_WORDS:
        return "stop", word
    if word in START_WORDS:
        return "start", word
    if word in HELP_WORDS:
        return "help", word
    return None


@dataclass(frozen=True)
class InboundOutcome:
    """What became of an inbound SMS: the record, the TwiML to answer and the work to enqueue."""

    inbound: InboundSms
    twiml: str
    duplicate: bool = False
    pending: bool = False  # stored only: a worker matches, stores and relays it
    posted: list[Posted] = field(default_factory=list)
    # What processing found, written to the record in one go when it is over.
    status: InboundStatus = InboundStatus.RECEIVED
    keyword: str | None = None
    channel_id: str | None = None
    message_id: str | None = None

    @property
    def outcome(self) -> str:
        """The metrics label: duplicate, or the record's status."""
        return "duplicate" if self.duplicate else self.inbound.status


def record_inbound_sms(
    session: Session,
    settings: Settings,
    params: Params,
    idempotency_token: str | None = None,
    defer: bool = False,
) -> InboundOutcome:
    """Store an inbound SMS once, act on its keyword or match it to a channel; say what to answer.

    A repeat (same MessageSid or idempotency token) changes nothing and gets the first answer, also
    when the copies arrive at the same moment. With `defer` (the webhook), a reply to an
    organization's number is only stored, `received`, and `pending` says so: matching, storing
    and relaying it is `process_received`'s, in a worker after the answer (DESIGN 5.5). Keywords
    and SMS that cannot match act at once, as they must before the answer.
    """
    params = storable_params(params)
    sid = _required_sid(params)
    token = storable((idempotency_token or "").strip()[:200]) or None
    raw_from, raw_to = first_param(params, "From") or "", first_param(params, "To") or ""
    # Routing reads only, so the record is inserted complete and updated once, at the end.
    route = _route(session, settings, raw_from.strip()[:_COLUMN], raw_to.strip()[:_COLUMN])
    inbound = _claim(
        session,
        id=new_id("in"),
        message_sid=sid[:_COLUMN],
        idempotency_token=token,
        organization_id=route.org.id if route.org else None,
        from_phone=route.from_phone,
        to_phone=route.to_phone,
        body=first_param(params, "Body") or "",
        params=dict(params),
        status=InboundStatus.RECEIVED,
        received_at=utcnow(),
    )
    if inbound is None:
        earlier = _find_earlier(session, sid, token)
        if earlier is None:  # only a clash of our random ids could get here
            raise RuntimeError("the inbound SMS conflicted with a row that cannot be found")
        return InboundOutcome(earlier, earlier.response_twiml or twiml(), duplicate=True)

    if defer and route.unmatched is None and detect_keyword(inbound.body) is None:
        if not _behind(session, inbound.received_at):
            return InboundOutcome(inbound, twiml(), pending=True)
        # The workers are behind: this request matches its SMS itself (after any earlier one of
        # the sender), so the wait for a channel stays bounded whatever the rate of arrivals.
        outcomes = process_received(session, settings, inbound.id) or []
        mine = [o for o in outcomes if o.inbound.id == inbound.id]
        others = [p for o in outcomes if o.inbound.id != inbound.id for p in o.posted]
        if mine:
            return replace(mine[0], posted=[*others, *mine[0].posted])
    # The record is left untouched until processing is over: the flushes inside (messages,
    # deliveries) would otherwise write it once per change.
    outcome = _process(session, settings, inbound, route, params)
    _finish(session, inbound, outcome)
    return outcome


def process_received(
    session: Session, settings: Settings, inbound_id: str, wait: bool = True
) -> list[InboundOutcome] | None:
    """Match, store and relay a deferred SMS, after every earlier one of its sender still waiting.

    A contact's SMS are processed in the order they were stored (`seq`), whichever job gets there
    first: on PostgreSQL a lock per (organization, sender) held to the commit serializes them, and
    each call takes every waiting SMS of that sender up to its own. Returns what was processed
    (nothing when another job already did it), or None without `wait` when another transaction
    holds the sender's lock (it is processing that sender's SMS now).
    """
    first = session.execute(
        select(InboundSms.organization_id, InboundSms.from_phone, InboundSms.seq).where(
            InboundSms.id == inbound_id, InboundSms.status == InboundStatus.RECEIVED
        )
    ).one_or_none()
    if first is None or first.organization_id is None:
        return []
    if session.get_bind().dialect.name == "postgresql":
        key = func.hashtextextended(f"inbound:{first.organization_id}:{first.from_phone}", 0)
        if wait:
            session.execute(select(func.pg_advisory_xact_lock(key)))
        elif not session.scalar(select(func.pg_try_advisory_xact_lock(key))):
            return None
    waiting = session.scalars(
        select(InboundSms)
        .where(
            InboundSms.organization_id == first.organization_id,
            InboundSms.status == InboundStatus.RECEIVED,
            InboundSms.from_phone == first.from_phone,
            InboundSms.seq <= first.seq,
        )
        .order_by(InboundSms.seq)
        .with_for_update()
    ).all()
    org = session.get(Organization, first.organization_id) if waiting else None
    if org is None:  # nothing waits (or the organization went away meanwhile)
        return []
    outcomes = []
    for inbound in waiting:
        route = _Route(inbound.from_phone, inbound.to_phone, org)
        outcome = _process(session, settings, inbound, route, inbound.params)
        _finish(session, inbound, outcome)
        outcomes.append(outcome)
    return outcomes


def _behind(session: Session, now: datetime) -> bool:
    """Whether an SMS stored for the workers has waited INLINE_AFTER already (one index probe)."""
    oldest = session.scalar(
        select(func.min(InboundSms.received_at)).where(InboundSms.status == InboundStatus.RECEIVED)
    )
    return oldest is not None and oldest < now - INLINE_AFTER


def waiting_sms(
    session: Session, limit: int, leave: Sequence[str] = (), before: datetime | None = None
) -> list[str]:
    """Deferred SMS waiting to be processed (stored before `before`), oldest first, but `leave`."""
    query = select(InboundSms.id).where(InboundSms.status == InboundStatus.RECEIVED)
    if before is not None:
        query = query.where(InboundSms.received_at < before)
    if leave:
        query = query.where(InboundSms.id.not_in(leave))
    return list(session.scalars(query.order_by(InboundSms.seq).limit(limit)))


def _required_sid(params: Params) -> str:
    """The SMS's MessageSid, checking that From and To came with it."""
    # Twilio sends all three with the same value; older integrations only had the Sms* names.
    sid = (
        first_param(params, "MessageSid")
        or first_param(params, "SmsMessageSid")
        or first_param(params, "SmsSid")
    )
    if not sid:
        raise ValidationError("MessageSid is required", "MessageSid")
    for name in ("From", "To"):
        if not first_param(params, name):
            raise ValidationError(f"{name} is required", name)
    return sid


def _finish(session: Session, inbound: InboundSms, outcome: InboundOutcome) -> None:
    """Write what processing found to the record, in one UPDATE, and log it."""
    inbound.status, inbound.keyword = outcome.status, outcome.keyword
    inbound.channel_id, inbound.message_id = outcome.channel_id, outcome.message_id
    inbound.response_twiml = outcome.twiml
    if inbound.organization_id is not None:  # an SMS to no organization's number has no audience
        record_event(session, inbound.organization_id, "inbound.received", inbound_object(inbound))
    session.flush()
    log.info(
        "inbound sms %s",
        inbound.status,
        extra={
            "inbound_id": inbound.id,
            "from": inbound.from_phone,  # the log formatter masks them
            "to": inbound.to_phone,
            "keyword": inbound.keyword,
            "channel_id": inbound.channel_id,
        },
    )


def _claim(session: Session, **values: object) -> InboundSms | None:
    # The unique MessageSid (and idempotency token) claims the SMS in one statement. A copy
    # inserting at the same moment waits here on PostgreSQL until the first commits, then inserts
    # nothing; on SQLite writers are serialized already.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(InboundSms).values(**values).on_conflict_do_nothing().returning(InboundSms)
    return session.execute(statement).scalar_one_or_none()


def _find_earlier(session: Session, sid: str, token: str | None) -> InboundSms | None:
    condition = InboundSms.message_sid == sid[:_COLUMN]
    if token:
        condition = or_(condition, InboundSms.idempotency_token == token)
    return session.execute(select(InboundSms).where(condition).limit(1)).scalar_one_or_none()


@dataclass(frozen=True)
class _Route:
    """Where an SMS came from and went to: normalized numbers, the organization, or why not."""

    from_phone: str
    to_phone: str
    org: Organization | None = None
    unmatched: str | None = None


def _route(session: Session, settings: Settings, from_phone: str, to_phone: str) -> _Route:
    region = settings.default_region
    if classify_sender(to_phone, region) != "e164":
        return _Route(from_phone, to_phone, None, "To is not a phone number")
    to_phone = normalize_phone(to_phone, region)
    org = organization_for_number(session, to_phone)
    kind = classify_sender(from_phone, region)
    if kind != "e164":
        # Short codes and alphanumeric sender ids cannot be texted back: kept, never matched.
        return _Route(from_phone, to_phone, org, f"From is {kind.replace('_', ' ')}")
    from_phone = normalize_phone(from_phone, region)
    if org is None:
        return _Route(from_phone, to_phone, None, "To is no organization's number")
    return _Route(from_phone, to_phone, org)


def _unmatched(inbound: InboundSms, why: str) -> InboundOutcome:
    log.info("inbound sms unmatched: %s", why, extra={"inbound_id": inbound.id})
    return InboundOutcome(inbound, twiml(), status=InboundStatus.UNMATCHED)


def match_contact(
    session: Session, organization_id: str, digest: str
) -> tuple[Contact | None, list[Channel]]:
    """The organization's contact with this phone hash and its channels, latest updated first
    (at most MAX_CONTACT_CHANNELS of them)."""
    # One query for both: the contact, outer-joined to the channels its phone hash is in.
    rows = session.execute(
        select(Contact, Channel)
        .outerjoin(
            ChannelPhoneHash,
            and_(
                ChannelPhoneHash.organization_id == Contact.organization_id,
                ChannelPhoneHash.phone_hash == Contact.phone_hash,
            ),
        )
        .outerjoin(Channel, Channel.id == ChannelPhoneHash.channel_id)
        .where(Contact.organization_id == organization_id, Contact.phone_hash == digest)
        .order_by(Channel.updated_at.desc(), Channel.id)
        .limit(MAX_CONTACT_CHANNELS)
    ).all()
    if not rows:
        return None, []
    return rows[0][0], [channel for _, channel in rows if channel is not None]


@dataclass(frozen=True)
class Match:
    """Who sent an SMS and the channel it answers (DESIGN 5.5 step 5), as ids."""

    contact_id: str | None = None
    channel_id: str | None = None  # None: the contact is in no channel


# Every step of the choice in one Core statement, built once: each of the contact's channels
# (latest updated first) with whether the pool ties it to this (From, To) pair and the rank of the
# last SMS it sent the contact. Three ORM queries made matching 18 times an indexed lookup.
_contacts = cast(Table, Contact.__table__)
_hashes = cast(Table, ChannelPhoneHash.__table__)
_channels = cast(Table, Channel.__table__)
_members = cast(Table, ChannelSubscriber.__table__)
_sends = cast(Table, Delivery.__table__)
_MATCH = (
    select(
        _contacts.c.id.label("contact_id"),
        _channels.c.id.label("channel_id"),
        exists()
        .where(
            _members.c.channel_id == _channels.c.id,
            _members.c.subscriber_id == _contacts.c.id,
            _members.c.sender_phone == bindparam("to_phone"),
        )
        .label("paired"),
        select(func.max(_sends.c.publish_seq))
        .where(
            _sends.c.to_phone == _contacts.c.phone,
            _sends.c.subscriber_id == _contacts.c.id,
            _sends.c.channel_id == _channels.c.id,
            status_in(_sends.c.status, *_SENT_STATES),
        )
        .scalar_subquery()
        .label("last_sent"),
    )
    .select_from(
        _contacts.outerjoin(
            _hashes,
            and_(
                _hashes.c.organization_id == _contacts.c.organization_id,
                _hashes.c.phone_hash == _contacts.c.phone_hash,
            ),
        ).outerjoin(_channels, _channels.c.id == _hashes.c.channel_id)
    )
    .where(
        _contacts.c.organization_id == bindparam("organization_id"),
        _contacts.c.phone_hash == bindparam("digest"),
    )
    .order_by(_channels.c.updated_at.desc(), _channels.c.id)
    .limit(MAX_CONTACT_CHANNELS)
)


def match_sms(session: Session, organization_id: str, digest: str, to_phone: str) -> Match:
    """The contact with this phone hash and the channel an SMS from it to `to_phone` answers.

    The pool's (From, To) pair first; else the channel that last sent this contact an SMS; else the
    most recently updated (DESIGN 5.5 step 5, 5.6).
    """
    # On the session's connection: a Core statement needs none of the ORM session's execute path.
    rows = (
        session.connection()
        .execute(
            _MATCH, {"organization_id": organization_id, "digest": digest, "to_phone": to_phone}
        )
        .all()
    )
    if not rows:
        return Match()
    channels = [row for row in rows if row.channel_id is not None]
    if len(channels) <= 1:
        return Match(rows[0].contact_id, channels[0].channel_id if channels else None)
    paired = [row for row in channels if row.paired]
    if len(paired) == 1:
        return Match(rows[0].contact_id, paired[0].channel_id)
    # Pool exhausted (or one number): several channels share this pair; narrow to them.
    candidates = paired or channels
    sent = [row for row in candidates if row.last_sent is not None]
    chosen = max(sent, key=lambda row: row.last_sent) if sent else candidates[0]
    return Match(rows[0].contact_id, chosen.channel_id)


def _process(
    session: Session, settings: Settings, inbound: InboundSms, route: _Route, params: Params
) -> InboundOutcome:
    if route.unmatched is not None or route.org is None:
        return _unmatched(inbound, route.unmatched or "no organization")
    org = route.org
    digest = phone_hash(org.id, route.from_phone, settings.phone_hash_key)
    keyword = detect_keyword(inbound.body)
    if keyword is not None:
        contact, channels = match_contact(session, org.id, digest)
        return _keyword(session, settings, inbound, org, digest, contact, channels, keyword)

    match = match_sms(session, org.id, digest, route.to_phone)
    if match.contact_id is None:
        return _unmatched(inbound, "unknown sender")
    if match.channel_id is None:
        return _unmatched(inbound, "the contact is in no channel")
    thread = last_publisher_thread(session, org.id, match.channel_id)
    posted = record_contact_message(
        session,
        settings,
        org.id,
        match.contact_id,
        match.channel_id,
        thread,
        inbound.body or "",
        media_urls_from(params),
    )
    return InboundOutcome(
        inbound,
        twiml(),
        posted=[posted],
        status=InboundStatus.MATCHED,
        channel_id=match.channel_id,
        message_id=posted.message.id,
    )


_KEYWORD_EVENTS = {
    "stop": ("contact.opted_out", "{name} replied {word}: no more SMS from {org}"),
    "start": ("contact.opted_in", "{name} replied {word}: SMS from {org} resumed"),
    "help": ("contact.help_requested", "{name} asked for help ({word})"),
}


def _keyword(
    session: Session,
    settings: Settings,
    inbound: InboundSms,
    org: Organization,
    digest: str,
    contact: Contact | None,
    channels: Sequence[Channel],
    keyword: tuple[str, str],
) -> InboundOutcome:
    kind, word = keyword
    # Opt-out state belongs to the phone (by hash) and the organization, so a STOP from a number
    # that is not a contact yet still holds when it becomes one.
    if kind == "stop":
        opt_out(session, org.id, digest)
    elif kind == "start":
        opt_in(session, org.id, digest)
    if contact is not None:
        event, template = _KEYWORD_EVENTS[kind]
        name = contact.name or mask_phone(contact.phone)
        text = template.format(name=name, word=word, org=org.name)
        now = utcnow()
        for channel in channels:
            _meta_in_channel(session, settings, contact, channel, event, text, now)
    # STOP/START: Twilio itself confirms on long codes; a second reply would only be noise.
    answer = twiml(help_text_for(org)) if kind == "help" else twiml()
    return InboundOutcome(inbound, answer, status=InboundStatus.KEYWORD, keyword=word)


def _meta_in_channel(
    session: Session,
    settings: Settings,
    contact: Contact,
    channel: Channel,
    event: str,
    text: str,
    now: datetime,
) -> Message:
    # Published at once (visible in the channel), but a meta message never goes by SMS.
    thread = last_publisher_thread(session, channel.organization_id, channel.id)
    message = Message.new(
        Actor.contact(channel.organization_id, contact.id),
        text,
        now,
        thread_id=thread.id if thread else None,
        channel_id=channel.id,
        type=MessageType.META,
        event=event,
    )
    session.add(message)
    if thread is not None:
        thread.updated_at = now
    publish_message(session, settings, message, now)
    record_message(session, "message.created", message)
    return message


def list_inbound(
    session: Session,
    organization_id: str,
    status: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[InboundSms], bool]:
    """A page of the organization's inbound SMS, newest first, optionally of one status."""
    if status is not None and status not in {s.value for s in InboundStatus}:
        raise ValidationError(
            "status must be one of matched, unmatched, keyword, received", "status"
        )
    scope = [InboundSms.organization_id == organization_id]
    if status is not None:
        scope.append(InboundSms.status == status)
    return page(session, InboundSms, scope, limit, before, "an inbound SMS")
