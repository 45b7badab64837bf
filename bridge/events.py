"""Events: what happened, recorded in the transaction of the change it reports (DESIGN 5.8).

`record_event` is the outbox: it adds one row to the caller's session, so the event commits with
the change or not at all, and costs the caller one INSERT. Which endpoints receive it is worked out
later by a worker (`bridge.event_dispatch.dispatch_events`). The ids of the events a session
recorded wait in `session.info` until its commit, for whoever enqueues work after commit
(`take_recorded`).

An event is `{"object": "event", "id": "evt_...", "type", "created_at", "organization_id",
"data": {"object": {...}}}`, the object as the API returns it at that moment; the `*_object`
functions build those objects from the domain's rows with the models of `bridge.serialize`.

Who records what (the domain functions that make the change, never the views):
- `message.created`: `messages.post_message`, `post_channel_message`, `inbound_store.store_replies`
  (contacts' replies, a worker's batch or a single SMS), the meta messages of `threads`
  (subscriber added, removed) and of `inbound_keywords` (keywords).
- `message.updated`: `messages.edit_message`, `cancel_message`, `publishing.publish_due_message`.
- `delivery.updated`: `claims.claim_deliveries` (sending, skipped), `sending.record_sent`,
  `record_sends`, `record_failure`, `fail_later_parts`, `stale.resolve_stale`,
  `deliveries.apply_status`, and `publishing.publish_message` (and `inbound_store.store_replies`)
  for the rows it inserts `skipped`.
  Bulk changes report in bulk (`record_deliveries`: one INSERT per batch).
- `inbound.received`: `inbound.record_inbound_sms` or, for a reply it deferred,
  `inbound_processing.process_received` (`process_batch`), once the record's status is decided.
- `contact.opted_out`, `contact.opted_in`: `organizations.opt_out`, `opt_in` (STOP, START, 21610).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.orm import Session

from bridge.db import UTCDateTime, get_owned, utcnow
from bridge.errors import ValidationError
from bridge.ids import new_id, new_ids
from bridge.models import Event
from bridge.pages import page

if TYPE_CHECKING:
    from bridge.models import Contact, Delivery, InboundSms, Message

# Each event type and the kind of object its `data.object` is.
EVENT_OBJECTS: dict[str, str] = {
    "message.created": "message",
    "message.updated": "message",
    "delivery.updated": "delivery",
    "inbound.received": "inbound_sms",
    "contact.opted_out": "contact",
    "contact.opted_in": "contact",
}
EVENT_TYPES = tuple(EVENT_OBJECTS)

RECORDED_KEY = "bridge.events.recorded"


def record_event(
    session: Session, organization_id: str, type: str, object_json: dict[str, Any]
) -> Event:
    """Add an event to the caller's transaction (one INSERT at its flush); it commits with it."""
    _check(type, object_json)
    event = Event(
        id=new_id("evt"),
        organization_id=organization_id,
        type=type,
        data={"object": object_json},
        created_at=utcnow(),
    )
    session.add(event)
    session.info.setdefault(RECORDED_KEY, []).append(event.id)
    return event


def record_events(
    session: Session, organization_id: str, items: Sequence[tuple[str, dict[str, Any]]]
) -> list[str]:
    """Add many events to the caller's transaction in one multi-row INSERT; their ids.

    For changes made in bulk (a fan-out's deliveries, a batch of sends recorded together), where
    one `record_event` per row would be one INSERT per row.
    """
    if not items:
        return []
    now = utcnow()
    ids = new_ids("evt", len(items))
    for type, object_json in items:
        _check(type, object_json)
    if session.get_bind().dialect.name == "postgresql":
        batch = [
            {"id": event_id, "type": type, "data": {"object": object_json}}
            for event_id, (type, object_json) in zip(ids, items, strict=True)
        ]
        session.execute(
            _INSERT_BATCH,
            {"e_organization_id": organization_id, "e_now": now, "e_batch": json.dumps(batch)},
        )
    else:
        rows = [
            {
                "id": event_id,
                "organization_id": organization_id,
                "type": type,
                "data": {"object": object_json},
                "created_at": now,
            }
            for event_id, (type, object_json) in zip(ids, items, strict=True)
        ]
        session.execute(insert(Event), rows)
    session.info.setdefault(RECORDED_KEY, []).extend(ids)
    return ids


# A batch of events in one statement on PostgreSQL: the batch goes as one JSON array whose
# elements become the rows of one INSERT. Inserted as a list of rows, each event was a statement of
# its own in psycopg's pipeline, the larger part of what a fan-out paid per SMS to report it.
_INSERT_BATCH = text(
    "INSERT INTO events (id, organization_id, type, data, created_at)"
    " SELECT e->>'id', :e_organization_id, e->>'type', e->'data', :e_now"
    " FROM json_array_elements(CAST(:e_batch AS json)) WITH ORDINALITY AS batch(e, n)"
    " ORDER BY n"  # their seq in the batch's order
).bindparams(bindparam("e_now", type_=UTCDateTime))


def _check(type: str, object_json: dict[str, Any]) -> None:
    expected = EVENT_OBJECTS.get(type)
    if expected is None:
        raise ValueError(f"unknown event type {type!r}")
    if object_json.get("object") != expected:
        raise ValueError(f"a {type} event carries a {expected}, not {object_json.get('object')!r}")


def take_recorded(session: Session) -> list[str]:
    """The ids of the events this session recorded since the last call (after its commit)."""
    ids: list[str] = session.info.pop(RECORDED_KEY, [])
    return ids


def event_body(event: Event) -> str:
    """The JSON body POSTed to endpoints (what the signature covers): the API's JSON of it."""
    from bridge.serialize import Event as EventModel

    return EventModel.read(event).model_dump_json(by_alias=True)


def get_event(session: Session, organization_id: str, event_id: str) -> Event:
    """The organization's event, or NotFound (also for another organization's)."""
    return get_owned(session, Event, organization_id, event_id)


def list_events(
    session: Session, organization_id: str, type: str | None, limit: int, before: str | None
) -> tuple[list[Event], bool]:
    """The organization's events, newest first, of one type when `type` is given."""
    scope = [Event.organization_id == organization_id]
    if type is not None:
        if type not in EVENT_OBJECTS:
            raise ValidationError(f"type must be one of {', '.join(EVENT_TYPES)}", "type")
        scope.append(Event.type == type)
    return page(session, Event, scope, limit, before, "an event")


# The objects events carry: the API's response models, dumped as the API answers them. The
# bridge.serialize package imports the modules that record events (threads, organizations), so it
# is imported where used, not at the top, to keep imports acyclic.


def dump(model: BaseModel) -> dict[str, Any]:
    """A response model as JSON data, exactly as the API writes it (aliases included)."""
    return model.model_dump(mode="json", by_alias=True)


def message_object(session: Session, message: Message) -> dict[str, Any]:
    """A message as the API returns it, named after its thread (or else its channel).

    The thread or channel is read through the session's identity map, so a domain function that
    has just loaded it pays no query.
    """
    from bridge.models import Channel, Thread
    from bridge.serialize import Message as MessageModel

    if message.thread_id:
        thread = session.get(Thread, (message.organization_id, message.thread_id))
        name, resource_id = (thread.name, thread.resource_id) if thread else (None, None)
        return dump(MessageModel.of(message, name, resource_id))
    channel = session.get(Channel, message.channel_id) if message.channel_id else None
    return dump(MessageModel.of(message, channel.name if channel else None, None))


def record_message(session: Session, type: str, message: Message) -> Event:
    """Record `message.created` or `message.updated` for a message as it is now."""
    return record_event(session, message.organization_id, type, message_object(session, message))


def record_deliveries(
    session: Session, deliveries: Iterable[Delivery], changes: Mapping[str, Any] | None = None
) -> None:
    """Record `delivery.updated` for each delivery, in one INSERT per organization.

    `changes` are fields a bulk UPDATE gave all of them after they were loaded (API names, as
    `status` or `updated_at`), so no row is read again to report them.
    """
    by_org: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for delivery in deliveries:
        data = delivery_object(delivery)
        if changes:
            data.update(changes)
        by_org.setdefault(delivery.organization_id, []).append(("delivery.updated", data))
    for organization_id, items in by_org.items():
        record_events(session, organization_id, items)


def delivery_object(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API returns it."""
    from bridge.serialize import Delivery as DeliveryModel

    return dump(DeliveryModel.of(delivery))


def inbound_object(inbound: InboundSms) -> dict[str, Any]:
    """An inbound SMS record as the API returns it."""
    from bridge.serialize import InboundSms as InboundSmsModel

    return dump(InboundSmsModel.of(inbound))


def contact_object(
    session: Session, contact: Contact, opted_out: bool | None = None
) -> dict[str, Any]:
    """A contact as the API returns it, with whether it has opted out (looked up unless given)."""
    from bridge.serialize import Contact as ContactModel

    if opted_out is None:
        return dump(ContactModel.load(session, contact))
    return dump(ContactModel.of(contact, opted_out))


def record_opt_change(session: Session, organization_id: str, digest: str, opted_out: bool) -> None:
    """Record `contact.opted_out` or `contact.opted_in` for the organization's contact, if any."""
    from bridge.models import Contact as ContactRow

    contact = session.execute(
        select(ContactRow).where(
            ContactRow.organization_id == organization_id, ContactRow.phone_hash == digest
        )
    ).scalar_one_or_none()
    if contact is not None:
        type = "contact.opted_out" if opted_out else "contact.opted_in"
        record_event(session, organization_id, type, contact_object(session, contact, opted_out))
