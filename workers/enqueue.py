"""Enqueue functions, called after the transaction that made the work has committed.

Only ids go on the queue. Enqueueing never fails the caller: the database already holds the work,
and the sweeper finds whatever Redis did not take.
"""

from __future__ import annotations

import logging
from datetime import datetime

import redis
from rq import Queue

from bridge.channels import PublishResult
from bridge.messages import Posted
from workers import queues

log = logging.getLogger(__name__)

FAN_OUT = "workers.jobs.fan_out"
PUBLISH_SCHEDULED = "workers.jobs.publish_scheduled"
# A fan-out runs in slices (workers.fanout.SLICE_SECONDS), so an hour is far more than one needs.
FAN_OUT_OPTIONS = {"job_timeout": 3600, "result_ttl": 0, "failure_ttl": 86400}


def enqueue_published(connection: redis.Redis, result: PublishResult) -> bool:
    """Queue the fan-out of a freshly published message; False if Redis could not take it."""
    if result.pending == 0:
        return True
    return enqueue_fan_out(connection, result.message_id, result.queue)


def enqueue_fan_out(
    connection: redis.Redis, message_id: str, queue: str, at: datetime | None = None
) -> bool:
    """Queue (or schedule at `at`) one fan-out of a message; False if Redis could not take it."""
    try:
        target = Queue(queue, connection=connection)
        if at is None:
            target.enqueue(FAN_OUT, message_id, **FAN_OUT_OPTIONS)
        else:
            target.enqueue_at(at, FAN_OUT, message_id, **FAN_OUT_OPTIONS)
    except redis.RedisError:
        log.warning(
            "fan-out not enqueued; the sweeper will pick it up", extra={"message_id": message_id}
        )
        return False
    return True


def enqueue_scheduled(connection: redis.Redis, message_id: str, when: datetime) -> bool:
    """Ask RQ's scheduler to publish a message at `when`; if this is lost, the sweeper does."""
    try:
        Queue(queues.MAINTENANCE, connection=connection).enqueue_at(
            when, PUBLISH_SCHEDULED, message_id, result_ttl=0, failure_ttl=86400
        )
    except redis.RedisError:
        log.warning(
            "scheduled publish not enqueued; the sweeper will pick it up",
            extra={"message_id": message_id},
        )
        return False
    return True


def enqueue_posted(connection: redis.Redis, posted: Posted) -> bool:
    """Enqueue whatever posting a message made: its fan-out now, or its publishing later."""
    if posted.published is not None:
        return enqueue_published(connection, posted.published)
    message = posted.message
    if message.channel_id and message.published_at is None and message.publish_to_channel_at:
        return enqueue_scheduled(connection, message.id, message.publish_to_channel_at)
    return True
