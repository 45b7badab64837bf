"""Inbound SMS: stored once, routed to an organization, matched to a channel (DESIGN 5.5, 5.6).

Keywords (STOP, START, HELP) change opt-out state and leave a meta message in the contact's
channels; anything else is the contact's message in the channel it answers, relayed to the others.
What happens to a stored SMS (at once, or in a worker's batch) is `bridge.inbound_processing`;
Twilio's form parameters, signatures and TwiML are `bridge.twilio_webhooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bridge.db import utcnow
from bridge.errors import ValidationError
from bridge.ids import new_id
from bridge.inbound_keywords import detect_keyword
from bridge.inbound_processing import (
    InboundOutcome,
    Route,
    process_sms,
    process_with_earlier,
    record_outcome,
)
from bridge.models import InboundSms, InboundStatus
from bridge.organizations import organization_for_number
from bridge.pages import page
from bridge.phones import classify_sender, normalize_phone
from bridge.settings import Settings
from bridge.twilio_webhooks import (
    Params,
    first_param,
    storable,
    storable_params,
    twiml,
)

# A deferred SMS is matched by a worker within this (DESIGN 5.5 asks for a second at the 99th
# percentile): once the oldest one waiting is older, the webhook matches its own SMS instead.
INLINE_AFTER = timedelta(seconds=0.5)

_COLUMN = 64  # from_phone / to_phone / message_sid width; an odd sender id is cut, never rejected


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
    organization's number is only stored, `received`, and `pending` says so: a worker matches,
    stores and relays it after the answer (`process_batch`, DESIGN 5.5). Without `defer` (a
    drained webhook), or once the workers are behind, it goes the same way here and now
    (`process_with_earlier`): after every earlier SMS of its sender, under the sender's lock.
    Keywords and SMS that cannot match act at once, as they must before the answer.
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

    if route.unmatched is None and detect_keyword(inbound.body) is None:
        if defer and not _behind(session, inbound.received_at):
            return InboundOutcome(inbound, twiml(), pending=True)
        return _process_here(session, settings, inbound)
    # The record is left untouched until processing is over: the flushes inside (messages,
    # deliveries) would otherwise write it once per change.
    outcome = process_sms(session, settings, inbound, route)
    record_outcome(session, inbound, outcome)
    return outcome


def _process_here(session: Session, settings: Settings, inbound: InboundSms) -> InboundOutcome:
    """Match, store and relay a reply just stored, in this transaction (DESIGN 5.5).

    Any earlier SMS of the sender still waiting is processed first, so a contact's SMS keep their
    order whoever processes them; what those posted is relayed with this one. The sender's lock is
    waited for, so this SMS (stored, waiting, in this transaction) is always among them.
    """
    outcomes = process_with_earlier(session, settings, inbound)
    [mine] = [o for o in outcomes if o.inbound.id == inbound.id]
    others = [p for o in outcomes if o.inbound.id != inbound.id for p in o.posted]
    return replace(mine, posted=[*others, *mine.posted])


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


def _route(session: Session, settings: Settings, from_phone: str, to_phone: str) -> Route:
    region = settings.default_region
    if classify_sender(to_phone, region) != "e164":
        return Route(from_phone, to_phone, None, "To is not a phone number")
    to_phone = normalize_phone(to_phone, region)
    org = organization_for_number(session, to_phone)
    kind = classify_sender(from_phone, region)
    if kind != "e164":
        # Short codes and alphanumeric sender ids cannot be texted back: kept, never matched.
        return Route(from_phone, to_phone, org, f"From is {kind.replace('_', ' ')}")
    from_phone = normalize_phone(from_phone, region)
    if org is None:
        return Route(from_phone, to_phone, None, "To is no organization's number")
    return Route(from_phone, to_phone, org)


def list_inbound(
    session: Session,
    organization_id: str,
    status: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> tuple[list[InboundSms], bool]:
    """A page of the organization's inbound SMS, newest first, optionally of one status."""
    if status is not None and status not in set(InboundStatus):
        raise ValidationError(
            "status must be one of matched, unmatched, keyword, received", "status"
        )
    scope = [InboundSms.organization_id == organization_id]
    if status is not None:
        scope.append(InboundSms.status == status)
    return page(session, InboundSms, scope, limit, before, "an inbound SMS")
