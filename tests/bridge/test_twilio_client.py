"""The Twilio adapter against the local Twilio stand-in, over real HTTP: requests, errors, finds."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.response import Response

from bridge.errors import PermanentSendError, SendError, TransientSendError
from bridge.settings import Settings, load_settings
from bridge.twilio_client import (
    OUTBOX_NOTE,
    OutboxSender,
    OutgoingSms,
    SentQuery,
    TwilioSender,
    build_sender,
    classify_error,
    mask_phone_numbers,
)
from bridge.twilio_http import RedirectingHttpClient, build_twilio_client
from tests.standin.twilio import TwilioStandIn

ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "adapter-test-auth-token-0123"
SENDER = "+15005550006"
CONTACT = "+15552340001"
SERVICE_SID = "MG" + "a" * 32
CALLBACK = "https://bridge.example.com/twilio/status?d=dlv_0001"
MEDIA = tuple(f"https://cdn.example.com/photo-{n}.jpg" for n in range(3))


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_timeout": 2.0,
        "public_base_url": "https://bridge.example.com",
    }
    values.update(overrides)
    return load_settings({}, **values)


def make_sms(**overrides: Any) -> OutgoingSms:
    """The tests' SMS with some fields changed; OutgoingSms checks what it is given."""
    values: dict[str, Any] = {"to": CONTACT, "body": "Your order has shipped", "from_": SENDER}
    values.update(overrides)
    return OutgoingSms(**values)


@pytest.fixture
def standin() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN).start() as twilio:
        yield twilio


@pytest.fixture
def sender(standin: TwilioStandIn) -> Iterator[TwilioSender]:
    sender = build_sender(make_settings(twilio_api_base_url=standin.base_url))
    assert isinstance(sender, TwilioSender)
    yield sender
    sender.close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- sending -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sms", "form"),
    [
        pytest.param(
            make_sms(status_callback=CALLBACK, validity_period=14400),
            {
                "To": [CONTACT],
                "From": [SENDER],
                "Body": ["Your order has shipped"],
                "StatusCallback": [CALLBACK],
                "ValidityPeriod": ["14400"],
            },
            id="sms",
        ),
        pytest.param(
            make_sms(media_urls=MEDIA, status_callback=CALLBACK, validity_period=600),
            {
                "To": [CONTACT],
                "From": [SENDER],
                "Body": ["Your order has shipped"],
                "MediaUrl": list(MEDIA),
                "StatusCallback": [CALLBACK],
                "ValidityPeriod": ["600"],
            },
            id="mms with three media",
        ),
        pytest.param(
            make_sms(body="", media_urls=MEDIA[:1]),
            {"To": [CONTACT], "From": [SENDER], "MediaUrl": [MEDIA[0]]},
            id="media without text",
        ),
        pytest.param(
            make_sms(from_=None, messaging_service_sid=SERVICE_SID, status_callback=CALLBACK),
            {
                "To": [CONTACT],
                "MessagingServiceSid": [SERVICE_SID],
                "Body": ["Your order has shipped"],
                "StatusCallback": [CALLBACK],
            },
            id="messaging service",
        ),
        pytest.param(
            make_sms(messaging_service_sid=SERVICE_SID),
            {
                "To": [CONTACT],
                "From": [SENDER],
                "MessagingServiceSid": [SERVICE_SID],
                "Body": ["Your order has shipped"],
            },
            id="messaging service with a chosen sender",
        ),
        pytest.param(
            make_sms(body="Jane: ünïcödé ✓ " * 10),
            {"To": [CONTACT], "From": [SENDER], "Body": ["Jane: ünïcödé ✓ " * 10]},
            id="unicode",
        ),
    ],
)
def test_send_posts_exactly_this_form(
    sender: TwilioSender, standin: TwilioStandIn, sms: OutgoingSms, form: dict[str, list[str]]
) -> None:
    result = sender.send(sms)

    (request,) = standin.requests
    assert request.form == form
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert result.sid == request.sid
    assert result.status == "queued"
    assert result.num_segments == int(standin.message(result.sid)["num_segments"])


def test_send_reports_segments(sender: TwilioSender) -> None:
    assert sender.send(make_sms(body="x" * 160)).num_segments == 1
    assert sender.send(make_sms(body="x" * 1600)).num_segments == 11


@pytest.mark.parametrize(
    ("sms", "message"),
    [
        (dict(from_=None), "from_ or messaging_service_sid"),
        (dict(body=""), "a body or media"),
    ],
)
def test_outgoing_sms_refuses_what_twilio_would(sms: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_sms(**sms)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sms", "error", "code"),
    [
        (make_sms(to="+15005550001"), PermanentSendError, 21211),
        (make_sms(to="+15005550002"), PermanentSendError, 21612),
        (make_sms(to="+15005550003"), PermanentSendError, 21408),
        (make_sms(to="+15005550004"), PermanentSendError, 21610),
        (make_sms(to="+15005550009"), PermanentSendError, 21614),
        (make_sms(from_="+15005550007"), PermanentSendError, 21606),
        (make_sms(from_="+15005550008"), TransientSendError, 21611),
        (make_sms(body="x" * 1601), PermanentSendError, 21617),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_twilio_refusals_are_classified_with_code_and_reason(
    sender: TwilioSender, sms: OutgoingSms, error: type[SendError], code: int
) -> None:
    with pytest.raises(SendError) as caught:
        sender.send(sms)

    assert type(caught.value) is error
    assert caught.value.retryable is (error is TransientSendError)
    assert (caught.value.code, caught.value.status) == (code, 400)
    assert f"Twilio error {code}" in caught.value.reason
    assert "5550" not in caught.value.reason  # Twilio quotes the number; the reason does not
    assert isinstance(caught.value.__cause__, TwilioRestException)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (429, 20429, TransientSendError),
        (500, 20500, TransientSendError),
        (502, 20502, TransientSendError),
        (503, 20503, TransientSendError),
        (400, 30001, TransientSendError),  # a retryable code wins over a 4xx status
        (400, 30003, TransientSendError),
        (400, 30008, TransientSendError),
        (400, 30006, PermanentSendError),
        (400, 30007, PermanentSendError),
        (400, 21999, PermanentSendError),  # an unknown 4xx code is permanent
        (503, 29999, TransientSendError),  # an unknown 5xx code is transient
    ],
)
def test_injected_faults_are_classified(
    sender: TwilioSender,
    standin: TwilioStandIn,
    status: int,
    code: int,
    error: type[SendError],
) -> None:
    standin.fail_next(1, status=status, code=code)

    with pytest.raises(SendError) as caught:
        sender.send(make_sms())

    assert type(caught.value) is error
    assert (caught.value.status, caught.value.code) == (status, code)
    assert sender.send(make_sms()).status == "queued"  # the fault was for one request only


def test_wrong_credentials_are_permanent(standin: TwilioStandIn) -> None:
    sender = build_sender(
        make_settings(twilio_api_base_url=standin.base_url, twilio_auth_token="wrong-token-42")
    )
    try:
        with pytest.raises(PermanentSendError) as caught:
            sender.send(make_sms())
        with pytest.raises(PermanentSendError) as listing:
            sender.find_sent(SentQuery(CONTACT, SENDER, datetime.now(UTC)))
    finally:
        sender.close()

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert "TWILIO_AUTH_TOKEN" in caught.value.reason
    # twilio-python raises a bare TwilioException for a failed list page; it is classified too
    assert (listing.value.status, listing.value.code) == (401, 20003)
    assert type(listing.value.__cause__) is TwilioException


def test_a_slow_twilio_is_a_transient_timeout(standin: TwilioStandIn) -> None:
    sender = build_sender(make_settings(twilio_api_base_url=standin.base_url, twilio_timeout=0.2))
    standin.set_latency(0.5)
    try:
        with pytest.raises(TransientSendError) as caught:
            sender.send(make_sms())
    finally:
        sender.close()

    assert "timeout" in caught.value.reason
    assert isinstance(caught.value.__cause__, requests.exceptions.ReadTimeout)
    assert (caught.value.code, caught.value.status) == (None, None)


def test_connection_refused_is_transient() -> None:
    sender = build_sender(make_settings(twilio_api_base_url=closed_port_url()))
    try:
        with pytest.raises(TransientSendError) as caught:
            sender.send(make_sms())
        with pytest.raises(TransientSendError):
            sender.find_sent(SentQuery(CONTACT, SENDER, datetime.now(UTC)))
    finally:
        sender.close()

    assert "connect" in caught.value.reason
    assert isinstance(caught.value.__cause__, requests.exceptions.ConnectionError)


def _response(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload))


@pytest.mark.parametrize(
    ("exc", "error", "code", "status"),
    [
        (TwilioRestException(429, "/x", "Too Many", code=20429), TransientSendError, 20429, 429),
        (TwilioRestException(429, "/x", "Too Many", code=None), TransientSendError, None, 429),
        (TwilioRestException(504, "/x", "Gateway", code=None), TransientSendError, None, 504),
        (TwilioRestException(502, "/x", "<html>", code=502), TransientSendError, None, 502),
        (TwilioRestException(400, "/x", "x", code=21211), PermanentSendError, 21211, 400),
        (TwilioRestException(400, "/x", "x", code=21611), TransientSendError, 21611, 400),
        (TwilioRestException(404, "/x", "x", code=20404), PermanentSendError, 20404, 404),
        (
            TwilioServiceException("about:blank", "Too many", 429, 20429),
            TransientSendError,
            20429,
            429,
        ),
        (
            TwilioServiceException("about:blank", "Bad", 400, 21604, detail="To missing"),
            PermanentSendError,
            21604,
            400,
        ),
        (
            TwilioException("Unable to fetch page", _response(503, {"code": 20503})),
            TransientSendError,
            20503,
            503,
        ),
        (
            TwilioException("Unable to fetch page", Response(502, "<html>bad gateway</html>")),
            TransientSendError,
            None,
            502,
        ),
        (TwilioException("Credentials are required"), TransientSendError, None, None),
        (requests.exceptions.ConnectTimeout(), TransientSendError, None, None),
        (requests.exceptions.ReadTimeout(), TransientSendError, None, None),
        (requests.exceptions.ConnectionError(), TransientSendError, None, None),
        (requests.exceptions.ChunkedEncodingError(), TransientSendError, None, None),
        (PermanentSendError("already classified", 21211), PermanentSendError, 21211, None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_classify_error(
    exc: BaseException, error: type[SendError], code: int | None, status: int | None
) -> None:
    classified = classify_error(exc)

    assert type(classified) is error
    assert (classified.code, classified.status) == (code, status)
    assert classified.reason


def test_reasons_from_twilios_free_text_mask_phone_numbers() -> None:
    exc = TwilioRestException(
        400, "/x", "Unable to create record: The 'To' number +15557654321 is odd", code=21999
    )

    assert classify_error(exc).reason == (
        "The 'To' number ***4321 is odd (Twilio error 21999, HTTP 400)"
    )
    assert mask_phone_numbers("call +1 (555) 765-4321 now") == "call ***4321 now"


# -- finding what went -------------------------------------------------------------------------


def test_find_sent_finds_the_sms_that_went(sender: TwilioSender, standin: TwilioStandIn) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    sent = sender.send(make_sms(body="first")).sid
    sender.send(make_sms(body="second"))
    sender.send(make_sms(to="+15552340002", body="first"))

    assert sender.find_sent(SentQuery(CONTACT, SENDER, since)) == sent  # the oldest match
    assert sender.find_sent(SentQuery(CONTACT, SENDER, since, body="second")) != sent
    assert sender.find_sent(SentQuery(CONTACT, SENDER, since, body="first")) == sent
    assert (
        sender.find_sent(SentQuery(CONTACT, SENDER, since, body="first", exclude_sids={sent}))
        is None
    )
    assert sender.find_sent(SentQuery(CONTACT, SENDER, since, body="third")) is None
    assert sender.find_sent(SentQuery("+15552349999", SENDER, since)) is None
    assert sender.find_sent(SentQuery(CONTACT, "+15005550010", since)) is None
    assert (
        sender.find_sent(SentQuery(CONTACT, SENDER, datetime.now(UTC) + timedelta(minutes=1)))
        is None
    )

    listing = standin.requests  # only creates are recorded: find_sent did not create anything
    assert len(listing) == 3


def test_find_sent_reads_times_in_any_timezone(sender: TwilioSender) -> None:
    sent = sender.send(make_sms()).sid
    since = datetime.now(UTC) - timedelta(seconds=2)
    in_new_york = since.astimezone(ZoneInfo("America/New_York"))

    assert sender.find_sent(SentQuery(CONTACT, SENDER, in_new_york)) == sent
    with pytest.raises(ValueError, match="timezone-aware"):
        sender.find_sent(SentQuery(CONTACT, SENDER, datetime.now()))


def test_find_sent_for_a_messaging_service(sender: TwilioSender) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    sent = sender.send(make_sms(from_=None, messaging_service_sid=SERVICE_SID)).sid

    assert (
        sender.find_sent(SentQuery(CONTACT, None, since, messaging_service_sid=SERVICE_SID)) == sent
    )
    assert (
        sender.find_sent(SentQuery(CONTACT, None, since, messaging_service_sid="MG" + "b" * 32))
        is None
    )


def test_find_sent_during_an_outage_is_transient(
    sender: TwilioSender, standin: TwilioStandIn
) -> None:
    standin.fail_for(5, status=503)

    with pytest.raises(TransientSendError) as caught:
        sender.find_sent(SentQuery(CONTACT, SENDER, datetime.now(UTC)))

    assert (caught.value.status, caught.value.code) == (503, 20503)


# -- the HTTP client and the client factory ----------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "url", "expected"),
    [
        (
            "http://127.0.0.1:8099",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&PageSize=50",
            "http://127.0.0.1:8099/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&PageSize=50",
        ),
        (
            "http://127.0.0.1:8099",
            "https://messaging.twilio.com/v1/Services",
            "http://127.0.0.1:8099/v1/Services",
        ),
        (
            "http://127.0.0.1:8099",
            "https://api.sydney.au1.twilio.com/2010-04-01/Accounts.json",
            "http://127.0.0.1:8099/2010-04-01/Accounts.json",
        ),
        ("http://proxy.local/twilio/", "https://api.twilio.com/x", "http://proxy.local/twilio/x"),
        ("http://127.0.0.1:8099", "https://example.com/x?y=1", "https://example.com/x?y=1"),
        ("http://127.0.0.1:8099", "https://nottwilio.com/x", "https://nottwilio.com/x"),
        (None, "https://api.twilio.com/x", "https://api.twilio.com/x"),
    ],
)
def test_redirecting_http_client_swaps_only_twilio_hosts(
    base_url: str | None, url: str, expected: str
) -> None:
    http_client = RedirectingHttpClient(base_url, timeout=1.0)
    try:
        assert http_client.redirect(url) == expected
    finally:
        http_client.close()


def test_the_environment_proxy_is_read_once_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    proxied = RedirectingHttpClient(None, timeout=1.0)
    monkeypatch.setenv("NO_PROXY", "api.twilio.com")
    direct = RedirectingHttpClient(None, timeout=1.0)
    try:
        assert proxied.session is not None and direct.session is not None
        assert proxied.session.proxies.get("https") == "http://proxy.example.com:3128"
        assert proxied.session.verify == "/etc/ssl/certs/ca-certificates.crt"
        assert "https" not in direct.session.proxies  # NO_PROXY names Twilio's host
        # Not read again at each request: what the environment says later changes nothing.
        assert proxied.session.trust_env is False
        monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.example.com:3128")
        settings = proxied.session.merge_environment_settings(
            "https://api.twilio.com/2010-04-01/Accounts", {}, None, None, None
        )
        assert settings["proxies"]["https"] == "http://proxy.example.com:3128"
    finally:
        proxied.close()
        direct.close()


def test_build_twilio_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")  # only the settings configure the client
    monkeypatch.setenv("TWILIO_REGION", "au1")

    assert build_twilio_client(make_settings(twilio_auth_token=None)) is None
    assert build_twilio_client(make_settings(twilio_account_sid=None)) is None

    client = build_twilio_client(make_settings(twilio_timeout=3.5))
    assert client is not None
    http_client = client.http_client
    assert isinstance(http_client, RedirectingHttpClient)
    assert http_client.timeout == 3.5
    assert http_client.base_url is None  # the default base URL is Twilio itself: no redirect
    assert not client.edge and not client.region
    assert client.get_hostname("https://api.twilio.com/x") == "https://api.twilio.com/x"
    assert (client.username, client.password) == (ACCOUNT_SID, AUTH_TOKEN)
    http_client.close()

    local = build_twilio_client(make_settings(twilio_api_base_url="http://127.0.0.1:8099/"))
    assert local is not None
    assert isinstance(local.http_client, RedirectingHttpClient)
    assert local.http_client.base_url == "http://127.0.0.1:8099"
    local.http_client.close()


# -- the outbox --------------------------------------------------------------------------------


def test_without_twilio_sms_go_to_a_labelled_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "not-yet" / "outbox.log"
    sender = build_sender(make_settings(twilio_account_sid=None, outbox_path=str(outbox)))
    assert isinstance(sender, OutboxSender)
    since = datetime.now(UTC) - timedelta(seconds=1)

    first = sender.send(make_sms(status_callback=CALLBACK, validity_period=14400))
    second = sender.send(make_sms(from_=None, messaging_service_sid=SERVICE_SID, media_urls=MEDIA))

    assert first.sid.startswith("SMoutbox") and len(first.sid) == 34
    assert first.sid != second.sid
    assert first.status == "queued"
    lines = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert [line["note"] for line in lines] == [OUTBOX_NOTE, OUTBOX_NOTE]
    assert OUTBOX_NOTE == "NOT SENT: Twilio is not configured"
    assert lines[0] | {"at": None} == {
        "note": OUTBOX_NOTE,
        "sid": first.sid,
        "at": None,
        "to": CONTACT,
        "from": SENDER,
        "messaging_service_sid": None,
        "body": "Your order has shipped",
        "media_urls": [],
        "status_callback": CALLBACK,
        "validity_period": 14400,
    }
    assert lines[1]["media_urls"] == list(MEDIA)
    assert sender.find_sent(SentQuery(CONTACT, SENDER, since)) == first.sid
    assert (
        sender.find_sent(SentQuery(CONTACT, None, since, messaging_service_sid=SERVICE_SID))
        == second.sid
    )
    assert sender.find_sent(SentQuery(CONTACT, SENDER, since, exclude_sids={first.sid})) is None
    assert (
        OutboxSender(tmp_path / "missing.log").find_sent(SentQuery(CONTACT, SENDER, since)) is None
    )
    sender.close()


# -- logging -----------------------------------------------------------------------------------


def test_credentials_phone_numbers_and_text_never_reach_the_logs(
    standin: TwilioStandIn, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level: urllib3 and twilio included
    body = "Secret pickup code 4711"
    since = datetime.now(UTC) - timedelta(seconds=1)

    sender = build_sender(make_settings(twilio_api_base_url=standin.base_url))
    sender.send(make_sms(body=body, status_callback=CALLBACK))
    sender.find_sent(SentQuery(CONTACT, SENDER, since, body=body))
    with pytest.raises(PermanentSendError):
        sender.send(make_sms(to="+15005550001", body=body))
    standin.fail_next(1, status=503)
    with pytest.raises(TransientSendError):
        sender.send(make_sms(body=body))
    sender.close()
    wrong = build_sender(
        make_settings(twilio_api_base_url=standin.base_url, twilio_auth_token="wrong-token-42")
    )
    with pytest.raises(PermanentSendError):
        wrong.send(make_sms(body=body))
    wrong.close()
    outbox = build_sender(make_settings(twilio_auth_token=None, outbox_path=str(tmp_path / "o")))
    outbox.send(make_sms(body=body))

    assert caplog.records, "the adapter logs what it does"
    everything = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (
        AUTH_TOKEN,
        "wrong-token-42",
        base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode(),
    ):
        assert secret not in everything
    ours = " ".join(
        str(r.__dict__) for r in caplog.records if r.name.startswith(("bridge", "twilio"))
    )
    for private in (CONTACT, CONTACT[1:], "5005550001", SENDER[1:], body, ACCOUNT_SID):
        assert private not in ours
    # At INFO and above no logger at all carries a number or the text (urllib3 logs URLs at DEBUG).
    loud = " ".join(str(r.__dict__) for r in caplog.records if r.levelno >= logging.INFO)
    for private in (CONTACT[1:], "5005550001", body):
        assert private not in loud
