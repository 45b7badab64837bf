"""Hostile input to Twilio's webhooks: property-based form bodies, validly signed and not.

Random, missing and repeated fields, huge values, odd encodings and control characters, posted to
`/twilio/sms` and `/twilio/status` of the app on the run's own PostgreSQL and Redis: always a 4xx
or a valid answer, never a 500; nothing stored without a valid signature.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote_plus

import pytest
from flask import Flask, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.exceptions import RequestEntityTooLarge

from bridge.actors import Actor
from bridge.db import transaction
from bridge.messages import Draft, post_channel_message
from bridge.models import Delivery, DeliveryStatus, InboundSms, Message
from bridge.runtime import Runtime
from tests.fixtures.twilio import payloads
from tests.reliability.conftest import Record, size
from tests.reliability.system import System
from webhooks import create_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    # A falsifying example may hold a 70 kB value; hypothesis warns before printing it.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

FIELDS = [
    "From",
    "To",
    "Body",
    "MessageSid",
    "SmsSid",
    "SmsMessageSid",
    "AccountSid",
    "MessagingServiceSid",
    "NumMedia",
    "NumSegments",
    "MediaUrl0",
    "MediaContentType0",
    "MediaUrl9",
    "MessageStatus",
    "SmsStatus",
    "ErrorCode",
    "ErrorMessage",
    "ApiVersion",
    "FromCountry",
    "OptOutType",
]
ODD = st.sampled_from(
    [
        "",
        "\x00",
        "\x00\x01\x7f",
        "\u202e+14155550100",
        "STOP",
        " help ",
        "+" + "9" * 40,
        "SM" + "f" * 32,
        "SM" + "f" * 300,
        "-1",
        "99999999999999999999",
        "delivered",
        "read",
        "failed",
        "%ff%fe",
        "caf\u00e9 \U0001f4e6",
        "\r\n\t",
        "x" * 70_000,
        "https://example.com/a.jpg",
        "javascript:alert(1)",
    ]
)
VALUE = st.one_of(
    ODD,
    st.text(max_size=300),
    st.text(max_size=5000, alphabet=st.characters(codec=None, categories=None)),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zl", "Zp", "Cf"]), max_size=20),
)
NAME = st.one_of(st.sampled_from(FIELDS), st.text(max_size=20))
PAIRS = st.lists(st.tuples(NAME, VALUE), max_size=25)


@dataclass
class Target:
    app: Flask
    system: System
    contacts: list[str]
    senders: list[str]
    deliveries: list[tuple[str, str]]  # (id, its Twilio SID)


@pytest.fixture
def web(system: System) -> Iterator[Target]:
    """The web app in this process on the System's stores, and real numbers and deliveries."""
    org = system.organization()
    channel_id, phones = system.channel(org, 3)
    runtime = Runtime(system.settings())
    with transaction(runtime.sessions) as session:
        post_channel_message(
            session,
            runtime.settings,
            Actor.organization(org.id),
            channel_id,
            Draft.of("Gate code 4411"),
        )
        rows = session.execute(select(Delivery)).scalars().all()
        for n, row in enumerate(rows):
            row.twilio_sid, row.status = f"SM{n:032x}", DeliveryStatus.SENT
        deliveries = [(row.id, str(row.twilio_sid)) for row in rows]
    system.texts.add("Gate code 4411")
    yield Target(create_app(runtime=runtime), system, phones, org.senders, deliveries)
    runtime.close()


def base_payload(target: Target, endpoint: str, n: int) -> tuple[str, list[tuple[str, str]]]:
    """A well-formed payload Twilio would send (to be mutated), and the query it goes with."""
    if endpoint == "/twilio/sms":
        params = payloads.inbound(
            target.contacts[n % 3], target.senders[0], f"fuzz {n}", MessageSid=f"SM{n:032x}"
        )
        return "", list(params.items())
    delivery_id, sid = target.deliveries[n % len(target.deliveries)]
    status = ["queued", "sent", "delivered", "undelivered", "failed", "read"][n % 6]
    params = payloads.load("status_delivered", MessageSid=sid, SmsSid=sid, MessageStatus=status)
    return f"?d={delivery_id}", list(params.items())


def mutate(
    base: list[tuple[str, str]],
    dropped: set[int],
    replaced: dict[int, str],
    extra: list[tuple[str, str]],
    repeat: bool,
) -> list[tuple[str, str]]:
    pairs = [(k, replaced.get(i, v)) for i, (k, v) in enumerate(base) if i not in dropped]
    if repeat:
        pairs += pairs[:3]
    return pairs + extra


def stored(system: System) -> tuple[int, int, int]:
    """How many inbound SMS, messages and deliveries the database holds."""
    with system.runtime.sessions() as session:
        inbound, messages, deliveries = (
            int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (InboundSms, Message, Delivery)
        )
    return inbound, messages, deliveries


def encode(pairs: list[tuple[str, str]], encoding: str) -> bytes:
    """A form body as a client might send it: UTF-8, Latin-1 where it fits, or raw percent bytes."""
    if encoding == "latin-1":
        return "&".join(
            f"{quote_plus(k, encoding='latin-1', errors='replace')}="
            f"{quote_plus(v, encoding='latin-1', errors='replace')}"
            for k, v in pairs
        ).encode()
    if encoding == "raw":
        return b"&".join(
            k.encode("utf-8", "surrogatepass") + b"=" + v.encode("utf-8", "surrogatepass")
            for k, v in pairs
        )
    # A lone surrogate goes as its three bytes (%ED%A0%80): no valid UTF-8, which is the point.
    return "&".join(
        f"{quote_plus(k, errors='surrogatepass')}={quote_plus(v, errors='surrogatepass')}"
        for k, v in pairs
    ).encode()


def signed_headers(app: Flask, system: System, path: str, body: bytes, kind: str) -> dict[str, str]:
    """Sign what the app will read from this body (so odd encodings are signed as parsed)."""
    with app.test_request_context(path, method="POST", data=body, content_type=kind):
        try:
            pairs = list(request.form.items(multi=True))
        except RequestEntityTooLarge:
            pairs = []  # the app refuses the body before it reads a signature
    token = system.secrets["TWILIO_AUTH_TOKEN"]
    return {"X-Twilio-Signature": payloads.sign(token, system.base + path, pairs)}


@pytest.mark.parametrize("endpoint", ["/twilio/sms", "/twilio/status"])
def test_fuzzed_webhook_bodies_never_500_and_unsigned_stores_nothing(
    web: Target, record: Record, endpoint: str
) -> None:
    app, system = web.app, web.system
    client = app.test_client()
    counter = itertools.count(10_000)
    answers: Counter[str] = Counter()
    unsigned_stored: list[tuple[int, int, int]] = []
    server_errors: list[list[tuple[str, str]]] = []

    @settings(
        max_examples=size(100, 3000),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(
        dropped=st.sets(st.integers(0, 12), max_size=4),
        replaced=st.dictionaries(st.integers(0, 12), VALUE, max_size=3),
        extra=PAIRS,
        repeat=st.booleans(),
        encoding=st.sampled_from(["utf-8", "latin-1", "raw"]),
        kind=st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=latin-1",
                "text/plain",
                "multipart/form-data; boundary=x",
            ]
        ),
        query=st.sampled_from(["", "", "", "?d=dlv_x", "?d=%00%00", "?d=dlv_" + "a" * 300]),
    )
    def attack(
        dropped: set[int],
        replaced: dict[int, str],
        extra: list[tuple[str, str]],
        repeat: bool,
        encoding: str,
        kind: str,
        query: str,
    ) -> None:
        own_query, base = base_payload(web, endpoint, next(counter))
        path = endpoint + (query or own_query)
        body = encode(mutate(base, dropped, replaced, extra, repeat), encoding)
        headers = signed_headers(app, system, path, body, kind)
        before = stored(system)
        forged = client.post(
            path,
            data=body,
            content_type=kind,
            headers={"X-Twilio-Signature": "AAAA" + headers["X-Twilio-Signature"][4:]},
        )
        if stored(system) != before:
            unsigned_stored.append(before)
        answers[f"unsigned {forged.status_code}"] += 1
        answer = client.post(path, data=body, content_type=kind, headers=headers)
        answers[f"signed {answer.status_code}"] += 1
        if answer.status_code >= 500:
            server_errors.append(mutate(base, dropped, replaced, extra, repeat))
        assert forged.status_code in (403, 413), forged.status_code
        assert answer.status_code < 500, (answer.status_code, answer.get_data(as_text=True)[:300])

    try:
        attack()
    finally:
        record.injected = (
            f"{endpoint}: {size(100, 3000)}+ hypothesis bodies (random/missing/repeated fields, "
            "huge values, odd encodings, control characters), each signed and forged"
        )
        record.counted = {
            "answers": dict(sorted(answers.items())),
            "server_errors": len(server_errors),
            "stored_without_signature": len(unsigned_stored),
        }
    assert not unsigned_stored
    assert not server_errors
    assert any(k.startswith("signed 200") for k in answers), "no body was ever accepted"
