"""At most one waiting job per piece of work, kept in Redis.

Two ways, for two kinds of work:
- a *slot* (a message's fan-out, an endpoint's drain) holds "<when>:<token>" of the one job that
  waits for it: a job due sooner replaces a later one, which finds itself superseded when it
  starts. Without it, re-enqueues (sweeper, retries, held-back messages) multiply job chains.
- a *mark* (processing inbound SMS, draining kept webhooks, dispatching events) stands for one job
  that takes all the waiting work when it runs: while it is set, nobody queues another.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import redis
from rq import Queue

log = logging.getLogger(__name__)

# Take a slot unless a job at the same time or sooner holds it; a sooner one replaces a later one.
_TAKE_SLOT = """
local held = redis.call('GET', KEYS[1])
if held then
  local held_at = tonumber(string.match(held, '^([^:]+)'))
  if held_at and held_at <= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""

# A starting job frees the slot if it holds it (or nobody does); it is superseded otherwise.
_START = """
local held = redis.call('GET', KEYS[1])
if not held then return 1 end
if string.match(held, ':(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def enqueue_in_slot(
    connection: redis.Redis,
    slot: str,
    ttl: int,
    queue: str,
    job: str,
    args: Sequence[object],
    *,
    job_timeout: int,
    at: datetime | None = None,
    kwargs: Mapping[str, object] | None = None,
) -> bool:
    """Queue `job` (or schedule it at `at`) unless one as soon already holds `slot`; False if
    Redis failed (the sweeper finds the work).

    The job gets the slot's token as its `token` keyword beside `kwargs`, to hand to `start_slot`
    when it runs. The slot lapses `ttl` seconds after the job's time, should the job be lost
    unseen.
    """
    when = time.time() if at is None else at.timestamp()
    token = secrets.token_hex(8)
    lapse = ttl + max(0, int(when - time.time()))
    given = {**(kwargs or {}), "token": token}
    options = {"result_ttl": 0, "failure_ttl": 86400, "job_timeout": job_timeout}
    try:
        take = connection.register_script(_TAKE_SLOT)
        if not take(keys=[slot], args=[f"{when:.3f}", token, lapse]):
            return True  # a job as soon as this one is already queued or scheduled
        target = Queue(queue, connection=connection)
        if at is None or when <= time.time():
            target.enqueue(job, args=tuple(args), kwargs=given, **options)
        else:
            target.enqueue_at(at, job, args=tuple(args), kwargs=given, **options)
    except redis.RedisError:
        log.warning("%s not enqueued; the sweeper will pick it up", job, extra={"slot": slot})
        return False
    return True


def start_slot(connection: redis.Redis, slot: str, token: str | None) -> bool:
    """Free `slot` as its job starts; False if a job due sooner replaced this one."""
    if token is None:
        return True
    return bool(connection.register_script(_START)(keys=[slot], args=[token]))


def enqueue_once(
    connection: redis.Redis,
    mark: str,
    ttl: int,
    queue: str,
    job: str,
    waiting: tuple[str, Sequence[str]] | None = None,
    **options: Any,
) -> bool:
    """Queue `job` unless the one `mark` stands for waits already; False if Redis failed.

    `waiting` is work for that job: (a list's key, ids to push on it), pushed in the same round
    trip as the mark is set. The mark keeps a second job out while one waits (its job clears it
    as it starts, or it lapses after `ttl` seconds); a job that could not be queued clears it
    again, so the next call tries.
    """
    try:
        pipe = connection.pipeline(transaction=False)
        if waiting is not None:
            pipe.rpush(waiting[0], *waiting[1])
        pipe.set(mark, "1", nx=True, ex=ttl)
        if not pipe.execute()[-1]:
            return True
        try:
            Queue(queue, connection=connection).enqueue(
                job, result_ttl=0, failure_ttl=86400, **options
            )
        except redis.RedisError:
            connection.delete(mark)
            raise
    except redis.RedisError:
        log.warning("%s not enqueued; the sweeper will do its work", job)
        return False
    return True


def take_all(connection: redis.Redis, key: str) -> list[str]:
    """Take every id waiting on the list `key` (a job, as it runs)."""
    # Read and emptied in one transaction: an id pushed meanwhile is either taken or left whole.
    pipe = connection.pipeline(transaction=True)
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    ids, _ = pipe.execute()
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
