"""JSON logs: one object per line, ids carried along, phone numbers masked, no text, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from bridge.db import transaction
from bridge.logs import configure_logging, log_context
from bridge.organizations import sender_numbers
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from tests import factories
from tests.fixtures.twilio import payloads
from webhooks import create_app

PHONE = "+14155550123"
BODY = "the gate code is 4417"
SECRETS = {
    "twilio_auth_token": "0123456789abcdef0123456789abcdef",
    "secret_key": "web-secret-key-for-tests",
    "phone_hash_key": "phone-hash-key-for-tests-01234",
    "metrics_token": "metrics-token-for-tests",
}


@pytest.fixture
def secret_settings() -> Settings:
    return load_settings({}, twilio_account_sid="AC" + "1" * 32, **SECRETS)


@pytest.fixture
def stream(secret_settings: Settings) -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(secret_settings, stream=out)
    yield out
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bridge_json", False):
            root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_standard_fields(stream: io.StringIO) -> None:
    logging.getLogger("bridge.test").warning(
        "delivery %s failed", "dlv_1", extra={"delivery_id": "dlv_1"}
    )
    [entry] = lines(stream)
    assert list(entry)[:5] == ["timestamp", "level", "logger", "message", "delivery_id"]
    assert entry["level"] == "warning"
    assert entry["logger"] == "bridge.test"
    assert entry["message"] == "delivery dlv_1 failed"
    assert str(entry["timestamp"]).endswith("Z")


def test_ids_bound_around_a_block_reach_every_record_inside_it(stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.test")
    with log_context(request_id="req-123456789", message_id="msg_1"):
        log.info("inside", extra={"delivery_id": "dlv_2"})
    log.info("outside")
    inside, outside = lines(stream)
    assert (inside["request_id"], inside["message_id"], inside["delivery_id"]) == (
        "req-123456789",
        "msg_1",
        "dlv_2",
    )
    assert "request_id" not in outside


@pytest.mark.parametrize(
    "message",
    [
        f"sending to {PHONE}",
        "sending to 4155550123",
        "query To=%2B14155550123&From=%2b14155550100",
        f"params {{'To': '{PHONE}'}}",
    ],
)
def test_phone_numbers_in_messages_keep_only_their_last_four_digits(
    stream: io.StringIO, message: str
) -> None:
    logging.getLogger("bridge.test").info(message)
    [entry] = lines(stream)
    assert "5550123" not in stream.getvalue()
    assert "***0123" in str(entry["message"])


def test_phone_fields_are_masked_and_text_fields_are_dropped(stream: io.StringIO) -> None:
    logging.getLogger("bridge.test").info(
        "sent",
        extra={
            "to": "(415) 555-0123",
            "from_": PHONE,
            "body": "secret plans",
            "text": "hi",
            "segments": 2,
        },
    )
    [entry] = lines(stream)
    assert entry["to"] == "***0123"
    assert entry["from_"] == "***0123"
    assert entry["segments"] == 2
    assert "body" not in entry and "text" not in entry
    assert "secret plans" not in stream.getvalue()


@pytest.mark.parametrize(
    "message",
    [
        f"token is {SECRETS['twilio_auth_token']}",
        f"the key {SECRETS['phone_hash_key']} and {SECRETS['secret_key']}",
        f"Authorization: Bearer {SECRETS['metrics_token']}",
        "Authorization: Bearer brk_9Qw-abcdefghijklmnopqrstuvwxyz0123456789",
        "new key brk_9Qw-abcdefghijklmnopqrstuvwxyz0123456789",
        "postgresql://bridge:hunter2hunter2@db.example.com:5432/bridge",
    ],
)
def test_secrets_never_reach_a_line(stream: io.StringIO, message: str) -> None:
    logging.getLogger("bridge.test").info(message)
    out = stream.getvalue()
    for secret in [*SECRETS.values(), "hunter2hunter2", "abcdefghijklmnopqrstuvwxyz0123456789"]:
        assert secret not in out
    assert "[redacted]" in out


def test_exceptions_lose_the_sql_parameters(stream: io.StringIO) -> None:
    engine = create_engine("sqlite://")
    # Not literals in the call: the traceback quotes that source line.
    params = {"p": PHONE, "b": BODY}
    try:
        with engine.connect() as conn:
            conn.execute(text("select * from missing where phone = :p and body = :b"), params)
    except SQLAlchemyError:
        logging.getLogger("bridge.test").exception("query failed")
    [entry] = lines(stream)
    assert "no such table" in str(entry["exception"])
    assert "parameters hidden" in str(entry["exception"])
    assert PHONE not in stream.getvalue() and BODY not in stream.getvalue()


def test_a_web_request_gets_an_id_and_one_access_line_without_its_query(
    runtime: Runtime, stream: io.StringIO
) -> None:
    app = create_app(runtime=runtime)
    configure_logging(runtime.settings, stream=stream)  # create_app installed its own handler
    client = app.test_client()

    given = client.get("/healthz", headers={"X-Request-ID": "router-id-0001"})
    fresh = client.get(f"/healthz?phone={PHONE}")

    assert given.headers["X-Request-ID"] == "router-id-0001"
    assert len(fresh.headers["X-Request-ID"]) >= 16
    access = [e for e in lines(stream) if e["logger"] == "webhooks.access"]
    assert [e["request_id"] for e in access] == ["router-id-0001", fresh.headers["X-Request-ID"]]
    assert access[1]["path"] == "/healthz" and access[1]["status"] == 200
    assert "5550123" not in stream.getvalue()


def test_a_request_id_that_is_not_an_id_is_replaced(runtime: Runtime) -> None:
    response = (
        create_app(runtime=runtime)
        .test_client()
        .get("/healthz", headers={"X-Request-ID": "<script>alert(1)</script>"})
    )
    assert response.headers["X-Request-ID"] != "<script>alert(1)</script>"


def test_a_number_masked_already_keeps_its_last_four_digits(stream: io.StringIO) -> None:
    logging.getLogger("bridge.test").info("sent", extra={"to": "***0123", "from": "***"})
    [entry] = lines(stream)
    assert (entry["to"], entry["from"]) == ("***0123", "***")


def test_the_inbound_sms_line_shows_the_last_four_digits_of_each_number(
    runtime: Runtime, stream: io.StringIO, redis_client: object
) -> None:
    """The real path: a signed webhook, recorded by bridge.inbound, logged once, masked once."""
    with transaction(runtime.sessions) as session:
        org, _ = factories.organization(session, runtime.settings)
        [to] = sender_numbers(session, org.id)
    app = create_app(runtime=runtime)
    configure_logging(runtime.settings, stream=stream)  # create_app installed its own handler
    payload = payloads.inbound(PHONE, to, BODY)
    token = runtime.settings.twilio_auth_token or ""
    body, headers = payloads.signed(token, runtime.settings.public_base_url, "/twilio/sms", payload)

    answered = app.test_client().post("/twilio/sms", data=body, headers=headers)
    factories.run_inbound_jobs(runtime)  # the worker's part: matching, and its log line

    assert answered.status_code == 200
    [entry] = [e for e in lines(stream) if e["message"] == "inbound sms unmatched"]
    assert entry["from"] == "***0123"
    assert entry["to"] == "***" + to[-4:]
    assert "5550123" not in stream.getvalue() and to not in stream.getvalue()
    assert BODY not in stream.getvalue()
