import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sms_text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MAX_PART_LENGTH,
    encoding,
    is_gsm7,
    relay_prefix,
    segment_count,
    split_text,
)

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: 5 code points
THUMBS_UP_MEDIUM = "\U0001f44d\U0001f3fd"  # thumbs up + skin tone
FLAG_US, FLAG_FR, FLAG_DE = "\U0001f1fa\U0001f1f8", "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea"
E_ACUTE_DECOMPOSED = "e\u0301"
SMILE = "\U0001f642"


def test_gsm7_tables() -> None:
    assert len(GSM7_BASIC) == 127  # 128 code points, ESC left out
    assert set("^{}\\[~]|€\f") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "expected_encoding", "segments"),
    [
        ("", "GSM-7", 1),  # an empty body (media-only MMS) is counted as one
        ("hello", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 153 * 2, "GSM-7", 2),
        ("a" * (153 * 2 + 1), "GSM-7", 3),
        ("a" * 153 * 3, "GSM-7", 3),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", "GSM-7", 1),
        ("line one\nline two\r\n", "GSM-7", 1),
        # Extension characters cost two septets each.
        ("€" * 80, "GSM-7", 1),
        ("€" * 81, "GSM-7", 2),
        ("a" * 159 + "€", "GSM-7", 2),
        ("a" * 158 + "€", "GSM-7", 1),
        ("{}[]~\\|^\f€", "GSM-7", 1),
        # 152 + 2 + 152 = 306 septets, but the escape pair cannot straddle two segments.
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),
        ("a" * 151 + "€" + "a" * 153, "GSM-7", 2),
        # Outside GSM-7: UCS-2, counted in UTF-16 code units.
        ("й" * 70, "UCS-2", 1),
        ("й" * 71, "UCS-2", 2),
        ("й" * 67 * 2, "UCS-2", 2),
        ("й" * (67 * 2 + 1), "UCS-2", 3),
        ("ç", "UCS-2", 1),  # only the capital Ç is in GSM-7
        ("ê", "UCS-2", 1),
        ("`", "UCS-2", 1),
        ("\x1b", "UCS-2", 1),
        ("price: 5€ 🙂", "UCS-2", 1),
        # An emoji forces UCS-2 and takes two code units.
        (SMILE, "UCS-2", 1),
        (SMILE * 35, "UCS-2", 1),
        (SMILE * 36, "UCS-2", 2),
        ("a" * 68 + SMILE, "UCS-2", 1),
        ("a" * 69 + SMILE, "UCS-2", 2),
        ("a" * 160 + SMILE, "UCS-2", 3),
        # 66 + 2 + 66 = 134 units, but a surrogate pair cannot straddle two segments.
        ("a" * 66 + SMILE + "a" * 66, "UCS-2", 3),
        ("a" * 65 + SMILE + "a" * 67, "UCS-2", 2),
    ],
)
def test_encoding_and_segment_count(text: str, expected_encoding: str, segments: int) -> None:
    assert encoding(text) == expected_encoding
    assert is_gsm7(text) == (expected_encoding == "GSM-7")
    assert segment_count(text) == segments


W = "w" * 800


@pytest.mark.parametrize(
    ("text", "limit", "parts"),
    [
        ("", 1600, [""]),  # a media-only MMS still goes once
        ("hello", 1600, ["hello"]),
        ("x" * 1600, 1600, ["x" * 1600]),
        (W + " " + "v" * 800, 1600, [W, "v" * 800]),
        ("x" * 2000, 1600, ["x" * 1600, "x" * 400]),
        ("x" * 3201, 1600, ["x" * 1600, "x" * 1600, "x"]),
        ("hello world foo", 10, ["hello", "world foo"]),
        ("hello\nworld foo bar", 10, ["hello", "world foo", "bar"]),
        ("one two three four five", 10, ["one two", "three four", "five"]),
        ("abcdefghij klm", 10, ["abcdefghij", "klm"]),  # the space right at the limit
        ("abcdefghijk lm", 10, ["abcdefghij", "k lm"]),  # a word longer than the limit
        ("aaaa    bbbbbbbb", 10, ["aaaa", "bbbbbbbb"]),  # the whole run of spaces goes
        ("aaaa\n\n\nbbbbbbbb", 10, ["aaaa", "bbbbbbbb"]),
        ("aaaa\u00a0bbbbbbbb", 10, ["aaaa\u00a0bbbbb", "bbb"]),  # never split on a no-break space
        ("   " + "a" * 12, 10, ["a" * 10, "aa"]),
        ("a" * 10 + "   ", 10, ["a" * 10]),
        # Hard splits stay out of emoji sequences, flags and combining marks.
        (FAMILY * 3, 8, [FAMILY, FAMILY, FAMILY]),
        (FLAG_US + FLAG_FR + FLAG_DE, 3, [FLAG_US, FLAG_FR, FLAG_DE]),
        (THUMBS_UP_MEDIUM * 3, 3, [THUMBS_UP_MEDIUM] * 3),
        (E_ACUTE_DECOMPOSED * 3, 3, [E_ACUTE_DECOMPOSED] * 3),
        ("ab" + FAMILY, 6, ["ab", FAMILY]),
        # A sequence longer than the limit must be cut somewhere: at the limit.
        (FAMILY, 2, ["\U0001f468\u200d", "\U0001f469\u200d", "\U0001f467"]),
    ],
)
def test_split_text(text: str, limit: int, parts: list[str]) -> None:
    assert split_text(text, limit) == parts


def test_split_text_at_the_default_limit_uses_the_last_space() -> None:
    text = " ".join(["abcd"] * 321)  # 1,604 characters; a space at index 1,599
    parts = split_text(text)
    assert parts == [text[:1599], "abcd"]
    assert MAX_PART_LENGTH == 1600


def test_split_text_keeps_the_parts_in_order() -> None:
    words = [f"word{index:04d}" for index in range(1000)]
    parts = split_text(" ".join(words))
    assert len(parts) == 6  # 177 nine-character words fit in 1,600
    assert " ".join(parts).split() == words
    assert all(len(part) <= MAX_PART_LENGTH for part in parts)


@pytest.mark.parametrize("limit", [0, -1])
def test_split_text_refuses_a_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError):
        split_text("hello", limit)


def _without_whitespace(text: str) -> str:
    return "".join(char for char in text if not char.isspace() or char == "\u00a0")


ALPHABET = st.sampled_from(
    ["a", "b", "é", "€", "{", SMILE, "\u200d", "\u0301", "\U0001f1fa", "\U0001f3fd", "\u00a0"]
)
SPACES = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " \n "])


@given(
    text=st.text(alphabet=ALPHABET | st.sampled_from(" \n\t"), max_size=300),
    limit=st.integers(1, 40),
)
def test_split_text_loses_nothing_but_whitespace(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    if len(text) <= limit:
        assert parts == [text]
        return
    assert all(1 <= len(part) <= limit for part in parts)
    assert "".join(_without_whitespace(part) for part in parts) == _without_whitespace(text)


@st.composite
def worded_text(draw: st.DrawFn) -> tuple[str, int]:
    limit = draw(st.integers(1, 40))
    words = draw(st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=limit), max_size=60))
    text = ""
    for word in words:
        text += word + draw(SPACES)
    return draw(SPACES) + text, limit


@given(worded_text())
def test_split_text_keeps_words_that_fit_whole(case: tuple[str, int]) -> None:
    text, limit = case
    parts = split_text(text, limit)
    assert all(len(part) <= limit for part in parts)
    # Every word fits, so no word is cut: the words of the parts are the words of the text.
    assert [word for part in parts for word in part.split()] == text.split()


@pytest.mark.parametrize(
    ("author", "text", "relayed"),
    [
        ("Jane", "hello", "Jane: hello"),
        ("  Jane   Doe ", "on my way", "Jane Doe: on my way"),
        ("Jane\nDoe", "hi", "Jane Doe: hi"),
        ("Zoë", SMILE, "Zoë: " + SMILE),
        ("", "hello", "hello"),
        ("   ", "hello", "hello"),
    ],
)
def test_relay_prefix(author: str, text: str, relayed: str) -> None:
    assert relay_prefix(author, text) == relayed
