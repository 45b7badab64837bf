"""Events out on the `events` queue: dispatch, per-endpoint drains, and the sweeper's redrive.

- `dispatch()` makes each waiting event's per-endpoint deliveries and queues a drain per endpoint;
  it is enqueued after the commit that recorded the events (`enqueue.install_enqueue_on_commit`),
  unless one is queued already: one job takes the events of every commit before it started.
- `deliver_events(endpoint_id)` drains one endpoint: claims its due deliveries in batches, POSTs
  them, records each attempt, and schedules itself for the next retry. At most
  `MAX_IN_FLIGHT_PER_ENDPOINT` drains of one endpoint run at once (a Redis semaphore whose
  entries expire, so a killed worker frees its place), so one slow endpoint ties up at most that
  many events workers and every other endpoint's drain goes on. The `events` queue has a worker
  of its own in each worker process (`workers.worker`): no SMS ever waits behind a POST. A drain
  asked to stop (SIGTERM) stops after the POST in progress and queues its sequel.
- `redrive_events(runtime, now)` (called by every sweep) dispatches events whose job Redis lost and
  re-queues drains of endpoints with overdue deliveries.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from datetime import datetime, timedelta

import redis

from bridge.db import transaction, utcnow
from bridge.event_dispatch import DISPATCH_BATCH, dispatch_events, undispatched_event_ids
from bridge.event_sending import (
    Outcome,
    claim_due,
    next_due_at,
    overdue_endpoints,
    record_attempts,
    release,
)
from bridge.events_sender import EventSender, HttpEventSender
from bridge.runtime import Runtime
from workers import context
from workers.context import runtime
from workers.enqueue import enqueue_event_drain, start_event_drain, take_waiting_events

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_ENDPOINT = 2
SLICE_SECONDS = 30.0  # a drain hands its worker back after this long, and queues its sequel
# The sweeper leaves a delivery this long past due before it decides its drain was lost.
OVERDUE_GRACE = timedelta(seconds=30)

IN_FLIGHT_KEY = "bridge:events:inflight:"  # a sorted set: drain token -> lease expiry

# A place among the endpoint's drains in flight: expired places are dropped first.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
"""


def dispatch(event_ids: list[str] | None = None) -> int:
    """Make the events' per-endpoint deliveries and queue a drain of each endpoint touched.

    Without ids, the events waiting for dispatch (`enqueue.enqueue_dispatch`). A worker killed
    after taking them leaves them undispatched in the database, where the sweeper finds them.
    """
    rt = runtime()
    ids = take_waiting_events(rt.redis) if event_ids is None else event_ids
    touched: set[str] = set()
    for start in range(0, len(ids), DISPATCH_BATCH):
        with transaction(rt.sessions) as session:
            touched.update(dispatch_events(session, ids[start : start + DISPATCH_BATCH], utcnow()))
    for endpoint_id in sorted(touched):
        enqueue_event_drain(rt.redis, endpoint_id)
    return len(touched)


def deliver_events(
    endpoint_id: str, token: str | None = None, sender: EventSender | None = None
) -> dict[str, int]:
    """Send the endpoint's due events, then schedule the drain that comes next."""
    rt = runtime()
    if not start_event_drain(rt.redis, endpoint_id, token):
        return {"superseded": 1}
    place = secrets.token_hex(8)
    if not _acquire(rt, endpoint_id, place):
        # As many drains as allowed are at it; they go on until nothing is due.
        return {"busy": 1}
    own_sender = sender is None
    sender = sender or HttpEventSender(rt.settings.webhook_timeout, rt.settings.is_production)
    counts = {"succeeded": 0, "failed": 0}
    started = time.monotonic()
    try:
        while time.monotonic() - started < SLICE_SECONDS:
            batch = claim_due(rt.sessions, rt.settings, endpoint_id)
            if not batch:
                break
            _acquire(rt, endpoint_id, place)  # extend the lease
            outcomes = []
            stopping = False
            for claimed in batch:
                attempted_at = utcnow()
                result = sender.post(claimed.outgoing(attempted_at))
                outcomes.append(Outcome(claimed, result, attempted_at))
                if not result.ok:
                    break  # a failing endpoint is not sent the rest of the batch
                if context.stopping():
                    stopping = True  # the process is shutting down: the sequel is queued
                    break
            recorded = record_attempts(rt.sessions, outcomes)
            counts["succeeded"] += sum(1 for o in outcomes if o.result.ok)
            counts["failed"] += sum(1 for o in outcomes if not o.result.ok)
            unsent = [c.delivery_id for c in batch[len(outcomes) :]]
            if not outcomes[-1].result.ok:
                release(rt.sessions, unsent, recorded[-1].next_attempt_at)
                break
            if stopping:
                release(rt.sessions, unsent, None)
                counts["stopped"] = 1
                break
    finally:
        _release(rt, endpoint_id, place)
        if own_sender:
            sender.close()
    _queue_next(rt, endpoint_id)
    return counts


def _queue_next(rt: Runtime, endpoint_id: str) -> None:
    with rt.sessions() as session:
        when = next_due_at(session, endpoint_id)
    if when is None:
        return
    now = utcnow()
    enqueue_event_drain(rt.redis, endpoint_id, None if when <= now else when)


def _acquire(rt: Runtime, endpoint_id: str, place: str) -> bool:
    lease = SLICE_SECONDS + 2 * rt.settings.webhook_timeout + 30
    now = time.time()
    try:
        return bool(
            rt.redis.register_script(_ACQUIRE)(
                keys=[IN_FLIGHT_KEY + endpoint_id],
                args=[now, MAX_IN_FLIGHT_PER_ENDPOINT, now + lease, place, int(lease) + 60],
            )
        )
    except redis.RedisError:
        return True  # the claims in the database still keep two drains off one delivery


def _release(rt: Runtime, endpoint_id: str, place: str) -> None:
    with contextlib.suppress(redis.RedisError):  # else the place expires with its lease
        rt.redis.zrem(IN_FLIGHT_KEY + endpoint_id, place)


def redrive_events(rt: Runtime, now: datetime | None = None) -> dict[str, int]:
    """Dispatch events whose job was lost and re-queue drains of endpoints left overdue."""
    now = now or utcnow()
    with rt.sessions() as session:
        lost = undispatched_event_ids(session, now - OVERDUE_GRACE)
    touched: set[str] = set()
    if lost:
        with transaction(rt.sessions) as session:
            touched.update(dispatch_events(session, lost, now))
    with rt.sessions() as session:
        touched.update(overdue_endpoints(session, rt.settings, now - OVERDUE_GRACE, now))
    requeued = sum(
        1 for endpoint_id in sorted(touched) if enqueue_event_drain(rt.redis, endpoint_id)
    )
    return {"events_dispatched": len(lost), "event_drains": requeued}
