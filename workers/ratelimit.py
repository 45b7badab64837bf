"""The per-sender send rate, in SMS segments per second, shared by every worker through Redis.

A GCRA-style meter: each sender has a "theoretical arrival time" (TAT) in Redis; a send of n
segments is given the slot at max(TAT, now) and pushes the TAT n/rate seconds on. The Lua script
reads Redis's clock, so every worker on every machine agrees on time. A send over the limit waits
for its slot; it never fails. Slots are reserved at most `max_ahead` seconds ahead, so a worker
never holds a claimed delivery long before sending it.
"""

from __future__ import annotations

import time

import redis

KEY_PREFIX = "bridge:rate:"

_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
local max_ahead = tonumber(ARGV[2])
local start = math.max(tat, now)
local wait = start - now
if wait > max_ahead then
  return {0, string.format('%.6f', wait - max_ahead)}
end
local new_tat = start + cost
local ttl_ms = math.ceil((new_tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
return {1, string.format('%.6f', wait)}
"""


class SendRateLimiter:
    """Waits until a send from one sender fits `rate` segments per second (0 or less: no limit)."""

    def __init__(self, connection: redis.Redis, rate: float, max_ahead: float = 5.0) -> None:
        self.connection = connection
        self.rate = rate
        self.max_ahead = max_ahead
        self._script = connection.register_script(_RESERVE)

    def reserve(self, sender_key: str, segments: int = 1) -> tuple[bool, float]:
        """Take a slot: (True, seconds until it) or (False, seconds before trying again)."""
        cost = max(1, segments) / self.rate
        granted, seconds = self._script(
            keys=[KEY_PREFIX + sender_key], args=[f"{cost:.6f}", f"{self.max_ahead:.6f}"]
        )
        return bool(granted), float(seconds)

    def wait(self, sender_key: str, segments: int = 1) -> float:
        """Block until this send may go; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        waited = 0.0
        while True:
            granted, seconds = self.reserve(sender_key, segments)
            if granted:
                if seconds > 0:
                    time.sleep(seconds)
                return waited + seconds
            pause = min(seconds, 1.0)
            time.sleep(pause)
            waited += pause
