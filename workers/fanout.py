"""Fan-out of one message: claim its deliveries in batches and send them through a thread pool.

One job per message, not one per recipient: per recipient the cost is a row in a batched claim, its
rate-limit slot (one Redis call), one request to Twilio, and a row in the UPDATE batch that records
the SIDs of the sends finished within `RECORD_EVERY`; a claim is renewed (one autocommit UPDATE)
only when its send waited long for its slot. Up to `send_concurrency` requests are in flight at
once, each paced by the per-sender rate limit in Redis. The send threads share one GIL: every
millisecond of bookkeeping per SMS is paid in series, so the hot path uses Core statements, not ORM
loads.

A fan-out runs for at most `SLICE_SECONDS` (or until the worker is asked to stop), then hands the
rest to a new job at the back of its queue: a 10,000-recipient notification at one segment per
second must not hold a worker for hours while conversational text waits. Deliveries that cannot go
yet (quiet hours, a retry's backoff, an earlier SMS to the same phone still on its way) get a job
scheduled for when they can.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rq import Queue
from rq.job import Job

from bridge.claims import claim_deliveries, next_attempt_at, next_attempts
from bridge.db import transaction, utcnow
from bridge.models import Delivery
from bridge.runtime import Runtime
from bridge.sending import SENT, SendOutcome, record_sends, send_unrecorded
from bridge.twilio_client import SendResult
from workers import context
from workers.enqueue import FAN_OUT
from workers.queues import TEXT as QUEUE_TEXT
from workers.ratelimit import SendRateLimiter

log = logging.getLogger(__name__)

SLICE_SECONDS = 60.0
# Held back by an earlier SMS to the same phone: look again soon (RQ's scheduler ticks each
# second), then less and less often while the earlier one stays on its way (a retry's backoff,
# an `unknown` send the sweeper settles), so that a held-back message costs little.
BLOCKED_RETRY = 1.0
BLOCKED_RETRY_MAX = 60.0
# How long the SIDs of finished sends may wait to be saved together (DESIGN 5.4: "at once").
RECORD_EVERY = 0.005
# Claims keep up to this many times SEND_CONCURRENCY deliveries claimed and not yet settled: a
# claim costs ~6 ms of this process's time and ~20 ms of the database's whatever its size.
CLAIM_AHEAD = 3
# While sending others' queued messages alongside, how often to look for more in the queue.
ABSORB_EVERY = 0.02
# The queued jobs this process has already taken messages from (oldest first, at most SEEN_JOBS):
# when those jobs run, they do not look at the same queued jobs again.
SEEN_JOBS = 10_000
_seen_jobs: dict[str, None] = {}


def blocked_delay(rounds: int) -> timedelta:
    """How long a fan-out held back `rounds` times in a row waits before looking again."""
    return timedelta(seconds=min(BLOCKED_RETRY_MAX, BLOCKED_RETRY * 2 ** min(rounds, 16)))


@dataclass
class FanOutResult:
    """What one fan-out slice did, and when the message's remaining deliveries should be tried."""

    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[BaseException] = field(default_factory=list)
    next_at: datetime | None = None
    rounds: int = 0  # held back this many times in a row (0: not held back)


def _send(
    runtime: Runtime, limiter: SendRateLimiter, delivery: Delivery, claimed: float
) -> SendOutcome:
    # A claim that must be renewed is renewed on a connection taken from the pool for that one
    # UPDATE, never held across the request to Twilio: send threads holding connections while the
    # fan-out loop waited for one to record SIDs is how a pool smaller than the concurrency
    # livelocked.
    return send_unrecorded(
        runtime.engine,
        runtime.sessions,
        runtime.settings,
        runtime.sender,
        delivery,
        limiter.take,
        claimed,
    )


def _settle(runtime: Runtime, done: set[Future[SendOutcome]], result: FanOutResult) -> None:
    """Count finished sends and save the SIDs of the accepted ones in one transaction."""
    sent: list[tuple[str, SendResult]] = []
    for future in done:
        error = future.exception()
        if error is not None:
            # The delivery stays `sending`; the sweeper settles it. Reported to RQ by the job.
            log.error("sending a delivery failed", exc_info=error)
            result.errors.append(error)
            continue
        outcome = future.result()
        if outcome.result is not None:
            sent.append((outcome.delivery_id, outcome.result))
        else:
            result.statuses[str(outcome.status)] += 1
    if not sent:
        return
    try:
        with transaction(runtime.sessions) as session:
            record_sends(session, sent)
    except Exception as error:
        # Left `sending`: the sweeper finds these SIDs at Twilio and records them; never resent.
        log.error("recording %d sent SMS failed", len(sent), exc_info=error)
        result.errors.append(error)
        return
    # A status callback that came first keeps its later state; this counts accepted sends.
    result.statuses[SENT] += len(sent)


def fan_out_message(
    runtime: Runtime,
    message_id: str,
    slice_seconds: float = SLICE_SECONDS,
    rounds: int = 0,
    queue: str | None = None,
) -> FanOutResult:
    """Send every due delivery of a message, concurrently, for at most `slice_seconds`.

    With `queue` (the `text` queue only), the due deliveries of messages whose fan-outs wait in
    that queue go out alongside (see `_FanOut`).
    """
    result = FanOutResult()
    # Only conversation is sent alongside: a bulk notification must not keep text waiting.
    run = _FanOut(runtime, message_id, result, queue if queue == QUEUE_TEXT else None)
    sliced = run.run(time.monotonic() + slice_seconds)
    _plan_next(runtime, message_id, result, sliced, rounds, run.claimed_own)
    return result


def fan_out_together(
    runtime: Runtime, message_ids: list[str], slice_seconds: float = SLICE_SECONDS
) -> dict[str, datetime]:
    """Send the due deliveries of several freshly published text messages in one slice, here.

    For the relays of the inbound SMS a job just processed (a recipient or two each): one pool
    sends them all at once, instead of one queued fan-out job per reply. Returns, for each message
    with deliveries left (held back, rate limited, to retry), when they should be tried.
    """
    if not message_ids:
        return {}
    first, others = message_ids[0], list(message_ids[1:])
    result = FanOutResult()
    run = _FanOut(runtime, first, result, None, others)
    run.run(time.monotonic() + slice_seconds)
    if result.errors:
        raise result.errors[0]
    with runtime.sessions() as session:
        return next_attempts(session, message_ids)


class _FanOut:
    """One fan-out slice: claims in batches, sends on a thread pool, records SIDs together.

    A message to one or two contacts (a relayed reply) is mostly waiting on Twilio. With `queue`,
    once this message has nothing left to claim the slice also claims the due deliveries of the
    messages whose fan-out jobs joined that queue behind it, so that a worker sends many small
    messages at once instead of one after another; their own jobs then find little or nothing to
    do. Claims are exclusive, so a delivery still goes once whichever job sends it.
    """

    def __init__(
        self,
        runtime: Runtime,
        message_id: str,
        result: FanOutResult,
        queue: str | None,
        others: list[str] | None = None,
    ) -> None:
        self.runtime = runtime
        self.message_id = message_id
        self.result = result
        self.queue = queue
        self.others = others  # messages to send alongside, given rather than found in the queue
        self.concurrency = max(1, runtime.settings.send_concurrency)
        self.limiter = SendRateLimiter(runtime.redis, runtime.settings.send_rate_per_sender)
        self.in_flight: set[Future[SendOutcome]] = set()
        self.claimed_own = 0

    def run(self, deadline: float) -> bool:
        """Send until nothing is left or the deadline passes; True if cut short (sliced)."""
        sliced = False
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="send") as pool:
                while True:
                    # Claim while a batch still waits in the pool's queue, so no thread waits on
                    # a claim: claiming only once the queue had run dry left the threads idle for
                    # the claim's tens of milliseconds, a third of a zero-latency fan-out.
                    if len(self.in_flight) <= (CLAIM_AHEAD - 1) * self.concurrency:
                        if time.monotonic() >= deadline or context.stopping():
                            sliced = True
                        else:
                            self._claim(pool)
                    if not self.in_flight:
                        break
                    self._settle_some()
        finally:
            # Leaving early (a claim failed): the sends already made are still recorded.
            if self.in_flight:
                done, self.in_flight = wait(self.in_flight)
                _settle(self.runtime, done, self.result)
        return sliced

    def _room(self) -> int:
        return CLAIM_AHEAD * self.concurrency - len(self.in_flight)

    def _claim(self, pool: ThreadPoolExecutor) -> None:
        # This message first, every time: its later parts wait for its earlier ones to go.
        room = self._room()
        claimed = self._claim_from(pool, self.message_id, room)
        self.claimed_own += claimed
        if self.others:
            given, self.others = self.others, []
            self._claim_from(pool, given, self._room())
            return
        if claimed == room or self.queue is None:
            return
        for other in self._queued():
            if self._room() <= 0:
                return
            # Once: what is left of it (later parts, held-back SMS) its own job sends.
            self._claim_from(pool, other, self._room())

    def _claim_from(self, pool: ThreadPoolExecutor, message_id: str | list[str], limit: int) -> int:
        at = time.monotonic()  # before the claim's own clock reading: never later than it
        with transaction(self.runtime.sessions) as session:
            claimed = claim_deliveries(session, message_id, limit)
        self.in_flight.update(
            pool.submit(_send, self.runtime, self.limiter, delivery, at) for delivery in claimed
        )
        return len(claimed)

    def _queued(self) -> list[str]:
        """Messages whose fan-out jobs joined the queue since last looked, oldest first."""
        assert self.queue is not None
        connection = self.runtime.redis
        queued = Queue(self.queue, connection=connection).get_job_ids()
        ids = [i for i in queued if i not in _seen_jobs][: self._room()]
        for job_id in ids:
            _seen_jobs[job_id] = None
        while len(_seen_jobs) > SEEN_JOBS:
            del _seen_jobs[next(iter(_seen_jobs))]
        return [
            str(job.args[0])
            for job in Job.fetch_many(ids, connection=connection)
            if job is not None and job.func_name == FAN_OUT and job.args
        ]

    def _settle_some(self) -> None:
        # Sending others' messages alongside, look for newly queued ones now and then.
        timeout = ABSORB_EVERY if self.queue is not None else None
        done, self.in_flight = wait(self.in_flight, timeout, return_when=FIRST_COMPLETED)
        if done and self.in_flight:
            # Sends finishing in the next few milliseconds are recorded in the same
            # transaction: one commit for several SIDs instead of one each.
            more, self.in_flight = wait(self.in_flight, timeout=RECORD_EVERY)
            done |= more
        if done:
            _settle(self.runtime, done, self.result)


def _plan_next(
    runtime: Runtime,
    message_id: str,
    result: FanOutResult,
    sliced: bool,
    rounds: int,
    claimed: int,
) -> None:
    """Say when the message's remaining deliveries should be tried (`result.next_at`)."""
    with runtime.sessions() as session:
        upcoming = next_attempt_at(session, message_id)
    now = utcnow()
    if upcoming is not None and upcoming <= now and not sliced and not claimed:
        # Due, yet nothing could be claimed: held back by the per-phone order.
        upcoming = now + blocked_delay(rounds)
        result.rounds = rounds + 1
    result.next_at = upcoming
