"""Phone numbers: parsing to E.164, telling senders apart, hashing, masking and time zones.

Pure functions over `phonenumbers`; nothing here does I/O. Contacts are stored as E.164 and found by
`phone_hash`, an HMAC under a secret key (a bare hash of a phone number can be reversed by
enumerating the few billion numbers there are).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Literal

import phonenumbers
from phonenumbers import timezone as phone_timezone

from bridge.errors import ConfigurationError, ValidationError

SenderKind = Literal["e164", "short_code", "alphanumeric", "invalid"]

# Nothing a person types as a phone number comes near this; the guard keeps a pathological string
# away from the parser and out of error messages.
MAX_PHONE_INPUT_LENGTH = 64

# phonenumbers answers this for numbers it cannot place; it is not a real IANA zone.
UNKNOWN_TIME_ZONE = "Etc/Unknown"

# Fewer digits than this are masked entirely: four visible digits of a five-digit short code would
# give most of it away. Seven is also the shortest run `mask_phones_in_text` treats as a number.
_MIN_DIGITS_TO_SHOW_LAST_FOUR = 7

# Separators people and carriers put in numbers; what is left of a short code is digits only.
_SEPARATORS = re.compile(r"[\s().\-/\[\]]")
# US/CA short codes are 5-6 digits, elsewhere 3-8; always without a `+` (Twilio sends them bare).
_SHORT_CODE = re.compile(r"[0-9]{3,8}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")

# Phone-number-looking runs in free text (log lines): `+` and 7 or more digits (E.164 has 7-15; a
# longer run is masked too, erring on the safe side), or 10+ bare digits. The letter look-arounds on
# bare runs keep us from masking the middle of a Twilio SID or a hex digest.
_PHONE_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z+])(?:\+[0-9]{7,}(?![0-9])|[0-9]{10,}(?![0-9A-Za-z]))",
)


def normalize_phone(raw: str, region: str = "US", param: str = "phone") -> str:
    """Parse an E.164 or national-format (read with `region`) number and return it as E.164."""
    if not isinstance(raw, str):
        raise ValidationError("A phone number must be given as a string.", param)
    text = raw.strip()
    if not text:
        raise ValidationError("A phone number is required.", param)
    if len(text) > MAX_PHONE_INPUT_LENGTH:
        raise ValidationError(
            f"Too long to be a phone number (at most {MAX_PHONE_INPUT_LENGTH} characters).", param
        )
    # Checked before parsing: phonenumbers would read "1-800-FLOWERS" as a vanity number, and an
    # alphanumeric sender id such as "MyShop" is never a person we can text back.
    if _has_letters(text):
        raise ValidationError(
            "A phone number cannot contain letters (alphanumeric sender ids are not contacts).",
            param,
        )
    e164 = _parse_valid(text, region)
    if e164 is not None:
        return e164
    if _is_short_code(text):
        raise ValidationError(
            "A short code is not a phone number: a contact needs a full mobile number.", param
        )
    # Only the last four digits go back to the caller: error bodies end up in logs.
    raise ValidationError(
        f"Not a valid phone number ({mask_phone(text)}): give it in E.164 (+ and the country "
        f"code) or in the national format of {region.upper()}.",
        param,
    )


def classify_sender(raw: str, region: str = "US") -> SenderKind:
    """Say what an inbound `From` is: "e164", "short_code", "alphanumeric" or "invalid"."""
    if not isinstance(raw, str):
        return "invalid"
    text = raw.strip()
    if not text or len(text) > MAX_PHONE_INPUT_LENGTH:
        return "invalid"
    if _has_letters(text):
        return "alphanumeric"
    if _parse_valid(text, region) is not None:
        return "e164"
    if _is_short_code(text):
        return "short_code"
    return "invalid"


def phone_hash(organization_id: str, e164: str, key: str) -> str:
    """Return the hex HMAC-SHA256 of `organization_id:E.164` under `key` (DESIGN 5.1).

    The organization is part of the message so that one person's hashes in two organizations
    cannot be matched up: the API shows them (a channel's `phone_hashes`).
    """
    if not key:
        # An empty key would still be an HMAC, but one anyone can recompute: as weak as a bare hash.
        raise ConfigurationError("PHONE_HASH_KEY must not be empty.")
    # Hashing a number that is not normalized would silently never match the stored contact.
    if not isinstance(e164, str) or not _E164.fullmatch(e164):
        raise ValueError("phone_hash takes an E.164 number; normalize it first.")
    if not organization_id or ":" in organization_id:
        raise ValueError("phone_hash takes the id of the organization the number is hashed for.")
    message = f"{organization_id}:{e164}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def mask_phone(value: str | None) -> str:
    """Hide a phone number but for its last four digits (`***1234`); short input is all hidden."""
    digits = re.sub(r"[^0-9]", "", value or "")
    if len(digits) < _MIN_DIGITS_TO_SHOW_LAST_FOUR:
        return "***"
    return "***" + digits[-4:]


def mask_phones_in_text(text: str) -> str:
    """Mask every run in `text` that looks like a phone number: `+` and 7+ digits, or 10+ digits."""
    # Ten bare digits also match epoch timestamps; the log formatter writes those in their own
    # fields, and masking a stray one is the safe way to be wrong.
    return _PHONE_IN_TEXT.sub(lambda match: mask_phone(match.group()), text)


def phone_time_zones(e164: str) -> list[str]:
    """Return the IANA time zones `phonenumbers` gives an E.164 number, "Etc/Unknown" left out."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return []
    zones = phone_timezone.time_zones_for_number(number)
    return [zone for zone in zones if zone != UNKNOWN_TIME_ZONE]


def _has_letters(text: str) -> bool:
    return any(char.isalpha() for char in text)


def _is_short_code(text: str) -> bool:
    return not text.startswith("+") and _SHORT_CODE.fullmatch(_SEPARATORS.sub("", text)) is not None


def _parse_valid(text: str, region: str) -> str | None:
    """Return the E.164 form of `text` if phonenumbers finds a valid number in it, else None."""
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        return None
    # "4155552671#123" parses with an extension; an SMS cannot reach an extension.
    if number.extension or not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
