"""The web process under faults: killed in the middle of inbound requests (Twilio's retry of the
same MessageSid is stored once), and status callbacks duplicated, reversed and interleaved across
two web processes (every final state right).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from bridge.models import Delivery, Message
from tests import factories
from tests.e2e.processes import wait_for
from tests.fixtures.twilio import payloads
from tests.reliability.conftest import Record, size
from tests.reliability.system import System, post_form
from tests.services import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def contact_messages(system: System) -> int:
    with system.runtime.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Message).where(Message.author_type == "contact")
            )
            or 0
        )


def test_web_killed_mid_inbound_requests_and_twilio_retries(system: System, record: Record) -> None:
    count = size(100, 2000)
    org = system.organization()
    writers = [system.channel(org, 1)[1][0] for _ in range(8)]
    web = system.start("web")
    answered: dict[str, int] = {}
    lock = threading.Lock()
    half = threading.Event()

    def send(n: int) -> None:
        sid = f"SM{n:032x}"
        try:
            status, _ = system.inbound(writers[n % 8], org.senders[0], f"note {n} for the van", sid)
        except OSError:  # the connection died with the process
            status = 0
        with lock:
            answered[sid] = status
            if len(answered) >= count // 2:
                half.set()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, n) for n in range(count)]
        half.wait(120)
        system.kill(web)
        killed_after = len(answered)
        web = system.start("web")
        for future in futures:
            future.result()
    unanswered = [sid for sid, status in answered.items() if status != 200]
    # Stored, but the answer died with the process: what Twilio's retry must not store again.
    before_retry = system.inbound_counts()
    stored_unanswered = sum(1 for sid in unanswered if before_retry[sid])
    # Twilio retries what was not answered 200; some it answered are retried too (a timeout at
    # Twilio's end). Same MessageSid, same body.
    again = unanswered + random.Random(14).sample(sorted(answered), count // 10)
    retry_answers: Counter[int] = Counter()
    for sid in again:
        n = int(sid[2:], 16)
        status, _ = system.inbound(writers[n % 8], org.senders[0], f"note {n} for the van", sid)
        retry_answers[status] += 1
    stored = system.inbound_counts()
    # The worker matches what the web stored (DESIGN 5.5): each SMS once in its channel.
    system.start("worker")
    wait_for(
        "every stored SMS in its channel",
        lambda: contact_messages(system) >= len(stored),
        timeout=60,
    )
    messages = contact_messages(system)

    record.injected = (
        f"web (gunicorn, 2 workers) SIGKILLed after {killed_after} of {count} inbound SMS, "
        f"restarted; {len(again)} retried with the same MessageSid"
    )
    record.counted = {
        "sent": count,
        "stored": sum(1 for n in range(count) if stored[f"SM{n:032x}"] >= 1),
        "duplicated": sum(max(0, c - 1) for c in stored.values()) + max(0, messages - count),
        "lost": sum(1 for n in range(count) if stored[f"SM{n:032x}"] == 0),
        "unanswered_before_retry": len(unanswered),
        "stored_but_unanswered": stored_unanswered,
        "messages_in_channels": messages,
    }
    assert unanswered, "the kill hit no request in flight"
    assert retry_answers == Counter({200: len(again)}), retry_answers
    assert sorted(stored) == sorted(f"SM{n:032x}" for n in range(count))
    assert set(stored.values()) == {1}
    assert messages == count


STORIES = [
    (["queued", "sent", "delivered"], "delivered", None),
    (["queued", "sent", "delivered", "read"], "delivered", None),
    (["queued", "sent", "undelivered"], "undelivered", 30003),
    (["queued", "failed"], "failed", 30006),
]


def test_status_callbacks_duplicated_reversed_interleaved_across_two_web_processes(
    system: System, record: Record
) -> None:
    recipients = size(60, 500)
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    second_port = free_port()
    second = f"http://127.0.0.1:{second_port}"
    system.ready(
        system.start("web", wait=False),
        system.start("web", wait=False, PORT=second_port),
        system.start("worker", wait=False),
    )
    body = "Parcel 90 was handed over"
    message_id = system.publish(org, channel_id, body)
    system.wait_settled([message_id], timeout=120)
    with system.runtime.sessions() as session:
        deliveries = session.execute(
            select(Delivery.id, Delivery.twilio_sid).where(Delivery.message_id == message_id)
        ).all()
    rng = random.Random(500)
    expected: dict[str, tuple[str, int | None]] = {}
    callbacks: list[tuple[str, str, str, int | None]] = []
    for delivery_id, sid in deliveries:
        steps, last, code = rng.choice(STORIES)
        expected[delivery_id] = (last, code)
        story = steps + rng.sample(steps, k=min(2, len(steps)))  # duplicates
        if rng.random() < 0.5:
            story.reverse()
        callbacks += [(delivery_id, factories.known(sid), status, code) for status in story]
    rng.shuffle(callbacks)  # interleaved across deliveries
    token = system.secrets["TWILIO_AUTH_TOKEN"]

    def post(item: tuple[int, tuple[str, str, str, int | None]]) -> int:
        n, (delivery_id, sid, status, code) = item
        params = payloads.load(
            "status_delivered",
            MessageSid=sid,
            SmsSid=sid,
            MessageStatus=status,
            SmsStatus=status,
            To=phones[0],
            From=org.senders[0],
            AccountSid="AC" + "5e1f" * 8,
        )
        if code is not None and status in ("undelivered", "failed"):
            params["ErrorCode"] = str(code)
        path = f"/twilio/status?d={delivery_id}"
        data, headers = payloads.signed(token, system.base, path, params)
        target = system.base if n % 2 else second
        return post_form(target + path, data, headers)[0]

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(pool.map(post, enumerate(callbacks)))
    took = time.monotonic() - started
    with system.runtime.sessions() as session:
        final = {
            row.id: (row.status, row.error_code)
            for row in session.execute(
                select(Delivery.id, Delivery.status, Delivery.error_code).where(
                    Delivery.message_id == message_id
                )
            )
        }
    wrong = {d: (final[d], want) for d, want in expected.items() if final[d] != want}
    tally = system.tally(message_id, phones, body)

    record.injected = (
        f"{len(callbacks)} status callbacks for {recipients} deliveries, duplicated, half "
        "reversed, shuffled, over two web processes"
    )
    record.counted = {
        **tally.as_dict(),
        "callbacks_answered_200": statuses[200],
        "final_states_right": len(expected) - len(wrong),
        "final_states_wrong": len(wrong),
    }
    record.notes["callbacks_per_second"] = round(len(callbacks) / took)
    assert statuses == Counter({200: len(callbacks)}), statuses
    assert not wrong, list(wrong.items())[:5]
    assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
