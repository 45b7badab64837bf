"""The per-sender send rate, in SMS segments per second, shared by every worker through Redis.

Each sender has a "theoretical arrival time" (TAT) in Redis: the moment its next send may go. A
send of n segments takes its slot only once the TAT has passed, and pushes it n/rate seconds past
that moment; before then it is told how long to wait. The Lua script reads Redis's clock, so every
worker on every machine agrees on time. A send over the limit waits; it never fails.

The slot is taken right before the request, never reserved ahead: a send that was held up after
its slot (a database round trip, a busy interpreter) would otherwise go out late and bunch with
the next one, on time. Taken at the last moment, slots are at least `n / rate` seconds apart
however late each is, so over any window of `w` seconds a sender sends at most `rate * w + 1`
segments. The rate kept is a little below the configured one (by how late each waiting send wakes),
never above; there is no burst allowance.

In one process, one thread at a time waits on Redis for a given sender; the others wait on it in
turn, so a sender's queue of sends costs about one Redis call per send, not one per thread. A rate
above 1,000 segments a second (beyond any sender Twilio has; set as "no limit") is the exception:
there a process takes up to a millisecond's worth of slots in one call (at most `BANK_MOST`) and
hands them out itself for `BANK_KEEP` seconds, so that the call is not paid once per SMS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import redis

KEY_PREFIX = "bridge:rate:"

_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat > now then
  return {0, string.format('%.6f', tat - now)}
end
local cost = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', now + cost), 'PX', math.ceil(cost * 1000) + 1000)
return {1, '0'}
"""


BANK_SECONDS = 0.001
BANK_MOST = 32
BANK_KEEP = 0.05


def _always() -> bool:
    return True


class SendRateLimiter:
    """Holds each send to `rate` segments a second for its sender (0 or less: no limit)."""

    def __init__(self, connection: redis.Redis, rate: float) -> None:
        self.connection = connection
        self.rate = rate
        self._script = connection.register_script(_TAKE)
        self._turns: dict[str, threading.RLock] = {}
        self._turns_lock = threading.Lock()
        self._bank_size = min(BANK_MOST, int(rate * BANK_SECONDS)) if rate > 0 else 0
        # Per sender: segments taken in Redis and not handed out yet, and until when they may be.
        self._banks: dict[str, tuple[Iterator[int], float]] = {}

    def try_take(self, sender_key: str, segments: int = 1) -> tuple[bool, float]:
        """Take a slot if one is due now: (True, 0.0), or (False, seconds until one is)."""
        cost = max(1, segments) / self.rate
        granted, seconds = self._script(keys=[KEY_PREFIX + sender_key], args=[f"{cost:.6f}"])
        return bool(granted), float(seconds)

    def take(self, sender_key: str, segments: int = 1, ready: Callable[[], bool] = _always) -> bool:
        """Wait for this send's slot and take it; False if `ready()` said the send may not go.

        `ready` runs right before each try (a send that waited long renews its claim there), so
        nothing but the caller's request itself comes between the slot and Twilio.
        """
        if not ready():
            return False
        if self.rate <= 0:
            return True
        try_take = self.try_take if self._bank_size <= 1 else self._from_bank
        granted, seconds = try_take(sender_key, segments)
        if granted:
            return True
        with self._turn(sender_key):
            while True:
                time.sleep(seconds)
                if not ready():
                    return False
                granted, seconds = try_take(sender_key, segments)
                if granted:
                    return True

    def wait(self, sender_key: str, segments: int = 1) -> float:
        """Block until this send may go, and take its slot; returns the seconds waited."""
        started = time.monotonic()
        self.take(sender_key, segments)
        return time.monotonic() - started

    def _from_bank(self, sender_key: str, segments: int) -> tuple[bool, float]:
        """`try_take` for a rate so high that slots are taken `_bank_size` at a time."""
        segments = max(1, segments)
        if self._draw(sender_key, segments):
            return True, 0.0
        with self._turn(sender_key):
            if self._draw(sender_key, segments):  # another thread filled it meanwhile
                return True, 0.0
            size = max(segments, self._bank_size)
            granted, seconds = self.try_take(sender_key, size)
            if granted:
                left = iter(range(size - segments))
                self._banks[sender_key] = (left, time.monotonic() + BANK_KEEP)
            return granted, seconds

    def _draw(self, sender_key: str, segments: int) -> bool:
        # No lock: each next() on the bank's iterator hands out one segment to one thread alone.
        # A send that finds fewer than it needs leaves them unused (under the rate, never over).
        bank = self._banks.get(sender_key)
        if bank is None or time.monotonic() >= bank[1]:
            return False
        return all(next(bank[0], None) is not None for _ in range(segments))

    def _turn(self, sender_key: str) -> threading.RLock:
        turn = self._turns.get(sender_key)
        if turn is None:
            with self._turns_lock:
                turn = self._turns.setdefault(sender_key, threading.RLock())
        return turn
