"""Processing an inbound SMS once stored: its keyword, or its match and its message in the
channel (DESIGN 5.5 steps 4 to 7), for one SMS or for a worker's batch of them.

`process_received` and `process_batch` take SMS the webhook stored `received` and left for later,
each after every earlier one of its sender still waiting (a lock per sender on PostgreSQL); a
batch is matched with one lookup of its senders' channels, and stored and recorded with a few
statements in all (`bridge.inbound_store`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, select, text, tuple_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bridge.events import inbound_object, record_event, record_events
from bridge.inbound_keywords import act_on_keyword, detect_keyword
from bridge.inbound_match import choose, match_contact, match_senders
from bridge.inbound_store import Reply, store_replies
from bridge.messages import Posted
from bridge.models import InboundSms, InboundStatus, Organization
from bridge.phones import phone_hash
from bridge.settings import Settings
from bridge.twilio_webhooks import media_urls_from, twiml

# The log lines of inbound SMS keep the logger they always had.
log = logging.getLogger("bridge.inbound")


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

    @classmethod
    def matched(cls, inbound: InboundSms, posted: Posted) -> InboundOutcome:
        """An SMS stored in its channel as `posted` (and relayed from there)."""
        return cls(
            inbound,
            twiml(),
            posted=[posted],
            status=InboundStatus.MATCHED,
            channel_id=posted.message.channel_id,
            message_id=posted.message.id,
        )

    @property
    def outcome(self) -> str:
        """The metrics label: duplicate, or the record's status."""
        return "duplicate" if self.duplicate else self.inbound.status

    def fields(self) -> dict[str, object]:
        """What processing found, as the record's columns (OUTCOME_FIELDS)."""
        return {name: getattr(self, attribute) for name, attribute in OUTCOME_FIELDS.items()}


# The record's columns processing writes, and the outcome's attribute each is taken from.
OUTCOME_FIELDS = {
    "status": "status",
    "keyword": "keyword",
    "channel_id": "channel_id",
    "message_id": "message_id",
    "response_twiml": "twiml",
}


@dataclass(frozen=True)
class Route:
    """Where an SMS came from and went to: normalized numbers, the organization, or why not."""

    from_phone: str
    to_phone: str
    org: Organization | None = None
    unmatched: str | None = None


def process_received(session: Session, settings: Settings, inbound_id: str) -> list[InboundOutcome]:
    """Match, store and relay a deferred SMS, after every earlier one of its sender still waiting.

    A contact's SMS are processed in the order they were stored (`seq`), whichever job gets there
    first: on PostgreSQL a lock per (organization, sender) held to the commit serializes them (this
    call waits for it), and each call takes every waiting SMS of that sender up to its own.
    Returns what was processed (nothing when another job already did it).
    """
    outcomes, _ = process_batch(session, settings, [inbound_id], wait=True)
    return outcomes


def process_with_earlier(
    session: Session, settings: Settings, inbound: InboundSms
) -> list[InboundOutcome]:
    """`process_received` for an SMS this transaction has just stored (its sender is known)."""
    assert inbound.organization_id is not None
    sender = (inbound.organization_id, inbound.from_phone)
    lock_senders(session, [sender], wait=True)
    return _process_waiting(session, settings, waiting_of(session, {sender: inbound.seq}))


def process_batch(
    session: Session, settings: Settings, inbound_ids: Sequence[str], wait: bool = False
) -> tuple[list[InboundOutcome], int]:
    """`process_received` for many deferred SMS at once, in a few statements for the whole batch.

    Each sender's lock is taken (tried, without `wait`) for every sender at once; then each SMS of
    the batch is processed with every earlier one of its sender still waiting, in the order
    stored. Returns what was processed, and how many of `inbound_ids` another transaction's
    sender lock holds (left for later).
    """
    senders: dict[tuple[str, str], list[int]] = {}
    for row in session.execute(
        select(InboundSms.organization_id, InboundSms.from_phone, InboundSms.seq).where(
            InboundSms.id.in_(inbound_ids),
            InboundSms.status == InboundStatus.RECEIVED,
            InboundSms.organization_id.is_not(None),
        )
    ):
        senders.setdefault((row.organization_id, row.from_phone), []).append(row.seq)
    locked = lock_senders(session, list(senders), wait)
    held = sum(len(seqs) for sender, seqs in senders.items() if sender not in locked)
    waiting = waiting_of(session, {sender: max(senders[sender]) for sender in locked})
    return _process_waiting(session, settings, waiting), held


def _process_waiting(
    session: Session, settings: Settings, waiting: Sequence[InboundSms]
) -> list[InboundOutcome]:
    """Process locked, waiting SMS in their order: a keyword on its own (none should wait: the
    webhook acts on keywords at once), every run of other SMS between them together."""
    orgs: dict[str, Organization | None] = {}
    outcomes: list[InboundOutcome] = []
    run: list[tuple[InboundSms, Organization]] = []
    for inbound in waiting:
        assert inbound.organization_id is not None
        if inbound.organization_id not in orgs:
            orgs[inbound.organization_id] = session.get(Organization, inbound.organization_id)
        org = orgs[inbound.organization_id]
        if org is None:  # the organization went away meanwhile
            continue
        if detect_keyword(inbound.body) is None:
            run.append((inbound, org))
            continue
        outcomes += _process_together(session, settings, run)
        run = []
        route = Route(inbound.from_phone, inbound.to_phone, org)
        outcome = process_sms(session, settings, inbound, route)
        record_outcome(session, inbound, outcome)
        outcomes.append(outcome)
    return outcomes + _process_together(session, settings, run)


def _process_together(
    session: Session, settings: Settings, run: Sequence[tuple[InboundSms, Organization]]
) -> list[InboundOutcome]:
    """Match SMS that are no keyword (one lookup of their senders' channels per organization),
    store the matched ones in their channels and write every record, each a few statements."""
    outcomes: list[InboundOutcome] = []
    by_org: dict[str, tuple[Organization, list[InboundSms]]] = {}
    for inbound, org in run:
        by_org.setdefault(org.id, (org, []))[1].append(inbound)
    for org, inbounds in by_org.values():
        outcomes += _match_and_store(session, settings, org, inbounds)
    outcomes.sort(key=lambda outcome: outcome.inbound.seq)
    _finish_together(session, outcomes)
    return outcomes


def _match_and_store(
    session: Session, settings: Settings, org: Organization, inbounds: Sequence[InboundSms]
) -> list[InboundOutcome]:
    digests = [phone_hash(org.id, i.from_phone, settings.phone_hash_key) for i in inbounds]
    channels = match_senders(session, org.id, digests)
    outcomes: list[InboundOutcome] = []
    matched: list[tuple[InboundSms, Reply]] = []
    for inbound, digest in zip(inbounds, digests, strict=True):
        match = choose(channels.get(digest, []), inbound.to_phone)
        if match.contact_id is None:
            outcomes.append(_unmatched(inbound, "unknown sender"))
        elif match.channel_id is None:
            outcomes.append(_unmatched(inbound, "the contact is in no channel"))
        else:
            text, media = inbound.body or "", media_urls_from(inbound.params)
            matched.append((inbound, Reply(match.contact_id, match.channel_id, text, media)))
    stored = store_replies(session, org, [reply for _, reply in matched])
    for (inbound, _), posted in zip(matched, stored, strict=True):
        outcomes.append(InboundOutcome.matched(inbound, posted))
    return outcomes


def lock_senders(
    session: Session, senders: Sequence[tuple[str, str]], wait: bool
) -> set[tuple[str, str]]:
    """Take the lock of each (organization, sender) for the transaction, or without `wait` try to;
    the senders locked. On PostgreSQL only: SQLite serializes writers already."""
    if not senders or session.get_bind().dialect.name != "postgresql":
        return set(senders)
    names = {
        f"inbound:{organization_id}:{phone}": (organization_id, phone)
        for organization_id, phone in senders
    }
    if wait:
        for name in sorted(names):  # always in one order: two waiting callers cannot deadlock
            session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))
        return set(senders)
    # Tried all in one statement: a try never waits, so their order does not matter.
    return {
        names[name]
        for name, locked in session.execute(_TRY_LOCKS, {"names": list(names)})
        if locked
    }


_TRY_LOCKS = text(
    "SELECT name, pg_try_advisory_xact_lock(hashtextextended(name, 0))"
    " FROM unnest(CAST(:names AS text[])) AS name"
)


def waiting_of(session: Session, senders: Mapping[tuple[str, str], int]) -> list[InboundSms]:
    """The SMS of these (organization, sender)s still waiting, each up to its `seq`, oldest first,
    locked for the transaction."""
    if not senders:
        return []
    if len(senders) == 1:
        [(organization_id, phone)] = senders
        which = and_(InboundSms.organization_id == organization_id, InboundSms.from_phone == phone)
    else:
        which = tuple_(InboundSms.organization_id, InboundSms.from_phone).in_(list(senders))
    waiting = session.scalars(
        select(InboundSms)
        .where(
            which,
            InboundSms.status == InboundStatus.RECEIVED,
            InboundSms.seq <= max(senders.values()),
        )
        .order_by(InboundSms.seq)
        .with_for_update()
    )
    return [i for i in waiting if i.seq <= senders[(i.organization_id or "", i.from_phone)]]


def record_outcome(session: Session, inbound: InboundSms, outcome: InboundOutcome) -> None:
    """Write what processing found to the record, in one UPDATE, and log it."""
    for name, value in outcome.fields().items():
        setattr(inbound, name, value)
    if inbound.organization_id is not None:  # an SMS to no organization's number has no audience
        record_event(session, inbound.organization_id, "inbound.received", inbound_object(inbound))
    session.flush()
    _log_finished(inbound)


_inbound_sms = cast(Table, InboundSms.__table__)
_FINISH = (
    update(_inbound_sms)
    .where(_inbound_sms.c.seq == bindparam("b_seq"))
    .values({name: bindparam(f"b_{name}") for name in OUTCOME_FIELDS})
)


def _finish_together(session: Session, outcomes: Sequence[InboundOutcome]) -> None:
    """`record_outcome` for many records: one UPDATE, and one INSERT of their events per
    organization; the session's objects are left as the UPDATE leaves their rows."""
    if not outcomes:
        return
    rows: list[dict[str, object]] = []
    events: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for outcome in outcomes:
        inbound = outcome.inbound
        values = outcome.fields()
        for name, value in values.items():
            set_committed_value(inbound, name, value)
        rows.append({f"b_{name}": value for name, value in values.items()} | {"b_seq": inbound.seq})
        assert inbound.organization_id is not None
        events.setdefault(inbound.organization_id, []).append(
            ("inbound.received", inbound_object(inbound))
        )
        _log_finished(inbound)
    session.connection().execute(_FINISH, rows)
    for organization_id, items in events.items():
        record_events(session, organization_id, items)


def _log_finished(inbound: InboundSms) -> None:
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


def _unmatched(inbound: InboundSms, why: str) -> InboundOutcome:
    log.info("inbound sms unmatched: %s", why, extra={"inbound_id": inbound.id})
    return InboundOutcome(inbound, twiml(), status=InboundStatus.UNMATCHED)


def process_sms(
    session: Session, settings: Settings, inbound: InboundSms, route: Route
) -> InboundOutcome:
    """What becomes of an SMS that is no reply to store: a keyword acted on, or unmatched. The
    record is left for `record_outcome` to write. A reply goes through `process_received` or
    `process_batch`, which keep a contact's order."""
    if route.unmatched is not None or route.org is None:
        return _unmatched(inbound, route.unmatched or "no organization")
    org = route.org
    digest = phone_hash(org.id, route.from_phone, settings.phone_hash_key)
    keyword = detect_keyword(inbound.body)
    assert keyword is not None, "a reply is processed in its sender's order (process_received)"
    contact, channels = match_contact(session, org.id, digest)
    answer = act_on_keyword(session, settings, org, digest, contact, channels, keyword)
    return InboundOutcome(inbound, answer, status=InboundStatus.KEYWORD, keyword=keyword[1])
