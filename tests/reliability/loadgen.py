"""A load generator run as a process of its own: signed inbound SMS at a steady rate.

    python -m tests.reliability.loadgen '{"url": ..., "token": ..., "pairs": [[from, to], ...],
                                          "count": 1000, "rate": 50, "prefix": "SMab"}'

Requests leave on a fixed schedule (open loop: a slow answer does not slow the next request), from
a pool of threads; each SMS has MessageSid `prefix` + its number in hex. Prints one JSON object:
how many were sent, the answers by status, and latency percentiles in milliseconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.fixtures.twilio import payloads
from tests.reliability.system import post_form


def sid(prefix: str, n: int) -> str:
    return prefix + format(n, "x").rjust(34 - len(prefix), "0")


def run(spec: dict[str, Any]) -> dict[str, Any]:
    count, rate, pairs = int(spec["count"]), float(spec["rate"]), spec["pairs"]
    url, token, prefix = spec["url"], spec["token"], spec["prefix"]
    signing_base = spec.get("signing_base", url)

    def one(n: int, due: float) -> tuple[int, float, float, float]:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        from_, to = pairs[n % len(pairs)]
        message_sid = sid(prefix, n)
        params = payloads.inbound(
            from_, to, f"load {n}", MessageSid=message_sid, SmsSid=message_sid
        )
        params["SmsMessageSid"] = message_sid
        data, headers = payloads.signed(token, signing_base, "/twilio/sms", params)
        started = time.monotonic()
        try:
            status, _ = post_form(url + "/twilio/sms", data, headers)
        except OSError:
            status = 0
        return status, time.monotonic() - started, started - due, started

    start = time.monotonic() + 0.2
    with ThreadPoolExecutor(int(spec.get("threads", 32))) as pool:
        results = list(pool.map(lambda n: one(n, start + n / rate), range(count)))
    took = time.monotonic() - start
    latencies = sorted(r[1] * 1000 for r in results)
    late = sorted(r[2] for r in results)

    def pct(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 1)

    summary: dict[str, Any] = {
        "sent": count,
        "answers": dict(Counter(str(r[0]) for r in results)),
        "seconds": round(took, 1),
        "rate": round(count / took, 1),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": round(latencies[-1], 1),
        "p99_start_lag_s": round(pct(late, 0.99), 2),
    }
    if spec.get("each"):  # every request: when it started (time.monotonic()) and its latency
        summary["each"] = [[round(r[3], 4), round(r[1] * 1000, 1), r[0]] for r in results]
    return summary


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
