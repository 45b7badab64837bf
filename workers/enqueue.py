"""Enqueue functions, called after the transaction that made the work has committed.

Only ids go on the queue. Enqueueing never fails the caller: the database already holds the work,
and the sweeper finds whatever Redis did not take. This is all the web process takes from
`workers` (DESIGN 2): what it hands to the workers, and what it reads of their queues.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import redis
from rq import Queue, Retry
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from bridge.events import take_recorded
from bridge.messages import Posted
from bridge.models import Lane
from bridge.publishing import PublishResult
from workers import queues
from workers.slots import enqueue_in_slot, enqueue_once, start_slot, take_all

if TYPE_CHECKING:
    from bridge.runtime import Runtime

log = logging.getLogger(__name__)

FAN_OUT = "workers.jobs.fan_out"
PUBLISH_SCHEDULED = "workers.jobs.publish_scheduled"
DRAIN = "workers.inbound.drain"
PROCESS_INBOUND = "workers.inbound.process"
INBOUND_QUEUED = "bridge:inbound:process-queued"  # a processing job waits in the inbound queue
# Should the mark outlive its job (lost with a crash), new SMS queue a job again after this.
INBOUND_QUEUED_TTL = 10
# Messages relaying SMS the web process matched itself, for the inbound job to send together (a
# fan-out job each cost the worker more than the sends). Lost with Redis, the sweeper sends them.
RELAYS_WAITING = "bridge:inbound:relays"
# A lost job is the sweeper's (workers.inbound.redrive_received); a failed one retries soon.
_PROCESS_RETRY = [1, 5, 30]
DISPATCH_EVENTS = "workers.events.dispatch"
EVENT_JOB_TIMEOUT = 900  # a dispatch, or a drain posting a batch (each POST within WEBHOOK_TIMEOUT)
# A fan-out runs in slices (workers.fanout.SLICE_SECONDS), so an hour is far more than one needs.
FAN_OUT_TIMEOUT = 3600

# At most one fan-out per message waits in RQ: the message's slot (workers.slots).
FAN_OUT_KEY = "bridge:fanout:next:"
# How long after its time a waiting fan-out keeps others out, should its job be lost unseen.
FAN_OUT_KEY_TTL = 600

# Twilio webhooks kept while the database was down (`keep_payload`), drained by `workers.inbound`.
KEPT = "bridge:inbound:kept"  # a list: new payloads pushed on the left, drained from the right
DRAIN_QUEUED = "bridge:inbound:drain-queued"  # at most one drain job queued at a time, roughly
SMS = "sms"  # the kinds of kept webhook
STATUS = "status"
# The database may take minutes to come back; the sweeper drains too, so this only speeds it up.
_RETRY_INTERVALS = [5, 10, 30, 60, 120, 300]

# Committed events waiting for their dispatch: ids pushed on the right after each commit, and at
# most one dispatch job queued for them all, roughly (this key is set while one is).
EVENTS_WAITING = "bridge:events:waiting"
DISPATCH_QUEUED = "bridge:events:dispatch-queued"
DISPATCH_QUEUED_TTL = 300  # a lost job keeps others out this long; the sweeper's redrive covers it

# At most one drain of an endpoint's events waits in RQ: the endpoint's slot (workers.slots).
EVENT_DRAIN_KEY = "bridge:events:drain:"
EVENT_DRAIN_KEY_TTL = 300
DELIVER_EVENTS = "workers.events.deliver_events"

_ON_COMMIT = "workers.enqueue.on_commit"  # session.info key: what waits for the commit


def enqueue_on_commit(session: Session, connection: redis.Redis, posted: Posted) -> None:
    """Enqueue what posting made once `session`'s transaction commits; nothing if it rolls back.

    As zulip's queue_event_on_commit: called inside the transaction, beside the domain call, so no
    call site enqueues before the rows are there to read, nor forgets to enqueue after. A savepoint
    released or rolled back inside the transaction does not count.
    """
    waiting: list[tuple[redis.Redis, Posted]] | None = session.info.get(_ON_COMMIT)
    if waiting is None:
        waiting = session.info[_ON_COMMIT] = []
        event.listen(session, "after_commit", _enqueue_waiting)
        event.listen(session, "after_soft_rollback", _forget_waiting)
    waiting.append((connection, posted))


def _enqueue_waiting(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released, not the transaction committed
    waiting = session.info[_ON_COMMIT]
    ready, waiting[:] = list(waiting), []
    for connection, posted in ready:
        enqueue_posted(connection, posted)


def _forget_waiting(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:
        session.info[_ON_COMMIT].clear()


def enqueue_published(connection: redis.Redis, result: PublishResult) -> bool:
    """Queue the fan-out of a freshly published message; False if Redis could not take it."""
    if result.pending == 0:
        return True
    return enqueue_fan_out(connection, result.message_id, queues.for_lane(result.lane))


def enqueue_fan_out(
    connection: redis.Redis,
    message_id: str,
    queue: str,
    at: datetime | None = None,
    rounds: int = 0,
) -> bool:
    """Queue (or schedule at `at`) the message's fan-out unless one as soon is already waiting.

    `rounds` counts consecutive fan-outs held back by the per-phone order (for their backoff).
    Returns False only if Redis could not take it.
    """
    return enqueue_in_slot(
        connection,
        FAN_OUT_KEY + message_id,
        FAN_OUT_KEY_TTL,
        queue,
        FAN_OUT,
        (message_id,),
        job_timeout=FAN_OUT_TIMEOUT,
        at=at,
        kwargs={"queue": queue, "rounds": rounds},
    )


def start_fan_out(connection: redis.Redis, message_id: str, token: str | None) -> bool:
    """Free the message's fan-out slot as its job starts; False if a newer fan-out replaced it."""
    return start_slot(connection, FAN_OUT_KEY + message_id, token)


def enqueue_event_drain(
    connection: redis.Redis, endpoint_id: str, at: datetime | None = None
) -> bool:
    """Queue (or schedule at `at`) a drain of the endpoint's events unless one as soon waits.

    Returns False only if Redis could not take it (the sweeper redrives overdue endpoints).
    """
    return enqueue_in_slot(
        connection,
        EVENT_DRAIN_KEY + endpoint_id,
        EVENT_DRAIN_KEY_TTL,
        queues.EVENTS,
        DELIVER_EVENTS,
        (endpoint_id,),
        job_timeout=EVENT_JOB_TIMEOUT,
        at=at,
    )


def start_event_drain(connection: redis.Redis, endpoint_id: str, token: str | None) -> bool:
    """Free the endpoint's drain slot as its job starts; False if a sooner drain replaced it."""
    return start_slot(connection, EVENT_DRAIN_KEY + endpoint_id, token)


def enqueue_scheduled(connection: redis.Redis, message_id: str, when: datetime) -> bool:
    """Ask RQ's scheduler to publish a message at `when`; if this is lost, the sweeper does."""
    try:
        # On the first-priority queue: behind bulk notifications it would not go within a second.
        Queue(queues.TEXT, connection=connection).enqueue_at(
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


def keep_payload(
    connection: redis.Redis,
    kind: str,
    url: str,
    pairs: list[tuple[str, str]],
    signature: str,
    signature_settings: str | None = None,
    idempotency_token: str | None = None,
) -> None:
    """Keep a verified webhook in Redis for later; raises RedisError when Redis cannot take it."""
    payload = {
        "kind": kind,
        "url": url,
        "params": pairs,
        "signature": signature,
        "signature_settings": signature_settings,
        "idempotency_token": idempotency_token,
        "kept_at": time.time(),
    }
    connection.lpush(KEPT, json.dumps(payload))
    enqueue_drain(connection)


def enqueue_inbound(connection: redis.Redis, relays: Sequence[str] = ()) -> bool:
    """Queue a job to process the SMS the webhook stored, unless one waits already; `relays`
    (message ids) join the ones it sends as it ends, in the same round trip.

    One job takes every SMS waiting when it runs, so at most one is queued (the mark is cleared as
    it starts). Returns False only if Redis could not take it.
    """
    return enqueue_once(
        connection,
        INBOUND_QUEUED,
        INBOUND_QUEUED_TTL,
        queues.INBOUND,
        PROCESS_INBOUND,
        waiting=(RELAYS_WAITING, relays) if relays else None,
        retry=Retry(max=len(_PROCESS_RETRY), interval=_PROCESS_RETRY),
    )


def enqueue_relays(connection: redis.Redis, posted: Sequence[Posted]) -> bool:
    """Hand the relays of SMS the web process matched itself to the inbound job, which sends them
    together with its own; anything else posted is enqueued as usual. False if Redis failed."""

    def relay(p: Posted) -> bool:
        return bool(p.published and p.published.pending and p.published.lane == Lane.TEXT)

    relays = [p for p in posted if relay(p)]
    others = [p for p in posted if not relay(p)]
    done = [enqueue_posted(connection, p) for p in others]
    if relays and not enqueue_inbound(connection, [p.message.id for p in relays]):
        done += [enqueue_posted(connection, p) for p in relays]  # each its own fan-out
    return all(done)


def take_waiting_relays(connection: redis.Redis) -> list[str]:
    """Take the message ids of the relays waiting for the inbound job (as it ends its work)."""
    return take_all(connection, RELAYS_WAITING)


def start_inbound(connection: redis.Redis) -> None:
    """Clear the queued mark as a processing job starts: SMS stored from now on queue another."""
    connection.delete(INBOUND_QUEUED)


def enqueue_drain(connection: redis.Redis) -> bool:
    """Queue a drain job (retried while the database stays down); False if Redis did not take it."""
    return enqueue_once(
        connection,
        DRAIN_QUEUED,
        60,
        queues.MAINTENANCE,
        DRAIN,
        retry=Retry(max=len(_RETRY_INTERVALS) * 4, interval=_RETRY_INTERVALS),
    )


def queue_depths(connection: redis.Redis) -> dict[str, dict[str, int]]:
    """Jobs per queue (in priority order) and state: queued, started, scheduled, failed."""
    depths = {}
    for name in queues.ALL:
        queue = Queue(name, connection=connection)
        depths[name] = {
            "queued": queue.count,
            "started": StartedJobRegistry(queue=queue).count,
            "scheduled": ScheduledJobRegistry(queue=queue).count,
            "failed": FailedJobRegistry(queue=queue).count,
        }
    return depths


def sweep_now(runtime: Runtime) -> dict[str, int]:
    """Run one sweep in this process, as the worker does every SWEEP_INTERVAL; returns its counts.

    For `bridge sweep`: an operator who wants what is due published without waiting for a worker.
    """
    from workers.sweeper import sweep  # the sweep itself belongs to the worker side

    return sweep(runtime)


def enqueue_dispatch(connection: redis.Redis, event_ids: Sequence[str]) -> bool:
    """Queue the dispatch of freshly committed events; False if Redis could not take it.

    The ids join the list of waiting events, and a dispatch job is queued only if none is yet: a
    fan-out commits every few milliseconds, and a job per commit cost the worker more than the
    dispatching itself. The job takes every id waiting when it starts.
    """
    if not event_ids:
        return True
    return enqueue_once(
        connection,
        DISPATCH_QUEUED,
        DISPATCH_QUEUED_TTL,
        queues.EVENTS,
        DISPATCH_EVENTS,
        waiting=(EVENTS_WAITING, event_ids),
        job_timeout=EVENT_JOB_TIMEOUT,
    )


def take_waiting_events(connection: redis.Redis) -> list[str]:
    """Take the ids of the events waiting for dispatch (for the dispatch job, as it starts)."""
    # Cleared first: an id pushed from here on either is taken below or queues a job of its own.
    connection.delete(DISPATCH_QUEUED)
    return take_all(connection, EVENTS_WAITING)


_installed: weakref.WeakSet[sessionmaker[Session]] = weakref.WeakSet()


def install_enqueue_on_commit(rt: Runtime) -> None:
    """After each commit of `rt`'s sessions, queue the dispatch of the events it recorded."""
    sessions = rt.sessions
    if sessions in _installed:
        return
    _installed.add(sessions)

    def after_commit(session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint released, not the transaction committed
        enqueue_dispatch(rt.redis, take_recorded(session))

    def after_rollback(session: Session) -> None:
        take_recorded(session)  # rolled back: those events do not exist

    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_rollback", after_rollback)
