"""Retention (DESIGN 5.9): records older than RETENTION_DAYS deleted in small batches.

Deliveries, inbound SMS records, events (with their rows per endpoint) and webhook attempts past
`RETENTION_DAYS` (0 keeps everything) are deleted by the sweeper, at most `BATCH` rows per
statement, each statement its own short transaction: no lock is held for long and traffic goes on
while a backlog of months is purged. Threads, channels, messages and contacts are the conversation
record and are kept.

Each table has one function that deletes one batch older than a cutoff, through an index, and
returns how many rows went; `PURGES` lists them, so a new table is one function and one line there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, delete, select
from sqlalchemy.orm import InstrumentedAttribute

from bridge.db import utcnow
from bridge.models import Delivery, DeliveryStatus, Event, EventDelivery, InboundSms, WebhookAttempt
from bridge.settings import Settings

BATCH = 2000  # rows per DELETE: each statement locks this many rows for milliseconds
# A purge gives way after this many batches per table; the next sweep carries on.
MAX_BATCHES = 25

Purge = Callable[[Connection, datetime, int], int]


def purge_deliveries(connection: Connection, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` deliveries last changed before `cutoff`."""
    # Every status named, so the (status, updated_at) index finds the old rows of each.
    old = (
        select(Delivery.id)
        .where(Delivery.status.in_(list(DeliveryStatus)))
        .where(Delivery.updated_at < cutoff)
        .limit(limit)
    )
    return int(connection.execute(delete(Delivery).where(Delivery.id.in_(old))).rowcount or 0)


def _first_old(
    key: InstrumentedAttribute[Any],
    seq: InstrumentedAttribute[int],
    moment: InstrumentedAttribute[datetime],
    cutoff: datetime,
    limit: int,
) -> Select[Any]:
    """The `key`s of the rows before `cutoff` among the `limit` first by `seq`.

    These records are numbered as they are written (`seq`), so the old ones come first: reading
    the first `limit` through the primary key costs the same however many rows the table holds,
    where a filter on the time alone would scan them all when nothing is old.
    """
    head = select(key, moment).order_by(seq).limit(limit).subquery()
    return select(head.c[key.key]).where(head.c[moment.key] < cutoff)


def purge_inbound_sms(connection: Connection, cutoff: datetime, limit: int) -> int:
    """Delete the inbound SMS records received before `cutoff` among the `limit` oldest."""
    old = _first_old(InboundSms.seq, InboundSms.seq, InboundSms.received_at, cutoff, limit)
    return int(connection.execute(delete(InboundSms).where(InboundSms.seq.in_(old))).rowcount or 0)


def purge_webhook_attempts(connection: Connection, cutoff: datetime, limit: int) -> int:
    """Delete the webhook attempts made before `cutoff` among the `limit` oldest."""
    old = _first_old(
        WebhookAttempt.seq, WebhookAttempt.seq, WebhookAttempt.attempted_at, cutoff, limit
    )
    deleted = connection.execute(delete(WebhookAttempt).where(WebhookAttempt.seq.in_(old)))
    return int(deleted.rowcount or 0)


def purge_events(connection: Connection, cutoff: datetime, limit: int) -> int:
    """Delete the events recorded before `cutoff` among the `limit` oldest, with their rows per
    endpoint (which point at them)."""
    ids = list(connection.execute(_first_old(Event.id, Event.seq, Event.created_at, cutoff, limit)))
    if not ids:
        return 0
    event_ids = [row[0] for row in ids]
    connection.execute(delete(EventDelivery).where(EventDelivery.event_id.in_(event_ids)))
    return int(connection.execute(delete(Event).where(Event.id.in_(event_ids))).rowcount or 0)


PURGES: dict[str, Purge] = {
    "deliveries": purge_deliveries,
    "inbound_sms": purge_inbound_sms,
    "webhook_attempts": purge_webhook_attempts,
    "events": purge_events,
}


def purge_expired(
    engine: Engine,
    settings: Settings,
    now: datetime | None = None,
    batch: int = BATCH,
    max_batches: int = MAX_BATCHES,
) -> dict[str, int]:
    """Delete what is past RETENTION_DAYS, table by table, in batches; returns rows per table."""
    if settings.retention_days <= 0:
        return {}
    cutoff = (now or utcnow()) - timedelta(days=settings.retention_days)
    deleted: dict[str, int] = {}
    for table, purge in PURGES.items():
        deleted[table] = 0
        for _ in range(max_batches):
            with engine.begin() as connection:
                count = purge(connection, cutoff, batch)
            deleted[table] += count
            if count < batch:
                break
            time.sleep(0.01)  # let waiting writers in between batches
    return deleted
