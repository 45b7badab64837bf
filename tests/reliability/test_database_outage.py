"""PostgreSQL unreachable while inbound SMS keep arriving and a fan-out is running (DESIGN 5.5
step 9): every SMS stored once when it is back, every recipient sent once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.reliability.conftest import Record, size
from tests.reliability.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def test_postgres_down_while_sms_arrive_and_a_fan_out_runs(system: System, record: Record) -> None:
    recipients = size(60, 1000)
    outage = size(3, 10)
    rate = size(10, 20)  # inbound SMS per second, before, during and after the outage
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    # Contacts of their own one-person channels write in (matched), and strangers (unmatched).
    writers = [system.channel(org, 1)[1][0] for _ in range(5)]
    strangers = [f"+1312555{i:04d}" for i in range(3)]
    system.phones.update(strangers)
    system.ready(
        system.start("web", wait=False),
        system.start("worker", wait=False, SEND_RATE_PER_SENDER=recipients / (2 * outage)),
    )
    body = "Parcel 77 is at the depot"
    message_id = system.publish(org, channel_id, body)

    answers: Counter[int] = Counter()
    sent_sids: list[str] = []
    retried = 0
    stop = threading.Event()

    def write_in() -> None:
        nonlocal retried
        n = 0
        while not stop.is_set():
            sender = (writers + strangers)[n % (len(writers) + len(strangers))]
            sid = f"SM{n:032x}"
            status, _ = system.inbound(sender, org.senders[0], f"reply {n} about the parcel", sid)
            while status != 200 and not stop.is_set():  # Twilio retries a failed webhook
                retried += 1
                time.sleep(0.5)
                status, _ = system.inbound(sender, org.senders[0], f"reply {n} again", sid)
            answers[status] += 1
            sent_sids.append(sid)
            n += 1
            time.sleep(1 / rate)

    writer = threading.Thread(target=write_in)
    writer.start()
    try:
        time.sleep(1.5)
        system.postgres.stop()
        down_at = time.monotonic()
        time.sleep(outage)
        system.postgres.start()
        down_for = time.monotonic() - down_at
        time.sleep(2)
    finally:
        stop.set()
        writer.join(30)
    system.wait_settled([message_id], timeout=180)

    def all_stored() -> bool:
        stored = system.inbound_counts()
        return all(stored[sid] >= 1 for sid in sent_sids)

    from tests.e2e.processes import wait_for

    wait_for("every inbound SMS to be stored", all_stored, timeout=120, interval=0.5)
    stored = system.inbound_counts()
    tally = system.tally(message_id, phones, body)

    record.injected = (
        f"PostgreSQL stopped for {down_for:.1f} s while {len(sent_sids)} inbound SMS arrived "
        f"({rate}/s) and a {recipients}-recipient fan-out ran"
    )
    record.counted = {
        **tally.as_dict(),
        "inbound_sent": len(sent_sids),
        "inbound_stored": sum(1 for sid in sent_sids if stored[sid] >= 1),
        "inbound_duplicated": sum(max(0, stored[sid] - 1) for sid in sent_sids),
        "inbound_lost": sum(1 for sid in sent_sids if stored[sid] == 0),
        "answers": dict(answers),
    }
    record.notes["webhook_retries"] = retried
    assert all(stored[sid] == 1 for sid in sent_sids), "an inbound SMS stored twice or not at all"
    assert set(stored) == set(sent_sids), "a record with a MessageSid nobody sent"
    assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
    assert tally.stored == recipients, tally.db_statuses
    assert retried == 0, "a webhook was refused while only the database was down"
