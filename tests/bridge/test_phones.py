import hashlib
import hmac
import re

import pytest

from bridge.errors import ConfigurationError, ValidationError
from bridge.phones import (
    classify_sender,
    mask_phone,
    mask_phones_in_text,
    normalize_phone,
    phone_hash,
    phone_time_zones,
)

KEY = "test-phone-hash-key"

VALID = [
    # (raw, region, expected E.164)
    ("+14155552671", "US", "+14155552671"),
    ("+1 415 555 2671", "US", "+14155552671"),
    ("+1 (415) 555-2671", "US", "+14155552671"),
    ("(415) 555-2671", "US", "+14155552671"),
    ("415.555.2671", "US", "+14155552671"),
    ("415 555 2671", "US", "+14155552671"),
    ("1-415-555-2671", "US", "+14155552671"),
    ("4155552671", "US", "+14155552671"),
    ("  415-555-2671  ", "US", "+14155552671"),
    ("[415] 555/2671", "US", "+14155552671"),
    ("+14155552671", "GB", "+14155552671"),  # with a `+` the region does not matter
    ("07400 123456", "GB", "+447400123456"),
    ("+44 7400 123456", "US", "+447400123456"),
    ("01512 3456789", "DE", "+4915123456789"),
    ("+49 151 23456789", "US", "+4915123456789"),
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("+33 6 12 34 56 78", "US", "+33612345678"),
    ("07400 123456", "gb", "+447400123456"),  # region codes in any case
]

INVALID = [
    # (raw, region, words the message must contain)
    ("", "US", "required"),
    ("   ", "US", "required"),
    ("12345", "US", "short code"),
    ("88022", "US", "short code"),
    ("MyShop", "US", "letters"),
    ("1-800-FLOWERS", "US", "letters"),  # phonenumbers alone would read it as a vanity number
    ("415-555-2671 ext 5", "US", "letters"),
    ("4155552671#123", "US", "Not a valid phone number"),  # an extension cannot receive SMS
    ("+1415555267", "US", "Not a valid phone number"),  # a digit short
    ("415555267", "US", "Not a valid phone number"),
    ("+15551234567", "US", "Not a valid phone number"),  # 555 is not a US area code
    ("07400 123456", "US", "Not a valid phone number"),  # a GB number read as US
    ("+99912345678", "US", "Not a valid phone number"),  # no such country code
    ("+", "US", "Not a valid phone number"),
    ("---", "US", "Not a valid phone number"),
    ("4" * 65, "US", "Too long"),
    ("+" + "1" * 100, "US", "Too long"),
]


@pytest.mark.parametrize(("raw", "region", "expected"), VALID)
def test_normalize_phone_accepts(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected
    assert classify_sender(raw, region) == "e164"


@pytest.mark.parametrize(("raw", "region", "words"), INVALID)
def test_normalize_phone_rejects(raw: str, region: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_phone(raw, region, param="to")
    assert caught.value.param == "to"
    assert words.lower() in caught.value.message.lower()


@pytest.mark.parametrize(("raw", "region", "_words"), INVALID)
def test_rejection_never_echoes_more_than_four_digits(raw: str, region: str, _words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_phone(raw, region)
    assert not re.search(r"[0-9]{5}", caught.value.message)


def test_invalid_message_shows_only_the_last_four_digits() -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_phone("+1 415 555 267")
    assert "***5267" in caught.value.message
    assert "415555" not in caught.value.message


@pytest.mark.parametrize("raw", [None, 4155552671, b"+14155552671", ["+14155552671"]])
def test_normalize_phone_rejects_non_strings(raw: object) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_phone(raw, "US", param="phone")  # type: ignore[arg-type]
    assert caught.value.param == "phone"
    assert classify_sender(raw) == "invalid"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("+14155552671", "e164"),
        ("4155552671", "e164"),
        ("+447400123456", "e164"),
        ("12345", "short_code"),
        ("88022", "short_code"),
        ("898211", "short_code"),
        ("123", "short_code"),
        ("12345678", "short_code"),
        ("MyShop", "alphanumeric"),
        ("Twilio", "alphanumeric"),
        ("INFO 24", "alphanumeric"),
        ("1-800-FLOWERS", "alphanumeric"),
        ("12", "invalid"),
        ("123456789", "invalid"),  # too long for a short code, too short for a number
        ("+12345", "invalid"),  # a `+` means a full number, never a short code
        ("+15551234567", "invalid"),
        ("", "invalid"),
        ("9" * 65, "invalid"),
    ],
)
def test_classify_sender(raw: str, kind: str) -> None:
    assert classify_sender(raw) == kind


def test_classify_sender_prefers_a_valid_number_of_the_region() -> None:
    # Eight digits are a short code in the US but a full mobile number in Singapore.
    assert classify_sender("81234567", "US") == "short_code"
    assert classify_sender("81234567", "SG") == "e164"


def test_phone_hash_is_hex_hmac_sha256_of_the_organization_and_number_under_the_key() -> None:
    digest = phone_hash("org_a", "+14155552671", KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    expected = hmac.new(KEY.encode(), b"org_a:+14155552671", hashlib.sha256).hexdigest()
    assert digest == expected == phone_hash("org_a", "+14155552671", KEY)
    assert digest != phone_hash("org_a", "+14155552671", KEY + "x")
    assert digest != phone_hash("org_a", "+14155552672", KEY)
    assert digest != hashlib.sha256(b"+14155552671").hexdigest()
    assert digest != hashlib.sha256(b"14155552671").hexdigest()


def test_phone_hash_differs_between_organizations() -> None:
    # DESIGN 5.1: one person's hashes in two organizations cannot be matched up.
    assert phone_hash("org_a", "+14155552671", KEY) != phone_hash("org_b", "+14155552671", KEY)
    with pytest.raises(ValueError, match="organization"):
        phone_hash("", "+14155552671", KEY)


@pytest.mark.parametrize("e164", ["4155552671", "(415) 555-2671", "+1 415 555 2671", ""])
def test_phone_hash_refuses_numbers_that_are_not_e164(e164: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        phone_hash("org_a", e164, KEY)


def test_phone_hash_refuses_an_empty_key() -> None:
    with pytest.raises(ConfigurationError):
        phone_hash("org_a", "+14155552671", "")


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+14155552671", "***2671"),
        ("(415) 555-2671", "***2671"),
        ("+447400123456", "***3456"),
        ("1234567", "***4567"),
        ("123456", "***"),  # short codes are hidden entirely
        ("12345", "***"),
        ("1234", "***"),
        ("", "***"),
        (None, "***"),
        ("MyShop", "***"),
    ],
)
def test_mask_phone(value: str | None, masked: str) -> None:
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("sent to +14155552671", "sent to ***2671"),
        ("from=+447400123456&to=+14155552671", "from=***3456&to=***2671"),
        ("call 4155552671.", "call ***2671."),
        ('{"to": "+14155552671"}', '{"to": "***2671"}'),
        ("+1234567 is short but E.164-shaped", "***4567 is short but E.164-shaped"),
        ("+" + "1" * 20, "***1111"),
        ("123456789 stays", "123456789 stays"),  # nine bare digits: not a number we mask
        ("+123456 stays", "+123456 stays"),
        ("SM1234567890abcdef1234567890abcdef", "SM1234567890abcdef1234567890abcdef"),
        ("no numbers here", "no numbers here"),
    ],
)
def test_mask_phones_in_text(text: str, masked: str) -> None:
    assert mask_phones_in_text(text) == masked


@pytest.mark.parametrize(
    ("e164", "zones"),
    [
        ("+14155552671", ["America/Los_Angeles"]),
        ("+33612345678", ["Europe/Paris"]),
        ("+442079460958", ["Europe/London"]),
        ("+19072345678", ["America/Adak", "America/Anchorage"]),
        ("+15551234567", []),  # phonenumbers says "Etc/Unknown"
        ("not a number", []),
    ],
)
def test_phone_time_zones(e164: str, zones: list[str]) -> None:
    assert phone_time_zones(e164) == zones


def test_toll_free_numbers_span_many_time_zones() -> None:
    zones = phone_time_zones("+18005551234")
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= set(zones)
