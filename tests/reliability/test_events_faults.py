"""Events out through a receiver that is down for a while, then slow, then up (DESIGN 5.8): every
event recorded reaches it at least once, and the SMS of the same organization go out exactly once
without waiting for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from bridge.models import Event, EventDelivery, WebhookAttempt
from tests.e2e.processes import http, wait_for
from tests.reliability.conftest import Record, size
from tests.reliability.system import Org, System
from tests.standin.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

HANG = 1.5  # seconds the slow receiver takes to answer each request (WEBHOOK_TIMEOUT is 5)
# The retry schedule (5 s, then 5 min, ...) is the design's; after a few seconds down the
# endpoint's deliveries wait for the 5 min retry (at most 5.5 min with jitter), and the sweeper
# redrives a retry 30 s past due: moving those waits 7 min on is the clock passing them.
RETRY_MOVED = timedelta(minutes=7)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The organization's event receiver, in this process; not listening until `up()`."""
    with Receiver() as made:
        yield made


def register_endpoint(system: System, org: Org, url: str) -> tuple[str, str]:
    """An endpoint for every event, registered through the API; its id and signing secret."""
    status, body = http(
        "POST",
        f"{system.base}/v1/webhook_endpoints",
        {"url": url, "events": ["*"]},
        {"Authorization": f"Bearer {org.key}"},
        timeout=30,
    )
    assert status == 201, body
    return str(body["id"]), str(body["secret"])


def move_retries_on(system: System, endpoint_id: str, by: timedelta) -> int:
    """Bring the endpoint's waiting deliveries `by` sooner, as the clock would; how many."""
    with system.runtime.sessions() as session, session.begin():
        waiting = session.execute(
            select(EventDelivery).where(
                EventDelivery.endpoint_id == endpoint_id, EventDelivery.status == "pending"
            )
        ).scalars()
        moved = 0
        for delivery in waiting:
            assert delivery.next_attempt_at is not None
            delivery.next_attempt_at -= by
            moved += 1
    return moved


def attempts(system: System, endpoint_id: str) -> list[WebhookAttempt]:
    with system.runtime.sessions() as session:
        return list(
            session.execute(
                select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
            ).scalars()
        )


def event_ids(system: System, org: Org) -> set[str]:
    with system.runtime.sessions() as session:
        return set(
            session.execute(select(Event.id).where(Event.organization_id == org.id)).scalars()
        )


def relays(system: System, pairs: list[list[str]], replies: list[str]) -> list[int]:
    """How many SMS each partner got with its writer's reply (relayed as `Name: text`)."""
    messages = system.standin.messages()
    return [
        sum(1 for m in messages if m["to"] == partner and m["body"].endswith(f": {reply}"))
        for (_, partner), reply in zip(pairs, replies, strict=True)
    ]


def all_delivered(system: System, org: Org, receiver: Receiver) -> bool:
    """Every event of the organization dispatched, its delivery succeeded, and at the receiver."""
    with system.runtime.sessions() as session:
        waiting = session.execute(
            select(func.count())
            .select_from(Event)
            .where(Event.organization_id == org.id, Event.dispatched_at.is_(None))
        ).scalar_one()
        unsettled = session.execute(
            select(func.count())
            .select_from(EventDelivery)
            .where(EventDelivery.organization_id == org.id, EventDelivery.status != "succeeded")
        ).scalar_one()
    return waiting == 0 and unsettled == 0 and event_ids(system, org) <= set(receiver.event_ids())


def test_events_receiver_down_then_slow_then_up(
    system: System, record: Record, receiver: Receiver
) -> None:
    recipients = size(50, 1000)
    down = size(5, 60)
    slow = size(2, 10)
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    pairs = [system.channel(org, 2)[1] for _ in range(3)]  # a writer and the partner it reaches
    system.ready(system.start("web", wait=False), system.start("worker", wait=False))
    endpoint_id, secret = register_endpoint(system, org, receiver.url)

    down_at = time.monotonic()
    body = "Parcel 88 is on its way"
    message_id = system.publish(org, channel_id, body)
    sids = [f"SM{i:032x}" for i in range(len(pairs))]
    replies = [f"reply {i} to parcel 88" for i in range(len(pairs))]
    for (writer, _), sid, reply in zip(pairs, sids, replies, strict=True):
        assert system.inbound(writer, org.senders[0], reply, sid)[0] == 200

    system.wait_settled([message_id], timeout=down)
    wait_for(
        "the replies' relays",
        lambda: all(relays(system, pairs, replies)),
        timeout=max(1, down - (time.monotonic() - down_at)),
    )
    sms_done = time.monotonic() - down_at
    wait_for(
        "a failed attempt to be recorded",
        lambda: any(not a.succeeded for a in attempts(system, endpoint_id)),
        timeout=down,
    )
    assert sms_done < down, "the SMS waited for the receiver"
    assert not receiver.received
    time.sleep(max(0.0, down - (time.monotonic() - down_at)))

    receiver.up()
    receiver.hang(HANG)
    up_at = time.monotonic()
    moved = move_retries_on(system, endpoint_id, RETRY_MOVED)
    receiver.wait_for(1, timeout=30)  # the sweeper redrove the endpoint
    time.sleep(slow)
    receiver.answer(200)
    wait_for(
        "every event to reach the receiver",
        lambda: all_delivered(system, org, receiver),
        timeout=size(60, 300),
        interval=0.25,
    )
    delivered_after_up = time.monotonic() - up_at

    recorded = event_ids(system, org)
    received = receiver.event_ids()
    for item in receiver.received:
        Webhook(secret).verify(item.body, item.headers)
    made = attempts(system, endpoint_id)
    failed = [a for a in made if not a.succeeded]
    slowed = [a for a in made if a.succeeded and a.duration_ms >= HANG * 1000 * 0.9]
    succeeded_events = {a.event_id for a in made if a.succeeded}
    tally = system.tally(message_id, phones, body)
    relayed = relays(system, pairs, replies)
    stored = system.inbound_counts()

    record.injected = (
        f"event receiver refusing connections for {down} s while a {recipients}-recipient fan-out "
        f"and {len(pairs)} relayed replies went out, then answering after {HANG} s for {slow} s, "
        f"then at once; the retries of {moved} waiting deliveries moved "
        f"{RETRY_MOVED.seconds // 60} min on once it was back"
    )
    record.counted = {
        **tally.as_dict(),
        "relays_sent_once": relayed.count(1),
        "inbound_stored_once": sum(1 for sid in sids if stored[sid] == 1),
        "events": len(recorded),
        "events_received": len(recorded & set(received)),
        "events_lost": len(recorded - set(received)),
        "event_posts": len(received),
        "attempts_failed": len(failed),
        "attempts_slow": len(slowed),
    }
    record.notes = {
        "sms_done_s_while_down": round(sms_done, 1),
        "events_all_in_s_after_up": round(delivered_after_up, 1),
    }
    assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
    assert tally.stored == recipients, tally.db_statuses
    assert relayed == [1] * len(pairs), relayed
    assert [stored[sid] for sid in sids] == [1] * len(sids)
    assert recorded <= set(received)  # every event at least once
    assert succeeded_events == recorded  # and each one's success recorded
    assert failed and all(a.status_code is None and a.error for a in failed), failed[:3]
    assert all(a.next_retry_at is not None for a in failed)
    assert slowed, "no attempt was slow"
