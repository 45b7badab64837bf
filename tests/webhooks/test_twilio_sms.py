"""POST /twilio/sms: signatures, dedupe (also at once, over real HTTP), keywords, matching, MMS."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from bridge.db import transaction
from bridge.models import Contact, Delivery, InboundSms, Message, Organization
from bridge.organizations import is_opted_out
from bridge.runtime import Runtime
from bridge.settings import Settings, SettingsRefused, load_settings
from tests import factories
from tests.conftest import TEST_HASH_KEY
from tests.factories import Conversation
from tests.fixtures.twilio import payloads
from tests.webhooks.conftest import serving
from webhooks import create_app

AUTH_TOKEN = "test-auth-token-5f0e1d2c3b4a"
BASE = factories.BASE_URL
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with Twilio credentials: webhooks are signed with the auth token."""
    return factories.with_twilio(settings, AUTH_TOKEN)


@pytest.fixture
def world(runtime: Runtime, settings: Settings, redis_client: redis.Redis) -> Conversation:
    """An organization with one number, Jane and Omar in one channel about order-1."""
    return factories.conversation(runtime, settings)


@contextmanager
def reading(runtime: Runtime) -> Iterator[Session]:
    """A short-lived session: SQLite lets one writer in, so tests never sit on a transaction."""
    with runtime.sessions() as session:
        yield session


def post_sms(
    client: FlaskClient, payload: dict[str, str] | list[tuple[str, str]], **headers: str
) -> TestResponse:
    return factories.post_signed(client, AUTH_TOKEN, "/twilio/sms", payload, **headers)


def one(runtime: Runtime, statement: Any) -> Any:
    with reading(runtime) as session:
        return session.execute(statement).scalar_one()


def rows(runtime: Runtime, statement: Any) -> list[Any]:
    with reading(runtime) as session:
        return list(session.execute(statement).all())


def opted_out(runtime: Runtime, org: Organization, contact: Contact) -> bool:
    with reading(runtime) as session:
        return is_opted_out(session, org.id, contact.phone_hash)


def count(runtime: Runtime, model: type) -> int:
    with reading(runtime) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_reply_is_stored_answered_with_empty_twiml_and_its_relay_enqueued(
    client: FlaskClient, runtime: Runtime, world: Conversation, redis_client: redis.Redis
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "On my way")

    answer = post_sms(client, payload)

    assert answer.status_code == 200
    assert answer.mimetype == "text/xml"
    assert answer.get_data(as_text=True) == EMPTY
    inbound = one(runtime, select(InboundSms))
    assert (inbound.status, inbound.channel_id, inbound.message_sid) == (
        "matched",
        world.channel.id,
        payload["MessageSid"],
    )
    assert inbound.params == payload, "every field Twilio sent is kept"
    message = one(runtime, select(Message).where(Message.id == inbound.message_id))
    assert (message.subscriber_id, message.text, message.thread_id) == (
        world.jane.id,
        "On my way",
        "thrd_order-1",
    )
    jobs = Queue("text", connection=redis_client).jobs
    assert [(j.func_name, j.args) for j in jobs] == [("workers.jobs.fan_out", (message.id,))]


def test_an_mms_is_stored_with_its_media(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "Box", name="inbound_mms")

    assert post_sms(client, payload).status_code == 200

    message = one(runtime, select(Message).where(Message.author_type == "contact"))
    assert message.media_urls == [payload["MediaUrl0"], payload["MediaUrl1"]]
    relay = one(runtime, select(Delivery).where(Delivery.message_id == message.id))
    assert relay.media_urls == message.media_urls


def _pairs(payload: dict[str, str]) -> list[tuple[str, str]]:
    return list(payload.items())


SIGNATURE_CASES = [
    # (case, url signed, pairs signed -> pairs posted, token, expected status)
    ("valid", BASE + "/twilio/sms", None, AUTH_TOKEN, 200),
    ("explicit default port", "https://bridge.example.com:443/twilio/sms", None, AUTH_TOKEN, 200),
    ("another token", BASE + "/twilio/sms", None, "not-the-auth-token", 403),
    ("replayed from another URL", "https://evil.example.com/twilio/sms", None, AUTH_TOKEN, 403),
    ("replayed from another path", BASE + "/twilio/status", None, AUTH_TOKEN, 403),
    ("signed for http", "http://bridge.example.com/twilio/sms", None, AUTH_TOKEN, 403),
    ("wrong explicit port", "https://bridge.example.com:8443/twilio/sms", None, AUTH_TOKEN, 403),
    ("parameter added after signing", None, "add", AUTH_TOKEN, 403),
    ("parameter changed after signing", None, "change", AUTH_TOKEN, 403),
    ("parameter removed after signing", None, "remove", AUTH_TOKEN, 403),
    ("repeated name, second value added after signing", None, "repeat", AUTH_TOKEN, 403),
]


@pytest.mark.parametrize(
    ("case", "url", "tamper", "token", "status"),
    SIGNATURE_CASES,
    ids=[c[0] for c in SIGNATURE_CASES],
)
def test_signatures(
    client: FlaskClient,
    runtime: Runtime,
    world: Conversation,
    case: str,
    url: str | None,
    tamper: str | None,
    token: str,
    status: int,
) -> None:
    signed_pairs = _pairs(payloads.inbound(world.jane.phone, world.to, "hello"))
    posted_pairs = list(signed_pairs)
    if tamper == "add":
        posted_pairs.append(("AddOns", '{"status":"successful"}'))
    elif tamper == "change":
        posted_pairs = [(k, "STOP" if k == "Body" else v) for k, v in signed_pairs]
    elif tamper == "remove":
        posted_pairs = [(k, v) for k, v in signed_pairs if k != "FromCity"]
    elif tamper == "repeat":
        posted_pairs.append(("Body", "and a second body"))
    signature = payloads.sign(token, url or BASE + "/twilio/sms", signed_pairs)

    answer = client.post(
        "/twilio/sms",
        data=payloads.form(posted_pairs),
        headers={"Content-Type": payloads.FORM, "X-Twilio-Signature": signature},
    )

    assert answer.status_code == status, case
    if status == 403:
        assert answer.get_json()["error"]["param"] == "X-Twilio-Signature"
        assert count(runtime, InboundSms) == 0 and count(runtime, Message) == 1
    else:
        assert count(runtime, InboundSms) == 1


def test_a_missing_signature_is_403_and_stores_nothing(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "hello")

    answer = client.post("/twilio/sms", data=payload)

    assert answer.status_code == 403
    assert answer.get_json()["error"]["type"] == "permission_error"
    assert count(runtime, InboundSms) == 0


def test_every_repeated_parameter_is_signed(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    # Twilio adds parameters without notice, sometimes under one name more than once.
    pairs = [
        *_pairs(payloads.inbound(world.jane.phone, world.to, "hi")),
        ("X", "b"),
        ("X", "a"),
    ]

    assert post_sms(client, pairs).status_code == 200

    assert one(runtime, select(InboundSms)).params["X"] == ["b", "a"]


def test_the_signed_url_comes_from_settings_not_the_host_header(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "hi")
    # Behind Heroku's router the app sees its internal host and plain http.
    internal, headers = payloads.signed(AUTH_TOKEN, "http://10.1.2.3:31337", "/twilio/sms", payload)
    body, good = payloads.signed(AUTH_TOKEN, BASE, "/twilio/sms", payload)

    forged = client.post(
        "/twilio/sms", data=internal, headers=headers, base_url="http://10.1.2.3:31337"
    )
    proxied = client.post(
        "/twilio/sms",
        data=body,
        headers={**good, "X-Forwarded-Host": "internal.local", "X-Forwarded-Proto": "http"},
        base_url="http://10.1.2.3:31337",
    )

    assert (forged.status_code, proxied.status_code) == (403, 200)


def test_the_raw_query_string_is_part_of_the_signed_url(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "hi")
    path = "/twilio/sms?source=pool&b=2%2F3"
    body, headers = payloads.signed(AUTH_TOKEN, BASE, path, payload)
    _, without_query = payloads.signed(AUTH_TOKEN, BASE, "/twilio/sms", payload)

    assert client.post(path, data=body, headers=without_query).status_code == 403
    assert client.post(path, data=body, headers=headers).status_code == 200


def test_without_twilio_credentials_the_secret_key_signs_on_loopback(
    settings: Settings, runtime: Runtime, world: Conversation
) -> None:
    # The development secret checks webhooks only while PUBLIC_BASE_URL is this machine.
    local = "http://localhost:5000"
    development = settings.model_copy(
        update={"twilio_auth_token": None, "twilio_account_sid": None, "public_base_url": local}
    )
    app = create_app(runtime=Runtime(development))
    payload = payloads.inbound(world.jane.phone, world.to, "hi")
    body, headers = payloads.signed(development.secret_key, local, "/twilio/sms", payload)
    _, with_nothing = payloads.signed("", local, "/twilio/sms", payload)

    with app.test_client() as client:
        assert client.post("/twilio/sms", data=body, headers=with_nothing).status_code == 403
        assert client.post("/twilio/sms", data=body, headers=headers).status_code == 200
    app.extensions["bridge"].close()


@pytest.mark.parametrize(
    ("public_base_url", "changes", "refused"),
    [
        ("https://bridge.example.com", {}, True),
        ("http://203.0.113.7:8000", {}, True),
        ("http://127.evil.example:5000", {}, True),
        ("http://localhost.evil.example", {}, True),
        ("https://bridge.example.com", {"secret_key": "a-secret-of-our-own-0123456789"}, True),
        ("http://localhost:5000", {}, False),
        ("http://127.0.0.1:8000", {}, False),
        ("http://127.0.0.2:8000", {}, False),
        ("http://[::1]:5000", {}, False),
        ("https://bridge.example.com", {"twilio_auth_token": AUTH_TOKEN}, False),
    ],
)
def test_off_loopback_the_web_process_refuses_to_start_without_twilio_auth_token(
    sqlite_url: str,
    redis_url: str,
    public_base_url: str,
    changes: dict[str, str],
    refused: bool,
) -> None:
    settings = load_settings(
        {},
        database_url=sqlite_url,
        redis_url=redis_url,
        phone_hash_key=TEST_HASH_KEY,
        public_base_url=public_base_url,
        **changes,
    )
    if refused:
        with pytest.raises(SettingsRefused) as info:
            create_app(runtime=Runtime(settings))
        assert info.value.problems == [
            f"TWILIO_AUTH_TOKEN: must be set while PUBLIC_BASE_URL ({public_base_url}) is not a "
            "loopback address: Twilio's webhooks are checked with it"
        ]
        return
    app = create_app(runtime=Runtime(settings))
    with app.test_client() as client:
        assert client.get("/healthz").status_code == 200
    app.extensions["bridge"].close()


@pytest.mark.parametrize("missing", ["MessageSid", "From"])
def test_a_signed_payload_without_its_key_fields_is_a_4xx_naming_it(
    client: FlaskClient, runtime: Runtime, world: Conversation, missing: str
) -> None:
    changes = {missing: None} | (
        {"SmsSid": None, "SmsMessageSid": None} if missing == "MessageSid" else {}
    )
    payload = payloads.inbound(world.jane.phone, world.to, "hi", name="inbound_sms", **changes)

    answer = post_sms(client, payload)

    assert answer.status_code == 422
    assert answer.get_json()["error"]["param"] == missing
    assert count(runtime, InboundSms) == 0


def test_duplicates_in_sequence_store_once_and_answer_alike(
    client: FlaskClient, runtime: Runtime, world: Conversation, redis_client: redis.Redis
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "HELP")
    retry = payloads.inbound(world.jane.phone, world.to, "HELP")

    answers = [post_sms(client, payload) for _ in range(3)]
    # Twilio's retry of one webhook carries the same idempotency token.
    token = {"I-Twilio-Idempotency-Token": "a1b2c3-retry"}
    answers += [post_sms(client, retry, **token), post_sms(client, retry, **token)]

    bodies = {a.get_data(as_text=True) for a in answers[:3]}
    assert [a.status_code for a in answers] == [200] * 5
    assert len(bodies) == 1 and "<Message>" in bodies.pop()
    assert count(runtime, InboundSms) == 2
    assert count(runtime, Message) == 1 + 2, "the first post, and one help meta per new inbound"


def test_ten_copies_at_once_store_one_sms_and_one_message(
    app: Flask, runtime: Runtime, world: Conversation, redis_client: redis.Redis
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "Is it here yet?")
    body, headers = payloads.signed(AUTH_TOKEN, BASE, "/twilio/sms", payload)
    start = threading.Barrier(10)

    def send(url: str) -> tuple[int, str]:
        start.wait(5)
        request = urllib.request.Request(url + "/twilio/sms", data=body.encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()

    with serving(app) as url, ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, [url] * 10))
    factories.run_inbound_jobs(runtime)  # as the worker does, after the answers

    assert answers == [(200, EMPTY)] * 10
    assert count(runtime, InboundSms) == 1
    replies = rows(runtime, select(Message.id).where(Message.author_type == "contact"))
    assert len(replies) == 1
    assert count(runtime, Delivery) == 2 + 1, "the first post to both, the reply relayed to Omar"
    assert len(Queue("text", connection=redis_client).jobs) == 1


def test_ten_retries_at_once_with_one_idempotency_token_store_one_sms(
    app: Flask, runtime: Runtime, world: Conversation, redis_client: redis.Redis
) -> None:
    # Each copy has its own MessageSid: only the token says they are one webhook.
    signed = [
        payloads.signed(
            AUTH_TOKEN,
            BASE,
            "/twilio/sms",
            payloads.inbound(world.jane.phone, world.to, "Is it here yet?"),
            **{"I-Twilio-Idempotency-Token": "retry-token-10"},
        )
        for _ in range(10)
    ]
    start = threading.Barrier(10)

    def send(job: tuple[str, tuple[str, dict[str, str]]]) -> int:
        url, (body, headers) = job
        start.wait(5)
        request = urllib.request.Request(url + "/twilio/sms", data=body.encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)

    with serving(app) as url, ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(send, [(url, one) for one in signed]))
    factories.run_inbound_jobs(runtime)  # as the worker does, after the answers

    assert statuses == [200] * 10
    assert count(runtime, InboundSms) == 1
    assert len(rows(runtime, select(Message.id).where(Message.author_type == "contact"))) == 1


def test_ten_help_requests_at_once_all_get_the_help_text(
    app: Flask, runtime: Runtime, world: Conversation
) -> None:
    payload = payloads.inbound(world.jane.phone, world.to, "help")
    body, headers = payloads.signed(AUTH_TOKEN, BASE, "/twilio/sms", payload)

    def send(url: str) -> str:
        request = urllib.request.Request(url + "/twilio/sms", data=body.encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read().decode()

    with serving(app) as url, ThreadPoolExecutor(10) as pool:
        answers = set(pool.map(send, [url] * 10))

    assert len(answers) == 1 and "Reply STOP to unsubscribe" in answers.pop()
    assert count(runtime, InboundSms) == 1


STOP_WORDS = ["STOP", "stop", "Stop", " STOP ", "StopAll", "unsubscribe", "CANCEL", "end", "Quit"]
STOP_WORDS += ["optout", "REVOKE"]
START_WORDS = ["START", "start", "Yes", " unstop "]
HELP_WORDS = ["HELP", "help", "Info", " info\n"]
NOT_KEYWORDS = ["stop please", "Stop!", "yes please", "need help", "STOP STOP"]


def last_inbound(runtime: Runtime) -> InboundSms:
    with reading(runtime) as session:
        return session.scalars(select(InboundSms).order_by(InboundSms.seq.desc()).limit(1)).one()


def meta_events(runtime: Runtime, channel_id: str) -> list[str]:
    statement = select(Message.event).where(
        Message.type == "meta", Message.channel_id == channel_id
    )
    return [event for (event,) in rows(runtime, statement.order_by(Message.seq))]


def test_each_stop_word_opts_out_and_each_start_word_back_in(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    org, jane = world.org, world.jane
    for i, stop in enumerate(STOP_WORDS):
        start = START_WORDS[i % len(START_WORDS)]
        for word, out in [(stop, True), (start, False)]:
            answer = post_sms(client, payloads.inbound(jane.phone, world.to, word))

            assert (answer.status_code, answer.get_data(as_text=True)) == (200, EMPTY), word
            inbound = last_inbound(runtime)
            assert (inbound.status, inbound.keyword) == ("keyword", word.strip().upper())
            assert opted_out(runtime, org, jane) is out, word
    pairs = ["contact.opted_out", "contact.opted_in"] * len(STOP_WORDS)
    assert meta_events(runtime, world.channel.id) == pairs
    assert count(runtime, Delivery) == 2, "keywords are never relayed or answered by SMS"


def test_each_help_word_answers_with_the_help_text(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    for word in HELP_WORDS:
        answer = post_sms(client, payloads.inbound(world.jane.phone, world.to, word))

        text = answer.get_data(as_text=True)
        assert text.startswith(
            '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Acme Logistics: '
        ), word
        assert text.endswith(
            "Reply STOP to unsubscribe, START to resubscribe. "
            "Msg&amp;data rates may apply.</Message></Response>"
        )
        assert last_inbound(runtime).keyword == word.strip().upper()
    assert meta_events(runtime, world.channel.id) == ["contact.help_requested"] * 4
    assert not opted_out(runtime, world.org, world.jane)


def test_a_keyword_inside_a_sentence_is_plain_text(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    for body in NOT_KEYWORDS:
        answer = post_sms(client, payloads.inbound(world.jane.phone, world.to, body))

        assert answer.get_data(as_text=True) == EMPTY
        inbound = last_inbound(runtime)
        assert (inbound.status, inbound.keyword) == ("matched", None), body
    assert not opted_out(runtime, world.org, world.jane)
    assert meta_events(runtime, world.channel.id) == []


@pytest.mark.parametrize(
    ("case", "from_"),
    [("unknown number", "+14155550123"), ("short code", "88222"), ("alphanumeric", "ACME")],
)
def test_unmatched_senders_are_kept(
    client: FlaskClient, runtime: Runtime, world: Conversation, case: str, from_: str
) -> None:
    answer = post_sms(client, payloads.inbound(from_, world.to, "who is this"))

    assert (answer.status_code, answer.get_data(as_text=True)) == (200, EMPTY)
    inbound = one(runtime, select(InboundSms))
    assert (inbound.status, inbound.from_phone, inbound.body) == ("unmatched", from_, "who is this")
    assert inbound.organization_id == world.org.id
    assert count(runtime, Message) == 1


def test_one_contact_in_two_channels_on_two_numbers_of_the_pool(
    client: FlaskClient, runtime: Runtime, settings: Settings, redis_client: redis.Redis
) -> None:
    with transaction(runtime.sessions) as session:
        org, _ = factories.organization(session, settings, senders=2)
        jane = factories.contact(session, settings, org, "Jane")
        resources = ("order-a", "order-b")
        made = factories.two_channels(session, settings, org, jane, resources)
        channels = {resource: channel.id for resource, channel in zip(resources, made, strict=True)}
    with runtime.sessions() as session:
        numbers = factories.numbers_by_channel(session, jane.id)
    assert len(set(numbers.values())) == 2, "the pool gives each of Jane's channels a number"

    for resource in ["order-a", "order-b", "order-a"]:
        channel_id = channels[resource]
        answer = post_sms(
            client, payloads.inbound(jane.phone, numbers[channel_id], f"re {resource}")
        )
        assert answer.status_code == 200

    received = rows(
        runtime, select(InboundSms.channel_id, InboundSms.body).order_by(InboundSms.seq)
    )
    assert [tuple(r) for r in received] == [
        (channels["order-a"], "re order-a"),
        (channels["order-b"], "re order-b"),
        (channels["order-a"], "re order-a"),
    ]


def test_a_nul_byte_in_a_reply_is_stored_as_a_replacement_character(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    payload = payloads.inbound(
        world.jane.phone, world.to, "On my\x00way", FromCity="SAN\x00FRANCISCO"
    )

    answer = post_sms(client, payload)

    assert (answer.status_code, answer.get_data(as_text=True)) == (200, EMPTY)
    inbound = one(runtime, select(InboundSms))
    assert (inbound.status, inbound.body) == ("matched", "On my\ufffdway")
    assert inbound.params["FromCity"] == "SAN\ufffdFRANCISCO"
    message = one(runtime, select(Message).where(Message.id == inbound.message_id))
    assert message.text == "On my\ufffdway"


def test_nul_bytes_in_every_key_field_still_store_the_sms_once(
    client: FlaskClient, runtime: Runtime, world: Conversation
) -> None:
    sid = "SM\x00" + "1" * 31
    payload = payloads.inbound(
        "+1415\x005550100", world.to + "\x00", "\x00", MessageSid=sid, SmsSid=sid
    )
    payload["Odd\x00Name"] = "x"

    first = post_sms(client, payload, **{"I-Twilio-Idempotency-Token": "tok\x00en"})
    again = post_sms(client, payload)

    assert (first.status_code, again.status_code) == (200, 200)
    inbound = one(runtime, select(InboundSms))
    assert (inbound.status, inbound.message_sid, inbound.body) == (
        "unmatched",
        "SM\ufffd" + "1" * 31,
        "\ufffd",
    )
    assert inbound.from_phone == "+1415\ufffd5550100"
    assert inbound.params["Odd\ufffdName"] == "x"
    assert count(runtime, InboundSms) == 1
