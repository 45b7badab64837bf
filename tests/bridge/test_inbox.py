"""The console's read-side helpers that need no database: cursors, first lines, error reasons."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.errors import ValidationError
from bridge.inbox import explain_error, first_line, make_cursor, read_cursor


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    assert read_cursor(make_cursor(moment, "chnl_abc")) == (moment, "chnl_abc")
    assert read_cursor(None) is None and read_cursor("") is None


@pytest.mark.parametrize(
    "cursor", ["x", "12~", "~chnl_a", "12~chnl a", "1" * 21 + "~a", "99999999999999999999~a"]
)
def test_a_cursor_not_made_here_is_refused(cursor: str) -> None:
    with pytest.raises(ValidationError) as error:
        read_cursor(cursor)
    assert error.value.param == "after"


@pytest.mark.parametrize(
    ("text", "line"),
    [("Hello\nthere", "Hello"), ("\n\n  second  \n", "second"), ("", ""), (None, "")],
)
def test_first_line(text: str | None, line: str) -> None:
    assert first_line(text) == line


def test_first_line_is_cut() -> None:
    assert first_line("x" * 200, limit=10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("code", "recorded", "reason"),
    [
        (21614, "Twilio's own words", "The recipient's number is not a mobile number"),
        (30003, None, "The recipient's handset is unreachable (off or out of coverage)"),
        (30005, None, "The recipient's number is unknown or no longer in service"),
        (39999, "Something Twilio said", "Something Twilio said"),
        (39999, None, "Twilio error 39999"),
        (None, None, "No reason was given"),
    ],
)
def test_twilio_error_codes_are_explained_in_words(
    code: int | None, recorded: str | None, reason: str
) -> None:
    assert explain_error(code, recorded) == reason
