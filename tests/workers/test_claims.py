"""Claiming and recording sends: ownership after pacing, the order rule per organization, failed
parts, quiet hours on retries, ambiguous sends, and the hot path's partial indexes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, text, update

from bridge.claims import claim_deliveries, next_attempt_at
from bridge.db import transaction, utcnow
from bridge.deliveries import apply_status, find_delivery
from bridge.errors import TransientSendError
from bridge.models import Delivery
from bridge.runtime import Runtime
from bridge.sending import RELEASED, Pace, record_sends, record_sent, send_unrecorded
from bridge.stale import resolve_stale
from bridge.twilio_client import OutgoingSms, Sender, SendResult
from tests import factories
from tests.standin.twilio import TwilioStandIn


def send_claimed(
    runtime: Runtime,
    sender: Sender,
    delivery: Delivery,
    pace: Pace = lambda key, n, ready: ready(),
) -> str:
    """Send one claimed delivery as a fan-out does and record it at once; its new status."""
    outcome = send_unrecorded(
        runtime.engine, runtime.sessions, runtime.settings, sender, delivery, pace
    )
    if outcome.result is None:
        return str(outcome.status)
    with transaction(runtime.sessions) as session:
        return record_sent(session, delivery.id, outcome.result) or "sent"


def claim_one(runtime: Runtime, message_id: str) -> Delivery:
    with runtime.sessions() as session, session.begin():
        [claimed] = claim_deliveries(session, message_id, 10)
    return claimed


def test_a_claim_the_sweeper_took_back_during_pacing_is_not_sent(
    runtime: Runtime, twilio: TwilioStandIn
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    factories.fast_stale(runtime)
    claimed = claim_one(runtime, message_id)
    taken_back = []

    def slow_rate_slot(sender_key: str, segments: int, ready: Callable[[], bool]) -> bool:
        # The rate limiter holds this send past SEND_STALE_AFTER; the sweeper runs meanwhile.
        time.sleep(0.4)
        taken_back.append(resolve_stale(runtime.sessions, runtime.settings, runtime.sender).resend)
        return ready()

    status = send_claimed(runtime, runtime.sender, claimed, slow_rate_slot)
    assert taken_back == [1] and status == RELEASED
    assert twilio.requests == []
    # The worker that claims it next sends it: once in all.
    again = claim_one(runtime, message_id)
    assert send_claimed(runtime, runtime.sender, again) == "sent"
    assert len(twilio.sent_to(contact.phone)) == 1


def test_sids_recorded_in_one_batch_never_move_a_callback_state_back(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(3))
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    with runtime.sessions() as session, session.begin():
        early, plain, failed = claim_deliveries(session, message_id, 10)
    with runtime.sessions() as session, session.begin():
        # Twilio's callbacks came before the worker saved the SIDs.
        for delivery, status, code in ((early, "delivered", None), (failed, "failed", 30003)):
            row = find_delivery(session, delivery.id, None)
            assert row is not None
            apply_status(session, row, status, f"SM{delivery.id}", error_code=code)
    sent = [
        (early.id, SendResult(sid=f"SM{early.id}", status="queued", num_segments=1)),
        (plain.id, SendResult(sid=f"SM{plain.id}", status="queued", num_segments=2)),
        (failed.id, SendResult(sid=f"SM{failed.id}", status="queued", num_segments=None)),
    ]
    with transaction(runtime.sessions) as session:
        record_sends(session, sent)
    rows = {row.id: row for row in factories.deliveries(runtime, message_id)}
    assert {d: (rows[d].status, rows[d].twilio_sid) for d, _ in sent} == {
        early.id: ("delivered", f"SM{early.id}"),
        plain.id: ("sent", f"SM{plain.id}"),
        failed.id: ("failed", f"SM{failed.id}"),
    }
    assert rows[plain.id].segments == 2 and rows[failed.id].segments == 1
    assert rows[failed.id].error_code == 30003  # the callback's error is kept
    assert all(rows[d].sent_at is not None for d, _ in sent)


def test_a_claim_still_owned_after_pacing_is_sent_and_renewed(
    runtime: Runtime, twilio: TwilioStandIn
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, [contact] = factories.channel_of(
            session, runtime.settings, org, factories.phones(1)
        )
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    claimed = claim_one(runtime, message_id)
    first_claim = claimed.claimed_at
    assert send_claimed(runtime, runtime.sender, claimed) == "sent"
    [row] = factories.deliveries(runtime, message_id)
    assert row.claimed_at is not None and first_claim is not None and row.claimed_at > first_claim
    assert len(twilio.sent_to(contact.phone)) == 1


def test_the_order_rule_does_not_cross_organizations(runtime: Runtime) -> None:
    shared = factories.phone()
    acme, other = (
        factories.committed_organization(runtime),
        factories.committed_organization(runtime),
    )
    with runtime.sessions() as session, session.begin():
        acme_channel, _ = factories.channel_of(session, runtime.settings, acme, [shared])
        other_channel, _ = factories.channel_of(session, runtime.settings, other, [shared])
    acme_message = factories.post_to_channel(runtime, acme, acme_channel, "From Acme")
    other_message = factories.post_to_channel(runtime, other, other_channel, "From Other")
    claim_one(runtime, acme_message)  # on its way, from Acme's number
    with runtime.sessions() as session, session.begin():
        assert len(claim_deliveries(session, other_message, 10)) == 1


def test_after_part_one_fails_for_good_the_later_parts_do_not_go(
    runtime: Runtime,
    twilio: TwilioStandIn,
    work: factories.Work,
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, ["+15005550001"])
    message_id = factories.post_to_channel(runtime, org, channel_id, "word " * 700)  # three parts
    work()
    rows = factories.deliveries(runtime, message_id)
    assert [(r.part, r.status, r.error_code) for r in rows] == [
        (1, "failed", 21211),
        (2, "failed", 21211),
        (3, "failed", 21211),
    ]
    assert [r.error_message for r in rows[1:]] == ["an earlier part failed"] * 2
    assert len(twilio.requests) == 1


def quiet_now(runtime: Runtime, zone: str = "America/Los_Angeles") -> None:
    """Quiet hours from an hour ago to an hour from now, in the contacts' (+1 415) zone."""
    local = datetime.now(ZoneInfo(zone))
    window = f"{(local - timedelta(hours=1)):%H:%M}-{(local + timedelta(hours=1)):%H:%M}"
    runtime.settings = runtime.settings.model_copy(update={"quiet_hours": window})


def post_typed(runtime: Runtime, org: Any, channel_id: str, type_: str) -> str:
    return factories.post_to_channel(runtime, org, channel_id, f"a {type_}", type=type_)


@pytest.mark.parametrize(("type_", "held"), [("tracking_update", True), ("text", False)])
def test_a_retry_of_a_notification_waits_for_quiet_hours(
    runtime: Runtime, twilio: TwilioStandIn, type_: str, held: bool
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    message_id = post_typed(runtime, org, channel_id, type_)  # quiet hours are off here
    quiet_now(runtime)  # and on by the time the first attempt fails
    twilio.fail_next(1, status=503)
    claimed = claim_one(runtime, message_id)
    assert send_claimed(runtime, runtime.sender, claimed) == "pending"
    [row] = factories.deliveries(runtime, message_id)
    assert row.not_before is not None
    assert (row.not_before > utcnow() + timedelta(minutes=50)) is held


@pytest.mark.parametrize(("type_", "held"), [("pickup_reminder", True), ("text", False)])
def test_a_stale_resend_of_a_notification_waits_for_quiet_hours(
    runtime: Runtime, twilio: TwilioStandIn, type_: str, held: bool
) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    message_id = post_typed(runtime, org, channel_id, type_)
    quiet_now(runtime)
    factories.fast_stale(runtime)
    claim_one(runtime, message_id)  # and the worker dies before sending
    time.sleep(0.4)
    assert resolve_stale(runtime.sessions, runtime.settings, runtime.sender).resend == 1
    [row] = factories.deliveries(runtime, message_id)
    assert row.status == "pending"
    if held:
        assert row.not_before is not None and row.not_before > utcnow() + timedelta(minutes=50)
    else:
        assert row.not_before is None
    assert twilio.requests == []


class AnswerLost:
    """A sender whose request reached Twilio but whose answer was lost (what a read timeout is)."""

    def send(self, sms: OutgoingSms) -> SendResult:
        raise TransientSendError("no answer before the timeout", may_have_sent=True)

    def find_sent(self, *args: Any, **kwargs: Any) -> str | None:
        return None

    def close(self) -> None:
        return None


def test_a_send_that_may_have_gone_is_unknown_not_retried(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(1))
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    claimed = claim_one(runtime, message_id)
    assert send_claimed(runtime, AnswerLost(), claimed) == "unknown"


def test_next_attempt_at_is_one_query(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(2))
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    with factories.statements(runtime.engine) as statements, runtime.sessions() as session:
        assert next_attempt_at(session, message_id) is not None
        later = utcnow() + timedelta(hours=1)
        session.execute(
            update(Delivery)
            .where(Delivery.message_id == message_id)
            .values(not_before=later)
            .execution_options(synchronize_session=False)
        )
        assert next_attempt_at(session, message_id) == later
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2


def plans(runtime: Runtime, message_id: str) -> list[str]:
    """The query plan of every SELECT or UPDATE of deliveries that claiming runs, seq scans
    discouraged (PostgreSQL)."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        verb = statement.lstrip().upper()
        if verb.startswith(("SELECT", "UPDATE")) and "deliveries" in statement:
            captured.append((statement, parameters))

    event.listen(runtime.engine, "before_cursor_execute", capture)
    try:
        with runtime.sessions() as session, session.begin():
            claim_deliveries(session, message_id, 10)
            session.rollback()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", capture)
    found = []
    with runtime.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SET enable_seqscan = off"))
        prefix = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        for statement, parameters in captured:
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            found.append("\n".join(str(r[-1]) for r in rows))
        conn.rollback()
    return found


def test_claiming_uses_the_partial_indexes(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with runtime.sessions() as session, session.begin():
        channel_id, _ = factories.channel_of(session, runtime.settings, org, factories.phones(3))
    message_id = factories.post_to_channel(runtime, org, channel_id, "Hello")
    [candidates] = [p for p in plans(runtime, message_id) if "ix_deliveries_" in p]
    assert "ix_deliveries_open_to_order" in candidates
    if runtime.engine.dialect.name == "postgresql":
        # SQLite, without statistics, takes the unique index on the same columns instead.
        assert "ix_deliveries_pending" in candidates
