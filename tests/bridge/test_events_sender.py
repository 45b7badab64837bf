"""The events adapter against a real local receiver: signatures, timeouts, redirects, SSRF."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bridge.errors import ValidationError
from bridge.events_sender import (
    MAX_RESPONSE_BODY,
    METADATA_ADDRESSES,
    HttpEventSender,
    OutgoingEvent,
    UnsafeAddress,
    check_address,
    refusal_reason,
    sign,
)
from bridge.webhook_endpoints import new_secret
from tests.standin.receiver import Receiver

BODY = json.dumps({"object": "event", "id": "evt_1", "type": "message.created", "data": {}})


def outgoing(url: str, *secrets: str) -> OutgoingEvent:
    return OutgoingEvent(url, "evt_1", BODY, secrets or (new_secret(),), datetime.now(UTC))


def test_the_post_carries_a_signature_the_reference_library_accepts(receiver: Receiver) -> None:
    secret = new_secret()
    result = HttpEventSender(5, production=False).post(outgoing(receiver.url, secret))
    assert result.ok and result.status_code == 200 and result.error is None
    (got,) = receiver.wait_for(1)
    assert got.headers["webhook-id"] == "evt_1"
    assert got.headers["content-type"] == "application/json"
    assert Webhook(secret).verify(got.body, got.headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body.replace(b"evt_1", b"evt_2"), got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(got.body, got.headers)


def test_during_a_rotation_both_secrets_sign(receiver: Receiver) -> None:
    new, old = new_secret(), new_secret()
    HttpEventSender(5, production=False).post(outgoing(receiver.url, new, old))
    (got,) = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(got.body, got.headers)
    assert Webhook(old).verify(got.body, got.headers)


def test_the_signature_is_hmac_sha256_of_id_timestamp_body_under_the_decoded_secret() -> None:
    import hashlib
    import hmac

    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    expected = hmac.new(b"k" * 24, f"evt_1.{int(at.timestamp())}.{BODY}".encode(), hashlib.sha256)
    assert sign("evt_1", at, BODY, [secret]) == "v1," + base64.b64encode(expected.digest()).decode()


def test_a_secret_is_whsec_and_24_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret


def test_a_500_is_a_failure_and_at_most_1_kib_of_the_answer_is_kept(receiver: Receiver) -> None:
    receiver.answer(500, "x" * 5000)
    result = HttpEventSender(5, production=False).post(outgoing(receiver.url))
    assert not result.ok
    assert result.status_code == 500 and result.error == "HTTP 500"
    assert result.response_body == "x" * MAX_RESPONSE_BODY


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.answer(302)
    result = HttpEventSender(5, production=False).post(outgoing(receiver.url))
    assert not result.ok and result.status_code == 302
    time.sleep(0.1)
    assert len(receiver.received) == 1


def test_a_hanging_receiver_is_cut_at_the_timeout(receiver: Receiver) -> None:
    receiver.hang(5)
    started = time.monotonic()
    result = HttpEventSender(0.5, production=False).post(outgoing(receiver.url))
    assert time.monotonic() - started < 2
    assert not result.ok and result.status_code is None
    assert result.error == "no answer within 0.5 s"


def test_a_receiver_that_is_down_is_a_failure_without_status(receiver: Receiver) -> None:
    receiver.down()
    result = HttpEventSender(1, production=False).post(outgoing(receiver.url))
    assert not result.ok and result.status_code is None
    assert result.error == "could not connect (connection refused or reset)"


def test_the_connection_goes_to_the_resolved_address_with_the_name_as_host(
    receiver: Receiver,
) -> None:
    url = f"http://localhost:{receiver.port}/hooks"
    assert HttpEventSender(5, production=False).post(outgoing(url)).ok
    (got,) = receiver.wait_for(1)
    assert got.headers["host"] == f"localhost:{receiver.port}"


# SSRF: in production these are refused at registration and at send time (DESIGN 5.8).
REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("169.254.169.254", f"a cloud metadata address ({METADATA_ADDRESSES['169.254.169.254']})"),
    ("169.254.170.2", "a cloud metadata address (AWS ECS task metadata)"),
    ("fd00:ec2::254", "a cloud metadata address (AWS instance metadata over IPv6)"),
    ("100.100.100.200", "a cloud metadata address (Alibaba Cloud instance metadata)"),
    ("168.63.129.16", "a cloud metadata address (Azure host services (WireServer))"),
    ("100.64.0.1", "not a public address"),
    ("0.0.0.0", "a private address"),
    ("224.0.0.1", "not a public address"),
    ("240.0.0.1", "a private address"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_addresses_refused_in_production(address: str, reason: str) -> None:
    assert refusal_reason(address) == reason
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeAddress) as refused:
        check_address(f"https://{host}/hooks", production=True)
    assert refused.value.param == "url"


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed_in_production(address: str) -> None:
    assert refusal_reason(address) is None
    host = f"[{address}]" if ":" in address else address
    assert check_address(f"https://{host}/hooks", production=True) == address


@pytest.mark.parametrize(
    ("url", "production", "message"),
    [
        ("http://8.8.8.8/hooks", True, "url must be an https URL"),
        ("http://127.0.0.1/hooks", True, "url must be an https URL"),
        ("https://localhost/hooks", True, "url resolves to a loopback address, which is refused"),
        ("http://8.8.8.8/hooks", False, "url must be https (http only to a loopback address)"),
        ("ftp://127.0.0.1/hooks", False, "url must be an https URL"),
        ("https:///hooks", False, "url must name a host"),
        ("https://user:pw@8.8.8.8/", False, "url must not hold a user name or password"),
        ("https://8.8.8.8:99999/", False, "url's port must be a number from 1 to 65535"),
    ],
)
def test_urls_refused(url: str, production: bool, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_address(url, production)
    assert (refused.value.message, refused.value.param) == (message, "url")


def test_outside_production_http_to_loopback_is_allowed() -> None:
    assert check_address("http://127.0.0.1:9/hooks", production=False) == "127.0.0.1"
    assert check_address("http://localhost:9/hooks", production=False) in ("127.0.0.1", "::1")


def test_in_production_a_loopback_url_is_refused_at_send_time_and_never_reached(
    receiver: Receiver,
) -> None:
    for url in (receiver.url, f"https://localhost:{receiver.port}/hooks"):
        result = HttpEventSender(5, production=True).post(outgoing(url))
        assert not result.ok and result.status_code is None
        assert result.error is not None and result.error.startswith("refused: url ")
    time.sleep(0.1)
    assert receiver.received == []


def _certificate(tmp_path: Path, name: str) -> tuple[str, str]:
    """A self-signed certificate for `name` (its own CA), made with the openssl command."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_connects_to_the_resolved_address_and_checks_the_certificate_on_the_name(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path, "localhost")
    with Receiver(tls=(cert, key), host="localhost").start() as receiver:
        sender = HttpEventSender(5, production=False, verify=cert)
        result = sender.post(outgoing(receiver.url))
        assert result.ok, result
        (got,) = receiver.wait_for(1)
        assert got.headers["host"] == f"localhost:{receiver.port}"
    # A certificate for another name is refused, though the address is the same.
    other_cert, other_key = _certificate(tmp_path, "other.example")
    with Receiver(tls=(other_cert, other_key), host="localhost").start() as receiver:
        result = HttpEventSender(5, production=False, verify=other_cert).post(
            outgoing(receiver.url)
        )
        assert not result.ok and result.error == "TLS handshake or certificate check failed"
