"""RQ jobs: module-level functions that take ids, use the process runtime, call the domain, return.

Failures reach RQ: nothing here catches an error to log it and carry on.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from bridge.db import transaction, utcnow
from bridge.models import Message
from bridge.publishing import publish_due_message
from workers.context import runtime
from workers.enqueue import (
    enqueue_fan_out,
    enqueue_published,
    enqueue_scheduled,
    start_fan_out,
)
from workers.fanout import fan_out_message
from workers.queues import TEXT

log = logging.getLogger(__name__)


def fan_out(
    message_id: str, queue: str = TEXT, token: str | None = None, rounds: int = 0
) -> dict[str, int]:
    """Send a published message's due deliveries; schedule another fan-out for what must wait.

    `queue` is the one this job came from (its follow-ups go there too); `token` says which
    enqueue this job is, so that of two fan-outs of one message only the newest runs.
    """
    rt = runtime()
    if not start_fan_out(rt.redis, message_id, token):
        return {"superseded": 1}  # a sooner fan-out of this message was queued after this one
    result = fan_out_message(rt, message_id, rounds=rounds, queue=queue)
    if result.next_at is not None:
        now = utcnow()
        enqueue_fan_out(
            rt.redis,
            message_id,
            queue,
            at=None if result.next_at <= now else result.next_at,
            rounds=result.rounds,
        )
    if result.errors:
        raise result.errors[0]
    return dict(result.statuses)


def publish_scheduled(message_id: str) -> str:
    """Publish a scheduled message if it is still due, not canceled and not yet published."""
    rt = runtime()
    now = utcnow()
    with transaction(rt.sessions) as session:
        message = session.execute(
            select(Message).where(Message.id == message_id).with_for_update()
        ).scalar_one_or_none()
        if message is None or message.canceled_at is not None or message.published_at is not None:
            return "skipped"
        when = message.publish_to_channel_at
        if message.channel_id is None or when is None:
            return "skipped"
        # RQ's scheduler keeps whole seconds and may fire early: then ask again at the time.
        published = None if when > now else publish_due_message(session, rt.settings, message, now)
    if published is None:
        enqueue_scheduled(rt.redis, message_id, when)
        return "rescheduled"
    enqueue_published(rt.redis, published)
    return "published"


def sweep() -> dict[str, int]:
    """Run one sweep (`workers.sweeper.sweep`) as a job."""
    from workers.sweeper import sweep as run_sweep

    return run_sweep(runtime())
