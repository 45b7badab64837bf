"""Fan-outs through faults: the worker SIGKILLed and restarted, Redis restarted empty, Twilio
answering 429 and 503. Each ends with every recipient sent exactly once, counted at the stand-in
and in the database.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from bridge.models import Delivery
from tests.e2e.processes import wait_for
from tests.reliability.conftest import Record, size
from tests.reliability.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def sent_count(system: System, body: str) -> int:
    return sum(1 for m in system.standin.messages() if m["body"] == body)


def test_worker_sigkilled_three_times_during_a_fan_out(system: System, record: Record) -> None:
    recipients = size(120, 1000)
    rate = size(40, 100)  # one sender: the fan-out takes recipients / rate seconds
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    worker = system.start("worker", wait=False, SEND_RATE_PER_SENDER=rate)
    system.ready(system.start("web", wait=False), worker)
    body = "Your parcel 41 is out for delivery"
    message_id = system.publish(org, channel_id, body)

    kills = []
    for fraction in (0.2, 0.45, 0.7):

        def reached(f: float = fraction) -> bool:
            return sent_count(system, body) >= f * recipients

        wait_for(f"{fraction:.0%} of the fan-out", reached, timeout=120, interval=0.05)
        system.kill(worker)
        kills.append(sent_count(system, body))
        worker = system.start("worker", SEND_RATE_PER_SENDER=rate)
    system.wait_settled([message_id], timeout=180)
    tally = system.tally(message_id, phones, body)

    record.injected = f"worker SIGKILLed at {kills} of {recipients} sent, restarted each time"
    record.counted = tally.as_dict()
    assert kills[-1] < recipients, "the last kill came after the fan-out ended"
    assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
    assert tally.stored == recipients, tally.db_statuses


def test_redis_restarted_empty_between_publish_and_send_and_mid_send(
    system: System, record: Record
) -> None:
    recipients = size(100, 1000)
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    system.start("web")
    first_body, second_body = "Parcel 52 leaves at noon", "Parcel 53 leaves at one"

    # Published while no worker runs, then Redis loses everything: the queued fan-out is gone.
    first = system.publish(org, channel_id, first_body)
    system.restart_redis()
    worker = system.start("worker", SEND_RATE_PER_SENDER=100)
    # And again in the middle of the second fan-out's sends.
    second = system.publish(org, channel_id, second_body)
    wait_for(
        "the second fan-out to be under way",
        lambda: sent_count(system, second_body) >= recipients // 4,
        timeout=120,
        interval=0.05,
    )
    mid = sent_count(system, second_body)
    system.restart_redis()
    system.wait_settled([first, second], timeout=180)
    tallies = [
        system.tally(first, phones, first_body),
        system.tally(second, phones, second_body),
    ]

    record.injected = (
        f"Redis restarted empty after publish (before any send) and at {mid} of "
        f"{recipients} sends of a second message"
    )
    record.counted = {
        key: sum(t.as_dict()[key] for t in tallies)
        for key in ("recipients", "sent", "stored", "duplicated", "lost")
    }
    assert worker.popen.poll() is None, "the worker died with Redis"
    assert mid < recipients
    for tally in tallies:
        assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
        assert tally.stored == recipients, tally.db_statuses


def test_twilio_429_and_503_for_a_while_then_a_permanent_error(
    system: System, record: Record
) -> None:
    recipients = size(40, 300)
    outage = size(3, 20)
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    bad = "+15005550009"  # Twilio's test number answered with 21614 (not a mobile): permanent
    bad_channel_phones = [*phones, bad]
    from bridge.channels import get_or_create_channel
    from bridge.db import transaction
    from bridge.organizations import find_or_create_contact

    with transaction(system.runtime.sessions) as session:
        ids = [
            find_or_create_contact(session, system.runtime.settings, org.id, p)[0].id
            for p in bad_channel_phones
        ]
        channel_id = get_or_create_channel(session, org.id, ids)[0].id
    system.ready(
        system.start("web", wait=False),
        system.start(
            "worker", wait=False, SEND_RATE_PER_SENDER=50, SEND_MAX_ATTEMPTS=12, SEND_RETRY_BASE=0.5
        ),
    )
    body = "Parcel 64 is delayed by a day"
    system.standin.control("fail", {"seconds": outage / 2, "status": 429})
    started = time.monotonic()
    message_id = system.publish(org, channel_id, body)
    time.sleep(outage / 2)
    system.standin.control("fail", {"seconds": outage / 2, "status": 503})
    system.wait_settled([message_id], timeout=240)
    took = time.monotonic() - started
    tally = system.tally(message_id, phones, body)
    refused = [r for r in system.standin.requests() if r["status"] in (429, 503)]
    with system.runtime.sessions() as session:
        rows = session.execute(
            select(
                Delivery.to_phone, Delivery.status, Delivery.attempts, Delivery.error_code
            ).where(Delivery.message_id == message_id)
        ).all()
    by_phone = {row.to_phone: row for row in rows}
    retried = [row for row in rows if row.attempts > 1]

    record.injected = (
        f"stand-in answered 429 for {outage / 2:g} s then 503 for {outage / 2:g} s "
        f"({len(refused)} requests refused); one recipient a permanent 21614"
    )
    record.counted = {
        **tally.as_dict(),
        "retried_deliveries": len(retried),
        "max_attempts": max(row.attempts for row in rows),
        "failed": sum(1 for row in rows if row.status == "failed"),
    }
    record.notes["seconds_to_settle"] = round(took, 1)
    assert refused, "the outage refused nothing"
    assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
    assert tally.stored == recipients, tally.db_statuses
    assert (by_phone[bad].status, by_phone[bad].error_code) == ("failed", 21614)
    assert retried, "no attempt record shows the backoff"
    assert took >= outage, "the deliveries did not wait out the outage"
