"""Deferred inbound SMS in the worker: one job for many, each once, each contact's in order."""

from __future__ import annotations

import threading

import pytest
import redis
from rq import Queue
from sqlalchemy import select

from bridge.inbound import record_inbound_sms
from bridge.models import Contact, Delivery, InboundSms, Message
from bridge.organizations import sender_numbers
from bridge.runtime import Runtime
from tests import factories
from tests.fixtures.twilio import payloads
from tests.standin.twilio import TwilioStandIn
from workers import queues
from workers.enqueue import enqueue_inbound, enqueue_relays
from workers.inbound import process_waiting

# Every SMS stored here waits for the jobs under test, however slowly the machine stores it.
pytestmark = pytest.mark.usefixtures("patient_webhook")


def texting(runtime: Runtime, n: int) -> tuple[list[Contact], str]:
    """`n` contacts of a new organization in one channel, and the organization's number."""
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        _, contacts = factories.channel_of(session, runtime.settings, org, factories.phones(n))
        return contacts, sender_numbers(session, org.id)[0]


def store(runtime: Runtime, phone: str, to: str, text: str) -> str:
    with runtime.sessions() as session, session.begin():
        payload = payloads.inbound(phone, to, text)
        return record_inbound_sms(session, runtime.settings, payload, defer=True).inbound.id


def test_one_job_waits_for_many_sms_and_takes_them_all(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    contacts, to = texting(runtime, 2)
    for n in range(5):
        store(runtime, contacts[0].phone, to, f"note {n}")
        assert enqueue_inbound(redis_client)

    assert Queue(queues.INBOUND, connection=redis_client).count == 1
    assert factories.run_inbound_jobs(runtime) == 1
    with runtime.sessions() as session:
        statuses = session.scalars(select(InboundSms.status)).all()
    assert statuses == ["matched"] * 5
    store(runtime, contacts[0].phone, to, "one more")
    assert enqueue_inbound(redis_client), "the job cleared its mark: the next SMS queues one"
    assert Queue(queues.INBOUND, connection=redis_client).count == 1


def test_two_jobs_at_once_store_each_sms_once_and_each_contacts_in_order(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    contacts, to = texting(runtime, 4)
    for n in range(60):
        store(runtime, contacts[n % 4].phone, to, f"{n % 4}:{n:03d}")
    counts: list[int] = []
    start = threading.Barrier(2)

    def work() -> None:
        start.wait(5)
        counts.append(process_waiting(runtime))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sum(counts) == 60
    with runtime.sessions() as session:
        texts = [
            factories.known(text)
            for text in session.scalars(
                select(Message.text).where(Message.author_type == "contact").order_by(Message.seq)
            )
        ]
    assert sorted(texts) == sorted(f"{n % 4}:{n:03d}" for n in range(60)), "each once"
    for contact in range(4):
        mine = [t for t in texts if t.startswith(f"{contact}:")]
        assert mine == sorted(mine), f"contact {contact}'s SMS out of order"


def test_relays_beyond_a_second_of_the_senders_rate_go_to_fan_out_jobs(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """The job that matches SMS must stay free for the next ones: it does not wait out the rate."""
    runtime.settings = runtime.settings.model_copy(update={"send_rate_per_sender": 1.0})
    contacts, to = texting(runtime, 2)
    for n in range(3):
        store(runtime, contacts[0].phone, to, f"note {n}")

    assert process_waiting(runtime) == 3

    jobs = Queue(queues.TEXT, connection=redis_client).jobs
    assert sorted(factories.known(j.func_name) for j in jobs) == ["workers.jobs.fan_out"] * 3
    with runtime.sessions() as session:
        statuses = session.scalars(
            select(Delivery.status).where(Delivery.body.like("%note%"))
        ).all()
    assert sorted(statuses) == ["pending"] * 3, "left to the fan-out jobs, none sent here"


def test_relays_of_sms_the_web_matched_itself_are_sent_by_the_inbound_job(
    runtime: Runtime, redis_client: redis.Redis, twilio: TwilioStandIn
) -> None:
    contacts, to = texting(runtime, 2)
    with runtime.sessions() as session, session.begin():
        outcome = record_inbound_sms(  # not deferred: matched at once, as when workers lag
            session, runtime.settings, payloads.inbound(contacts[0].phone, to, "At the gate")
        )
    assert outcome.outcome == "matched"

    assert enqueue_relays(redis_client, outcome.posted)
    assert Queue(queues.TEXT, connection=redis_client).count == 0, "no fan-out job of its own"
    assert factories.run_inbound_jobs(runtime) == 1

    [relay] = twilio.sent_to(contacts[1].phone)
    assert relay["body"].endswith("At the gate")
