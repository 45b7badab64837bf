"""What `format: phone` means, for schemathesis: numbers libphonenumber finds valid.

The description gives phone fields a pattern (the characters a number is written with) and the
custom format `phone`, because validity (a real country code, a length and a range that exist) is
libphonenumber's to decide and no pattern can state it. A generator that does not know the format
draws any string of the pattern, and the server rightly refuses most of them; this strategy draws
valid numbers instead, written as clients write them: E.164, international, or national (US, the
tests' DEFAULT_REGION). Invalid numbers still come from the negative phases, which break the
pattern.

The test suite registers it; for a command-line run against a server, load it the same way:
`SCHEMATHESIS_HOOKS=tests.webhooks.schemathesis_hooks st run http://localhost:5000/openapi.json`.
"""

from __future__ import annotations

import phonenumbers
import schemathesis
from hypothesis import strategies as st

# A spread of regions whose example numbers libphonenumber ships: varied lengths and formats.
REGIONS = ("US", "CA", "GB", "DE", "FR", "IN", "BR", "AU", "JP", "MX", "NG", "ZA", "SE", "ES")
FORMATS = (
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
)


@st.composite
def phone_numbers(draw: st.DrawFn) -> str:
    """A valid number: a region's example with its last four digits drawn, in a client's format."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None, f"libphonenumber has no mobile example for {region}"
    national = str(example.national_number)
    digits = draw(st.integers(min_value=0, max_value=9999))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{digits:04d}", None)
    if not phonenumbers.is_valid_number(number):
        number = example  # rare: the drawn digits left the region's ranges
    if region == "US" and draw(st.booleans()):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, draw(st.sampled_from(FORMATS)))


def register() -> None:
    """Teach schemathesis the `phone` format (idempotent)."""
    schemathesis.openapi.format("phone", phone_numbers())


register()
