"""The fan-out and the database pool: send threads never hold a connection across a request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import QueuePool, func, select

from bridge.db import make_engine
from bridge.models import Delivery
from bridge.runtime import Runtime
from bridge.settings import POOL_SPARE, Settings, load_settings
from tests import factories
from tests.standin.twilio import TwilioStandIn
from workers.fanout import fan_out_message


def test_the_pool_follows_send_concurrency(settings: Settings) -> None:
    for concurrency in (1, 32, 64):
        runtime = Runtime(settings.model_copy(update={"send_concurrency": concurrency}))
        pool = runtime.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == concurrency + POOL_SPARE
        assert pool._max_overflow == 0
        runtime.close()


@pytest.fixture
def starved(runtime: Runtime) -> Iterator[Runtime]:
    """The test's runtime with a pool of two connections, far fewer than the send threads."""
    runtime.engine.dispose()
    runtime.__dict__["engine"] = make_engine(
        runtime.settings.database_url, pool_size=2, max_overflow=0, pool_timeout=5
    )
    runtime.__dict__.pop("sessions", None)
    yield runtime


def test_fan_out_with_more_send_threads_than_connections_sends_everything(
    starved: Runtime, twilio: TwilioStandIn
) -> None:
    # Send threads that held a pooled connection across their request to Twilio left none for
    # the loop that records the SIDs: it timed out, and the job failed the same way every time.
    runtime = starved
    runtime.settings = runtime.settings.model_copy(update={"send_concurrency": 16})
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(
            session, runtime.settings, org, factories.phones(120)
        )

    twilio.set_latency(0.02)
    message_id = factories.post_to_channel(
        runtime, org, channel_id, "Your parcel is out for delivery"
    )
    result = fan_out_message(runtime, message_id)

    assert not result.errors
    assert result.statuses["sent"] == 120
    for contact in contacts:
        assert len(twilio.sent_to(contact.phone)) == 1
    with runtime.sessions() as session:
        unsent = session.scalar(
            select(func.count()).where(Delivery.message_id == message_id, Delivery.status != "sent")
        )
    assert unsent == 0


def test_send_concurrency_defaults_to_32() -> None:
    assert load_settings({}).send_concurrency == 32
