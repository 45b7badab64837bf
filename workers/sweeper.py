"""The sweeper: rebuilds from the database whatever work Redis lost (DESIGN 5.4, 5.7).

One sweep (also `bridge sweep`):
- processes inbound SMS kept in Redis while the database was down (`workers.inbound.drain_kept`),
  and those the webhook stored whose matching job Redis lost (`redrive_received`);
- publishes scheduled messages that are due, and enqueues their fan-out;
- settles deliveries left `sending`/`unknown` past SEND_STALE_AFTER by asking Twilio first;
- re-enqueues the fan-out of messages whose deliveries sat `pending` past SEND_STALE_AFTER;
- redrives events whose dispatch or drain Redis lost (`workers.events.redrive_events`);
- deletes what is past RETENTION_DAYS (deliveries, inbound SMS records, events, webhook
  attempts), in small batches (`bridge.retention`).

Each worker starts it in a process of its own (`start_sweeper_process`), every SWEEP_INTERVAL,
not through Redis, so it keeps going after Redis is flushed or the worker restarts. A short Redis
lock lets one worker sweep per interval however many run; the sweep itself is safe to run twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import time
from datetime import datetime

import redis

from bridge.claims import stale_pending_messages
from bridge.db import transaction, utcnow
from bridge.publishing import publish_due_messages
from bridge.retention import purge_expired
from bridge.runtime import Runtime
from bridge.stale import resolve_stale
from workers import queues
from workers.enqueue import enqueue_fan_out, enqueue_published, install_enqueue_on_commit
from workers.events import redrive_events
from workers.inbound import drain_kept, redrive_received

log = logging.getLogger(__name__)

LOCK_KEY = "bridge:sweeper:lock"
# A fan-out re-enqueued by the sweeper is not re-enqueued again until this window has passed.
REENQUEUE_KEY = "bridge:sweeper:requeued:"


def sweep(runtime: Runtime, now: datetime | None = None) -> dict[str, int]:
    """Run one sweep and return counts of what it did."""
    now = now or utcnow()
    settings = runtime.settings
    counts: dict[str, int] = {"inbound": drain_kept(runtime)}
    counts["inbound_redriven"] = redrive_received(runtime, now)

    with transaction(runtime.sessions) as session:
        published = publish_due_messages(session, settings, now)
    for result in published:
        enqueue_published(runtime.redis, result)
    counts["published"] = len(published)

    stale = resolve_stale(runtime.sessions, settings, runtime.sender, now)
    counts.update(
        stale_found=stale.found,
        stale_resent=stale.resend,
        stale_failed=stale.failed,
        stale_unresolved=stale.unresolved,
    )
    for message_id, lane in stale.messages.items():
        enqueue_fan_out(runtime.redis, message_id, queues.for_lane(lane))

    with runtime.sessions() as session:
        lost = stale_pending_messages(session, settings, now)
    requeued = 0
    window = max(1, int(settings.send_stale_after))
    for message_id, lane in lost.items():
        try:
            fresh = runtime.redis.set(REENQUEUE_KEY + message_id, 1, nx=True, ex=window)
        except redis.RedisError:
            fresh = True  # better a second fan-out (claims are exclusive) than none
        if fresh and enqueue_fan_out(runtime.redis, message_id, queues.for_lane(lane)):
            requeued += 1
    counts["requeued"] = requeued
    counts.update(redrive_events(runtime, now))
    for table, deleted in purge_expired(runtime.engine, settings, now).items():
        counts[f"purged_{table}"] = deleted
    if any(counts.values()):
        log.info("sweep", extra={"counts": counts})
    return counts


def sweep_once(runtime: Runtime, interval: float) -> dict[str, int] | None:
    """Sweep unless another worker swept in this interval; a failure is logged, never raised."""
    try:
        lock_ms = max(100, int(interval * 900))
        if not runtime.redis.set(LOCK_KEY, 1, nx=True, px=lock_ms):
            return None
    except redis.RedisError:
        pass  # Redis is down: sweep anyway, the database is what matters
    try:
        return sweep(runtime)
    except Exception:
        # The loop is the process's safety net: the database or Redis may be away for a while,
        # and the next interval tries again. Jobs never do this; this loop must not die.
        log.exception("sweep failed; trying again next interval")
        return None


def run_sweeper_process(parent_pid: int) -> None:
    """The sweeper's own process: sweep every SWEEP_INTERVAL until the worker that started it ends.

    The worker process forks (RQ's scheduler). A thread of its own that holds a lock (a connection
    pool's, logging's) at the moment of a fork leaves that lock held forever in the child, which
    then hangs; so the sweeper runs in a process apart, started with `spawn`.
    """
    from bridge.logs import configure_logging
    from bridge.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    runtime = Runtime(settings)
    install_enqueue_on_commit(runtime)  # events its sweeps record go out after their commit
    interval = settings.sweep_interval
    try:
        while os.getppid() == parent_pid:
            time.sleep(interval)
            sweep_once(runtime, interval)
    finally:
        runtime.close()


def start_sweeper_process() -> multiprocessing.process.BaseProcess:
    """Start the sweeper in a process of its own (see `run_sweeper_process`)."""
    process = multiprocessing.get_context("spawn").Process(
        target=run_sweeper_process, args=(os.getpid(),), name="sweeper", daemon=True
    )
    process.start()
    return process
