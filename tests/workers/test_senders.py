"""Where SMS come from: a channel made before the organization had numbers gets one at publish,
no sender at all fails for good (never a stuck delivery), and no organization starts without one."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bridge.errors import ValidationError
from bridge.models import ChannelSubscriber, Organization
from bridge.organizations import add_sender, create_organization
from bridge.runtime import Runtime
from bridge.sending import NO_SENDER
from tests import factories
from tests.standin.twilio import TwilioStandIn
from webhooks import create_app
from webhooks.cli import cli

SERVICE_SID = "MG" + "ab" * 16


def service_only_org(runtime: Runtime) -> Organization:
    with runtime.sessions() as session, session.begin():
        made = create_organization(
            session, runtime.settings, "Acme", messaging_service_sid=SERVICE_SID
        )
    return made.organization


def test_a_channel_made_before_the_first_number_gets_one_at_publish(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = service_only_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    number = factories.sender()
    with runtime.sessions() as session, session.begin():
        add_sender(session, runtime.settings, org.id, number)
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    work()

    [row] = factories.deliveries(runtime, message_id)
    assert (row.status, row.from_phone, row.messaging_service_sid) == ("sent", number, None)
    [request] = twilio.sent_to(contact.phone)
    assert request["from"] == number
    with runtime.sessions() as session:
        recorded = session.execute(
            select(ChannelSubscriber.sender_phone).where(
                ChannelSubscriber.channel_id == channel_id,
                ChannelSubscriber.subscriber_id == contact.id,
            )
        ).scalar_one()
    assert recorded == number  # so replies to that number route to this channel


def test_no_sender_and_no_messaging_service_fails_for_good(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = service_only_org(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
        # The service is removed later (by hand, in the database): nothing is left to send from.
        session.get_one(Organization, org.id).messaging_service_sid = None
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello " * 300)  # two parts
    work()

    rows = factories.deliveries(runtime, message_id)
    assert [(r.part, r.status) for r in rows] == [(1, "failed"), (2, "failed")]
    assert rows[0].error_message == NO_SENDER
    assert rows[1].error_message == "an earlier part failed"
    assert twilio.requests == []


def test_an_organization_needs_a_sender_or_a_messaging_service(runtime: Runtime) -> None:
    with runtime.sessions() as session, pytest.raises(ValidationError) as info:
        create_organization(session, runtime.settings, "Acme")
    assert info.value.param == "sender"


def test_org_create_without_a_sender_is_refused_with_exit_code_2(runtime: Runtime) -> None:
    app = create_app(runtime=runtime)
    result = app.test_cli_runner().invoke(cli, ["org", "create", "Acme"])
    assert result.exit_code == 2
    assert "--sender" in result.output and "Messaging Service SID" in result.output
    with runtime.sessions() as session:
        assert session.execute(select(Organization)).first() is None
