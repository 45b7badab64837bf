"""Fan-out of one message: claim its deliveries in batches and send them through a thread pool.

One job per message, not one per recipient: per recipient the cost is a row in a batched claim, one
request to Twilio and one small UPDATE recording its SID. Up to `send_concurrency` requests are in
flight at once, each paced by the per-sender rate limit in Redis.

A fan-out runs for at most `SLICE_SECONDS`, then hands the rest to a new job at the back of its
queue: a 10,000-recipient notification at one segment per second must not hold a worker for hours
while conversational text waits. Deliveries that cannot go yet (quiet hours, a retry's backoff, an
earlier SMS to the same phone still on its way) get a job scheduled for when they can.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge.db import transaction, utcnow
from bridge.runtime import Runtime
from bridge.sending import claim_deliveries, next_attempt_at, send_claimed
from workers.ratelimit import SendRateLimiter

log = logging.getLogger(__name__)

SLICE_SECONDS = 60.0
# Held back by an earlier SMS to the same phone: look again soon (RQ's scheduler ticks each
# second), then less and less often while the earlier one stays on its way (a retry's backoff,
# an `unknown` send the sweeper settles), so that a held-back message costs little.
BLOCKED_RETRY = 1.0
BLOCKED_RETRY_MAX = 60.0


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


def fan_out_message(
    runtime: Runtime, message_id: str, slice_seconds: float = SLICE_SECONDS, rounds: int = 0
) -> FanOutResult:
    """Send every due delivery of a message, concurrently, for at most `slice_seconds`."""
    settings = runtime.settings
    concurrency = max(1, settings.send_concurrency)
    limiter = SendRateLimiter(runtime.redis, settings.send_rate_per_sender)
    sender = runtime.sender
    result = FanOutResult()
    deadline = time.monotonic() + slice_seconds
    sliced = False
    in_flight: set[Future[str]] = set()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="send") as pool:
        while True:
            # Keep the pool's queue about one batch deep, so no thread waits on a claim.
            if len(in_flight) <= concurrency:
                if time.monotonic() >= deadline:
                    sliced = True
                else:
                    with transaction(runtime.sessions) as session:
                        claimed = claim_deliveries(
                            session, message_id, 2 * concurrency - len(in_flight)
                        )
                    for delivery in claimed:
                        in_flight.add(
                            pool.submit(
                                send_claimed,
                                runtime.sessions,
                                settings,
                                sender,
                                delivery,
                                limiter.wait,
                            )
                        )
                    if not claimed and not in_flight:
                        break
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                error = future.exception()
                if error is None:
                    result.statuses[future.result()] += 1
                else:
                    # The delivery stays `sending`; the sweeper settles it. Reported to RQ below.
                    log.error("sending a delivery failed", exc_info=error)
                    result.errors.append(error)
    with runtime.sessions() as session:
        upcoming = next_attempt_at(session, message_id)
    now = utcnow()
    if upcoming is not None and upcoming <= now and not sliced and not result.statuses:
        # Due, yet nothing could be claimed: held back by the per-phone order.
        upcoming = now + blocked_delay(rounds)
        result.rounds = rounds + 1
    result.next_at = upcoming
    return result
