"""A text fan-out sends the messages whose fan-outs wait behind it in the queue alongside."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.runtime import Runtime
from tests import factories
from tests.standin.twilio import TwilioStandIn
from workers import jobs, queues


def five_replies(runtime: Runtime, type_: str) -> tuple[list[str], list[str]]:
    """Five messages, each to a channel of its own contact, queued; their ids and phones."""
    org = factories.committed_organization(runtime)
    messages, phones = [], []
    for phone in factories.phones(5):
        with runtime.sessions() as session, session.begin():
            channel_id, _ = factories.channel_of(session, runtime.settings, org, [phone])
        messages.append(
            factories.post_to_channel(runtime, org, channel_id, f"a {type_}", type=type_)
        )
        phones.append(phone)
    return messages, phones


def test_queued_text_messages_go_out_with_the_first(
    runtime: Runtime, twilio: TwilioStandIn, work: Callable[..., None]
) -> None:
    # Each relayed reply is its own small fan-out, mostly waiting on Twilio: one after the
    # other, a worker relayed a few a second however many were waiting.
    messages, phones = five_replies(runtime, "text")
    twilio.set_latency(0.05)

    assert jobs.fan_out(messages[0], queue=queues.TEXT) == {"sent": 5}
    work()  # the five queued jobs find nothing left to send

    for phone in phones:
        assert len(twilio.sent_to(phone)) == 1
    assert {d.status for m in messages for d in factories.deliveries(runtime, m)} == {"sent"}


@pytest.mark.parametrize("type_", ["tracking_update", "pickup_reminder"])
def test_notifications_go_one_message_at_a_time(
    runtime: Runtime, twilio: TwilioStandIn, work: Callable[..., None], type_: str
) -> None:
    # A bulk notification slice may last a minute: it must not also take in others while
    # conversation waits in the queue ahead of it.
    messages, phones = five_replies(runtime, type_)

    assert jobs.fan_out(messages[0], queue=queues.NOTIFICATIONS) == {"sent": 1}
    work()

    for phone in phones:
        assert len(twilio.sent_to(phone)) == 1
