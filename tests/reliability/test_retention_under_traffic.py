"""Retention under traffic: a backlog of old deliveries and inbound SMS records purged by the real
worker's sweeper while inbound SMS keep arriving. Every SMS stored once, the old rows gone, the
conversation kept; request latency before and during the purge measured and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select, text

from bridge.actors import Actor
from bridge.db import transaction
from bridge.messages import Draft, post_channel_message
from bridge.models import Delivery, InboundSms, Message
from tests.e2e.processes import ROOT, environment, wait_for
from tests.reliability.conftest import Record, size
from tests.reliability.loadgen import sid
from tests.reliability.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

OLD_DELIVERIES = """
INSERT INTO deliveries (id, message_id, organization_id, channel_id, subscriber_id, to_phone,
    from_phone, body, media_urls, status, part, parts, segments, attempts, queue, publish_seq,
    created_at, updated_at)
SELECT 'dlv_old' || g, :message_id, :org, :channel, 'cnt_old' || g, '+14150000000', NULL, '',
    '[]', 'delivered', 1, 1, 1, 1, 'text', 0, now() - interval '200 days',
    now() - interval '200 days'
FROM generate_series(1, :n) AS g
"""
OLD_INBOUND = """
INSERT INTO inbound_sms (id, message_sid, from_phone, to_phone, params, status, received_at)
SELECT 'in_old' || g, 'SMold' || g, '+14150000000', '+16280000000', '{}', 'unmatched',
    now() - interval '200 days'
FROM generate_series(1, :n) AS g
"""


def old_rows(system: System) -> int:
    with system.runtime.sessions() as session:
        deliveries = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.id.like("dlv_old%"))
        )
        inbound = session.scalar(
            select(func.count()).select_from(InboundSms).where(InboundSms.id.like("in_old%"))
        )
    return int(deliveries or 0) + int(inbound or 0)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 1) if values else 0.0


def test_retention_purges_a_backlog_while_inbound_sms_keep_arriving(
    system: System, record: Record
) -> None:
    backlog = size(5_000, 200_000)  # of each table
    rate, seconds = size(15, 30), size(6, 40)
    org = system.organization()
    channel_id, [contact] = system.channel(org, 1)
    writers = [system.channel(org, 1)[1][0] for _ in range(10)]
    with transaction(system.runtime.sessions) as session:
        posted = post_channel_message(
            session,
            system.runtime.settings,
            Actor.organization(org.id),
            channel_id,
            Draft.of("Kept"),
        )
    system.texts.add("Kept")
    with system.runtime.engine.begin() as conn:
        conn.execute(
            text(OLD_DELIVERIES),
            {"message_id": posted.message.id, "org": org.id, "channel": channel_id, "n": backlog},
        )
        conn.execute(text(OLD_INBOUND), {"n": backlog})
        conn.execute(text("ANALYZE deliveries; ANALYZE inbound_sms"))
    assert old_rows(system) == 2 * backlog
    system.start("web")

    count = rate * seconds
    spec = {
        "url": system.base,
        "token": system.secrets["TWILIO_AUTH_TOKEN"],
        "pairs": [[w, org.senders[0]] for w in writers],
        "count": count,
        "rate": rate,
        "prefix": "SMret",
        "each": True,
    }
    load = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.loadgen", json.dumps(spec)],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        text=True,
    )
    # A quarter of the SMS answered as the baseline, then the worker (and its sweeper) purges.
    wait_for(
        "the baseline's SMS",
        lambda: sum(1 for s in system.inbound_counts() if s.startswith("SMret")) >= count // 4,
        timeout=120,
        interval=0.2,
    )
    purge_started = time.monotonic()
    system.start("worker", wait=False, RETENTION_DAYS=180)
    purge_done: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if old_rows(system) == 0:
                purge_done.append(time.monotonic())
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, _ = load.communicate(timeout=seconds * 4 + 120)
    watcher.join(600)
    assert load.returncode == 0
    result = json.loads(out)
    assert purge_done, "the old rows were not purged"
    done_at = purge_done[0]
    before = [ms for at, ms, _ in result["each"] if at < purge_started]
    during = [ms for at, ms, _ in result["each"] if purge_started <= at <= done_at]
    stored = system.inbound_counts()
    wanted = {sid("SMret", n) for n in range(count)}
    system.texts.update(f"load {n}" for n in range(count))
    with system.runtime.sessions() as session:
        kept_message = session.scalar(select(Message).where(Message.id == posted.message.id))

    record.injected = (
        f"{backlog:,} old deliveries + {backlog:,} old inbound SMS records purged by the sweeper "
        f"(RETENTION_DAYS=180) while {count} inbound SMS arrived at {rate}/s"
    )
    record.counted = {
        "sent": count,
        "stored": sum(1 for s in wanted if stored[s] >= 1),
        "duplicated": sum(max(0, stored[s] - 1) for s in wanted),
        "lost": sum(1 for s in wanted if stored[s] == 0),
        "old_rows_left": old_rows(system),
    }
    record.notes.update(
        {
            "purge_seconds": round(done_at - purge_started, 1),
            "requests_during_purge": len(during),
            "p50_ms_before_during": [percentile(before, 0.5), percentile(during, 0.5)],
            "p99_ms_before_during": [percentile(before, 0.99), percentile(during, 0.99)],
            "max_ms_before_during": [max(before, default=0), max(during, default=0)],
        }
    )
    assert result["answers"] == {"200": count}, result["answers"]
    assert all(stored[s] == 1 for s in wanted)
    assert old_rows(system) == 0
    assert kept_message is not None, "a message went with its old deliveries"
    assert contact in system.phones
