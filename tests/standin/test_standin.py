"""The Twilio stand-in itself, over real HTTP: create, list, auth, errors, faults, callbacks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.standin.twilio import TwilioStandIn, count_segments

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "standin-test-token"
SENDER = "+15005550006"  # Twilio's magic "valid sender" number
ALICE = "+15552220001"
BOB = "+15552220002"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def standin() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN).start() as twilio:
        yield twilio


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = (ACCOUNT_SID, AUTH_TOKEN)
        yield session


@pytest.fixture
def client(standin: TwilioStandIn) -> Iterator[Client]:
    client = Client(ACCOUNT_SID, AUTH_TOKEN, environment={"TWILIO_EDGE": ""})
    client.api.base_url = standin.base_url  # enough for client.messages (see shared/twilio/README)
    yield client
    client.http_client.session.close()


class CallbackReceiver:
    """A tiny HTTP server that records the status callbacks it receives."""

    def __init__(self, answer: int = 200) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "form": {k: v[0] for k, v in parse_qs(body.decode()).items()},
                    }
                )
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/twilio/status?d=dlv_123"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def create(http: requests.Session, standin: TwilioStandIn, **form: Any) -> requests.Response:
    return http.post(standin.messages_url, data=form, timeout=5)


# -- create ------------------------------------------------------------------------------------


def test_create_answers_a_twilio_message_resource(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    answer = create(http, standin, To=ALICE, From=SENDER, Body="Your parcel is on its way")

    assert answer.status_code == 201
    message = answer.json()
    assert message["sid"].startswith("SM") and len(message["sid"]) == 34
    assert int(message["sid"][2:], 16) >= 0
    assert message["account_sid"] == ACCOUNT_SID
    assert (message["to"], message["from"]) == (ALICE, SENDER)
    assert message["body"] == "Your parcel is on its way"
    assert message["status"] == "queued"
    assert message["direction"] == "outbound-api"
    assert (message["num_segments"], message["num_media"]) == ("1", "0")
    assert message["error_code"] is None and message["error_message"] is None
    assert message["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message['sid']}.json"
    created = parsedate_to_datetime(message["date_created"])
    assert abs(created - datetime.now(UTC)) < timedelta(seconds=5)
    assert message["date_created"].endswith("+0000")
    assert standin.messages == [message]


def test_create_with_media_keeps_every_media_url_and_gets_an_mm_sid(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    media = [f"https://cdn.example.com/{n}.jpg" for n in range(3)]

    message = create(http, standin, To=ALICE, From=SENDER, Body="photos", MediaUrl=media).json()

    assert message["sid"].startswith("MM")  # as Twilio does for messages with media
    assert message["num_media"] == "3"
    assert standin.requests[-1].form["MediaUrl"] == media


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # an extension character counts twice
        ("€" * 81, 2),
        ("é" * 160, 1),  # é is in the GSM-7 basic set
        ("ł" * 70, 1),  # ł is not: UCS-2
        ("ł" * 71, 2),
        ("👍" * 35, 1),  # a surrogate pair counts twice
    ],
)
def test_count_segments(body: str, segments: int) -> None:
    assert count_segments(body) == segments


def test_create_via_twilio_python(standin: TwilioStandIn, client: Client) -> None:
    message = client.messages.create(to=ALICE, from_=SENDER, body="hi", validity_period=600)

    assert message.sid == standin.messages[0]["sid"]
    assert message.status == "queued"
    assert message.date_created is not None
    assert standin.requests[0].form["ValidityPeriod"] == ["600"]


def test_fetch_one_message(standin: TwilioStandIn, client: Client) -> None:
    sid = client.messages.create(to=ALICE, from_=SENDER, body="hi").sid

    assert client.messages(sid).fetch().body == "hi"
    with pytest.raises(TwilioRestException) as caught:
        client.messages("SM" + "0" * 32).fetch()
    assert caught.value.code == 20404


# -- list --------------------------------------------------------------------------------------


def test_list_filters_by_to_from_and_date_sent(standin: TwilioStandIn, client: Client) -> None:
    other_sender = "+15005550010"
    first = client.messages.create(to=ALICE, from_=SENDER, body="one").sid
    second = client.messages.create(to=BOB, from_=SENDER, body="two").sid
    third = client.messages.create(to=ALICE, from_=other_sender, body="three").sid
    now = datetime.now(UTC)

    def sids(**filters: Any) -> list[str]:
        return [m.sid for m in client.messages.list(**filters)]

    assert sids() == [third, second, first]  # newest first, as Twilio lists them
    assert sids(to=ALICE) == [third, first]
    assert sids(to=ALICE, from_=SENDER) == [first]
    assert sids(from_=SENDER) == [second, first]
    assert sids(to=ALICE, date_sent_after=now - timedelta(minutes=1)) == [third, first]
    assert sids(to=ALICE, date_sent_after=now + timedelta(minutes=1)) == []
    assert sids(to=ALICE, date_sent_before=now - timedelta(minutes=1)) == []
    assert sids(to=ALICE, date_sent=now.date().isoformat()) == [third, first]
    assert sids(to=ALICE, date_sent=(now - timedelta(days=1)).date().isoformat()) == []
    assert sids(to="+15559999999") == []


def test_list_accepts_plain_dates_in_the_query(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    create(http, standin, To=ALICE, From=SENDER, Body="x")
    today = datetime.now(UTC).date()

    def count(params: dict[str, str]) -> int:
        answer = http.get(standin.messages_url, params=params, timeout=5)
        assert answer.status_code == 200
        return len(answer.json()["messages"])

    assert count({"DateSent>": today.isoformat()}) == 1
    assert count({"DateSent<": today.isoformat()}) == 1
    assert count({"DateSent>": (today + timedelta(days=1)).isoformat()}) == 0
    assert count({"DateSent<": (today - timedelta(days=1)).isoformat()}) == 0
    assert http.get(standin.messages_url, params={"DateSent": "x"}, timeout=5).status_code == 400


def test_list_has_twilios_page_shape_and_pages(standin: TwilioStandIn, client: Client) -> None:
    sids = [client.messages.create(to=ALICE, from_=SENDER, body=str(n)).sid for n in range(5)]

    # twilio-python follows next_page_uri across pages
    assert [m.sid for m in client.messages.list(to=ALICE, page_size=2)] == sids[::-1]

    with requests.get(
        standin.messages_url,
        params={"To": ALICE, "PageSize": "2"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        timeout=5,
    ) as answer:
        page = answer.json()
    assert set(page) == {
        "end",
        "first_page_uri",
        "messages",
        "next_page_uri",
        "page",
        "page_size",
        "previous_page_uri",
        "start",
        "uri",
    }
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["next_page_uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?")
    assert "Page=1" in page["next_page_uri"]
    assert page["previous_page_uri"] is None


# -- auth and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [(ACCOUNT_SID, "wrong-token"), ("AC" + "f" * 32, AUTH_TOKEN), None],
    ids=["wrong token", "wrong account", "no auth"],
)
def test_bad_credentials_answer_401_with_code_20003(
    standin: TwilioStandIn, auth: tuple[str, str] | None
) -> None:
    answer = requests.post(
        standin.messages_url, data={"To": ALICE, "From": SENDER, "Body": "x"}, auth=auth, timeout=5
    )

    assert answer.status_code == 401
    assert answer.json()["code"] == 20003
    assert answer.json()["more_info"] == "https://www.twilio.com/docs/errors/20003"
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert standin.messages == []
    assert standin.requests[0].auth_ok is False
    assert standin.requests[0].auth == auth


def test_bad_credentials_raise_in_twilio_python(standin: TwilioStandIn) -> None:
    client = Client(ACCOUNT_SID, "wrong-token", environment={"TWILIO_EDGE": ""})
    client.api.base_url = standin.base_url
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=ALICE, from_=SENDER, body="x")
    client.http_client.session.close()
    assert (caught.value.status, caught.value.code) == (401, 20003)


def test_another_account_in_the_path_is_404(standin: TwilioStandIn, http: requests.Session) -> None:
    other = standin.messages_url.replace(ACCOUNT_SID, "AC" + "f" * 32)

    answer = http.post(other, data={"To": ALICE, "From": SENDER, "Body": "x"}, timeout=5)

    assert answer.status_code == 404
    assert answer.json()["code"] == 20404


@pytest.mark.parametrize(
    ("form", "code", "wording"),
    [
        ({"To": "+15005550001", "From": SENDER, "Body": "x"}, 21211, "is not a valid phone number"),
        ({"To": "+15005550002", "From": SENDER, "Body": "x"}, 21612, "not currently reachable"),
        ({"To": "+15005550003", "From": SENDER, "Body": "x"}, 21408, "Permission to send an SMS"),
        ({"To": "+15005550004", "From": SENDER, "Body": "x"}, 21610, "unsubscribed recipient"),
        ({"To": "+15005550009", "From": SENDER, "Body": "x"}, 21614, "not a valid mobile number"),
        ({"To": ALICE, "From": "+15005550001", "Body": "x"}, 21212, "is not a valid phone number"),
        ({"To": ALICE, "From": "+15005550007", "Body": "x"}, 21606, "SMS-capable"),
        ({"To": ALICE, "From": "+15005550008", "Body": "x"}, 21611, "maximum number of queued"),
        ({"To": "555-1234", "From": SENDER, "Body": "x"}, 21211, "is not a valid phone number"),
        ({"From": SENDER, "Body": "x"}, 21604, "A 'To' phone number is required"),
        ({"To": ALICE, "Body": "x"}, 21603, "A 'From' phone number is required"),
        ({"To": ALICE, "From": SENDER}, 21602, "Message body is required"),
        ({"To": ALICE, "From": SENDER, "Body": "x" * 1601}, 21617, "1600 character limit"),
        ({"To": ALICE, "From": SENDER, "MediaUrl": "not a url"}, 21620, "Invalid media URL"),
        ({"To": ALICE, "From": SENDER, "Body": "x", "StatusCallback": "nope"}, 21609, "Invalid"),
        ({"To": ALICE, "MessagingServiceSid": "MG1", "Body": "x"}, 21701, "is invalid"),
    ],
)
def test_errors_answer_400_as_twilio_does(
    standin: TwilioStandIn, http: requests.Session, form: dict[str, str], code: int, wording: str
) -> None:
    answer = create(http, standin, **form)

    assert answer.status_code == 400
    error = answer.json()
    assert set(error) == {"code", "message", "more_info", "status"}
    assert (error["code"], error["status"]) == (code, 400)
    assert wording in error["message"]
    assert error["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert standin.messages == []
    assert (standin.requests[0].status, standin.requests[0].error_code) == (400, code)
    assert standin.requests[0].sid is None


def test_media_only_message_needs_no_body(standin: TwilioStandIn, http: requests.Session) -> None:
    answer = create(http, standin, To=ALICE, From=SENDER, MediaUrl="https://cdn.example.com/a.png")

    assert answer.status_code == 201
    assert answer.json()["body"] == ""


# -- fault injection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected_code"),
    [(429, None, 20429), (500, None, 20500), (503, None, 20503), (429, 20429, 20429)],
)
def test_fail_next_answers_the_next_creates_with_the_error(
    standin: TwilioStandIn,
    http: requests.Session,
    status: int,
    code: int | None,
    expected_code: int,
) -> None:
    standin.fail_next(2, status=status, code=code)

    answers = [create(http, standin, To=ALICE, From=SENDER, Body="x") for _ in range(3)]

    assert [a.status_code for a in answers] == [status, status, 201]
    assert answers[0].json()["code"] == expected_code
    assert [r.status for r in standin.requests] == [status, status, 201]
    assert len(standin.messages) == 1


def test_fail_next_leaves_lists_alone(standin: TwilioStandIn, http: requests.Session) -> None:
    standin.fail_next(1)

    assert http.get(standin.messages_url, timeout=5).status_code == 200
    assert create(http, standin, To=ALICE, From=SENDER, Body="x").status_code == 429


def test_fail_for_is_an_outage_of_creates_and_lists(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    standin.fail_for(0.3, status=503)

    assert create(http, standin, To=ALICE, From=SENDER, Body="x").status_code == 503
    assert http.get(standin.messages_url, timeout=5).status_code == 503
    time.sleep(0.35)
    assert create(http, standin, To=ALICE, From=SENDER, Body="x").status_code == 201


def test_latency_delays_answers(standin: TwilioStandIn, http: requests.Session) -> None:
    standin.set_latency(0.2)
    started = time.monotonic()
    assert create(http, standin, To=ALICE, From=SENDER, Body="x").status_code == 201
    assert time.monotonic() - started >= 0.2

    standin.set_latency(0)
    started = time.monotonic()
    create(http, standin, To=ALICE, From=SENDER, Body="x")
    assert time.monotonic() - started < 0.2


# -- recording ---------------------------------------------------------------------------------


def test_records_requests_and_clears(standin: TwilioStandIn, http: requests.Session) -> None:
    first = create(http, standin, To=ALICE, From=SENDER, Body="one").json()
    create(http, standin, To=BOB, From=SENDER, Body="two")

    recorded = standin.requests
    assert [r.first("To") for r in recorded] == [ALICE, BOB]
    assert recorded[0].received_at <= recorded[1].received_at
    assert recorded[0].auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert recorded[0].sid == first["sid"]
    assert recorded[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in recorded[0].headers
    assert [m["body"] for m in standin.sent_to(ALICE)] == ["one"]

    standin.clear()
    assert (standin.requests, standin.messages, standin.sent_to(ALICE)) == ([], [], [])


def test_serves_hundreds_of_concurrent_creates(standin: TwilioStandIn) -> None:
    def send(n: int) -> int:
        with requests.Session() as session:
            answer = session.post(
                standin.messages_url,
                data={"To": f"+1555300{n:04d}", "From": SENDER, "Body": "bulk"},
                auth=(ACCOUNT_SID, AUTH_TOKEN),
                timeout=10,
            )
            return answer.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(send, range(300)))

    assert statuses == [201] * 300
    assert len({m["sid"] for m in standin.messages}) == 300
    assert time.monotonic() - started < 10


# -- status callbacks --------------------------------------------------------------------------


def test_send_status_posts_a_signed_twilio_callback(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    with CallbackReceiver() as receiver:
        message = create(
            http, standin, To=ALICE, From=SENDER, Body="x", StatusCallback=receiver.url
        ).json()

        assert standin.send_status(message["sid"], "delivered") == 200
        assert standin.send_status(message["sid"], "undelivered", error_code=30003) == 200

    delivered, undelivered = receiver.received
    assert delivered["path"] == "/twilio/status?d=dlv_123"
    assert delivered["form"] == {
        "MessageSid": message["sid"],
        "SmsSid": message["sid"],
        "MessageStatus": "delivered",
        "SmsStatus": "delivered",
        "AccountSid": ACCOUNT_SID,
        "From": SENDER,
        "To": ALICE,
        "ApiVersion": "2010-04-01",
    }
    assert undelivered["form"]["ErrorCode"] == "30003"
    for callback in receiver.received:
        signature = callback["headers"]["X-Twilio-Signature"]
        assert RequestValidator(AUTH_TOKEN).validate(receiver.url, callback["form"], signature)
        assert not RequestValidator("another-token").validate(
            receiver.url, callback["form"], signature
        )
    assert standin.message(message["sid"])["status"] == "undelivered"
    assert standin.message(message["sid"])["error_code"] == 30003


def test_send_status_returns_the_receivers_http_status(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    with CallbackReceiver(answer=403) as receiver:
        sid = create(
            http, standin, To=ALICE, From=SENDER, Body="x", StatusCallback=receiver.url
        ).json()["sid"]
        assert standin.send_status(sid, "sent") == 403


def test_send_status_without_callback_url_is_an_error(
    standin: TwilioStandIn, http: requests.Session
) -> None:
    sid = create(http, standin, To=ALICE, From=SENDER, Body="x").json()["sid"]

    with pytest.raises(ValueError, match="no StatusCallback"):
        standin.send_status(sid, "sent")
    with pytest.raises(KeyError):
        standin.send_status("SM" + "0" * 32, "sent")


def test_auto_callbacks_follow_each_create(http: requests.Session) -> None:
    with (
        CallbackReceiver() as receiver,
        TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, auto_callbacks=["sent", "delivered"]) as standin,
    ):
        started = time.monotonic()
        sid = create(
            http, standin, To=ALICE, From=SENDER, Body="x", StatusCallback=receiver.url
        ).json()["sid"]
        assert time.monotonic() - started < 0.5  # the create did not wait for the callbacks

        callbacks = standin.wait_for_callbacks(2, timeout=5)

    assert [(c.sid, c.status, c.http_status) for c in callbacks] == [
        (sid, "sent", 200),
        (sid, "delivered", 200),
    ]
    assert [r["form"]["MessageStatus"] for r in receiver.received] == ["sent", "delivered"]


# -- as a separate process ---------------------------------------------------------------------


def test_runs_as_a_process_driven_over_http() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin.twilio",
            "--port",
            "0",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        messages_url = f"{base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        with requests.Session() as http:
            http.auth = (ACCOUNT_SID, AUTH_TOKEN)
            form = {"To": ALICE, "From": SENDER, "Body": "x", "MediaUrl": ["https://a.example/1"]}
            assert http.post(messages_url, data=form, timeout=5).status_code == 201

            recorded = http.get(f"{base_url}/_standin/requests", timeout=5).json()["requests"]
            assert len(recorded) == 1
            assert recorded[0]["form"]["MediaUrl"] == ["https://a.example/1"]
            assert recorded[0]["auth_user"] == ACCOUNT_SID and recorded[0]["auth_ok"] is True
            assert AUTH_TOKEN not in str(recorded)

            fail = {"count": 1, "status": 429, "code": 20429}
            assert http.post(f"{base_url}/_standin/fail", json=fail, timeout=5).ok
            assert http.post(messages_url, data=form, timeout=5).json()["code"] == 20429

            assert http.post(f"{base_url}/_standin/latency", json={"seconds": 0.2}, timeout=5).ok
            started = time.monotonic()
            assert http.post(messages_url, data=form, timeout=5).status_code == 201
            assert time.monotonic() - started >= 0.2

            assert http.post(f"{base_url}/_standin/clear", timeout=5).ok
            assert http.get(f"{base_url}/_standin/requests", timeout=5).json() == {"requests": []}
            assert http.get(f"{base_url}/_standin/nothing", timeout=5).status_code == 404
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
        if process.stdout is not None:
            process.stdout.close()
