"""The worker's log lines on the send path: the recipient's number as its last four digits."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from bridge.logs import configure_logging
from bridge.runtime import Runtime
from tests.factories import channel_of, committed_organization, post_to_channel
from tests.standin.twilio import TwilioStandIn


@pytest.fixture
def stream(runtime: Runtime) -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = configure_logging(runtime.settings, stream=out)
    yield out
    logging.getLogger().removeHandler(handler)


def test_a_failed_send_is_logged_with_the_last_four_digits_of_its_recipient(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: Callable[..., None],
    stream: io.StringIO,
) -> None:
    org = committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        # The stand-in refuses this magic number with 21211, as Twilio's test credentials do.
        channel_id, _ = channel_of(session, runtime.settings, org, ["+15005550001"])
    post_to_channel(runtime, org, channel_id, "Hello")
    work()

    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    [failed] = [e for e in entries if e["message"] == "send failed"]
    assert failed["to"] == "***0001"
    assert failed["twilio_code"] == 21211
    assert "5005550001" not in stream.getvalue()
