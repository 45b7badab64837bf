"""Load, bounded in count and time, on loopback, from processes apart from the bridge's: inbound SMS
at a steady rate (each stored exactly once, p99 reported) and many channels published at once (each
SMS once, the per-sender rate never exceeded at the stand-in's clock).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable

import pytest

from tests.e2e.processes import ROOT, environment
from tests.reliability.conftest import Record, size
from tests.reliability.loadgen import sid
from tests.reliability.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_inbound_sms_at_a_steady_rate_each_stored_exactly_once(
    system: System, record: Record
) -> None:
    count, rate = size(100, 20_000), size(20, 30)
    org = system.organization()
    writers = [system.channel(org, 1)[1][0] for _ in range(20)]
    system.ready(system.start("web", wait=False), system.start("worker", wait=False))
    spec = {
        "url": system.base,
        "token": system.secrets["TWILIO_AUTH_TOKEN"],
        "pairs": [[w, org.senders[0]] for w in writers],
        "count": count,
        "rate": rate,
        "prefix": "SMload",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.loadgen", json.dumps(spec)],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=count / rate * 3 + 60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    load = json.loads(done.stdout)
    system.texts.update(f"load {n}" for n in range(count))
    wanted = {sid("SMload", n) for n in range(count)}
    stored = system.inbound_counts()

    record.injected = f"{count} signed inbound SMS at {rate}/s from 20 contacts"
    record.counted = {
        "sent": count,
        "stored": sum(1 for s in wanted if stored[s] >= 1),
        "duplicated": sum(max(0, stored[s] - 1) for s in wanted),
        "lost": sum(1 for s in wanted if stored[s] == 0),
        "answers": load["answers"],
    }
    record.notes.update(
        {k: load[k] for k in ("rate", "p50_ms", "p99_ms", "max_ms", "p99_start_lag_s")}
    )
    assert load["answers"] == {"200": count}, load
    assert set(stored) == wanted
    assert set(stored.values()) == {1}


DEPARTURE_JITTER = 0.5  # seconds; see the rate check below


def most_in_window(series: Iterable[list[float]], window: float) -> int:
    """The most timestamps of one series within any `window` seconds."""
    worst = 0
    for times in series:
        times.sort()
        start = 0
        for end, at in enumerate(times):
            while times[start] <= at - window:
                start += 1
            worst = max(worst, end - start + 1)
    return worst


def test_many_channels_published_at_once_each_sms_once_rate_kept(
    system: System, record: Record
) -> None:
    channels, contacts = size(6, 100), size(15, 100)
    rate = size(10, 20)  # SMS per second per sender number
    made = []
    for i in range(channels):
        org = system.organization(name=f"Depot {i}")
        channel_id, phones = system.channel(org, contacts)
        made.append((org, channel_id, phones))
    system.ready(
        system.start("web", wait=False),
        system.start("worker", wait=False, SEND_RATE_PER_SENDER=rate),
        system.start("worker", wait=False, SEND_RATE_PER_SENDER=rate),
    )
    ids = {}
    for i, (org, channel_id, phones) in enumerate(made):
        ids[system.publish(org, channel_id, f"Depot {i} closes early today")] = (i, phones)
    system.wait_settled(ids, timeout=size(120, 1500))
    tallies = [
        system.tally(m, phones, f"Depot {i} closes early today") for m, (i, phones) in ids.items()
    ]
    requests = [r for r in system.standin.requests() if r["status"] == 201]
    by_sender: dict[str, list[float]] = defaultdict(list)
    for request in requests:
        by_sender[request["form"]["From"][0]].append(request["received_at"])
    worst = most_in_window(by_sender.values(), 1.0)
    gaps = sorted(b - a for times in by_sender.values() for a, b in itertools.pairwise(times))
    record.notes["gap_ms_min_p5_p50"] = [
        round(gaps[int(p * (len(gaps) - 1))] * 1000) for p in (0, 0.05, 0.5)
    ]
    record.notes["most_in_2s"] = most_in_window(by_sender.values(), 2.0)

    total = channels * contacts
    record.injected = (
        f"{channels} channels x {contacts} contacts published at once, "
        f"{rate} SMS/s per sender, two workers"
    )
    record.counted = {
        key: sum(t.as_dict()[key] for t in tallies)
        for key in ("recipients", "sent", "stored", "duplicated", "lost")
    }
    record.counted["most_sms_in_any_1s_per_sender"] = worst
    assert record.counted["sent"] == total
    assert record.counted["duplicated"] == 0 and record.counted["lost"] == 0
    assert record.counted["stored"] == total
    assert len(by_sender) == channels
    # The limiter spaces slots at Redis's clock; between a slot and the request reaching Twilio
    # comes the HTTP client, so on a loaded machine an SMS may arrive up to DEPARTURE_JITTER late
    # and bunch with the next. Late, never early: a limiter
    # that did not hold across workers would show about twice the rate, which this catches.
    for window in (1.0, 2.0):
        most = most_in_window(by_sender.values(), window)
        allowed = rate * (window + DEPARTURE_JITTER) + 1
        assert most <= allowed, f"a sender sent {most} SMS within {window:g} s (rate {rate}/s)"
