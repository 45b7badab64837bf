"""SMS text: splitting long messages into parts, GSM-7/UCS-2 segment counting, relay prefixes.

Two different limits live here. Twilio takes a body of at most 1,600 characters (`split_text` cuts
longer text into several messages). Each body then travels as one or more carrier *segments*
(`segment_count`): 160 GSM-7 septets or 70 UCS-2 code units in a single SMS, 153 or 67 per segment
once a message is concatenated, because each segment spends some room on the reassembly header.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

MAX_PART_LENGTH = 1600

GSM7_SINGLE = 160
GSM7_CONCATENATED = 153
UCS2_SINGLE = 70
UCS2_CONCATENATED = 67

# GSM 03.38 default alphabet. ESC (0x1B) is left out: it only introduces the extension table and is
# not a character anyone can send on its own.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as ESC + a septet, so it costs two septets and the pair must
# stay in one segment.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

ZWJ = "\u200d"
# Spaces that promise not to break a line; splitting on them would separate what the writer joined.
_NO_BREAK_SPACES = frozenset("\u00a0\u2007\u202f")


def split_text(text: str, limit: int = MAX_PART_LENGTH) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, on whitespace where it can, in order."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    # Text that fits is one part, even empty: a media-only MMS still goes out as one message.
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        space = _last_break_space(rest, limit)
        if space is None:
            cut = _hard_cut(rest, limit)
            parts.append(rest[:cut])
            rest = rest[cut:]
            continue
        # The whole run of whitespace around the split point goes: no part starts or ends with it.
        start, end = space, space + 1
        while start > 0 and _is_break_space(rest[start - 1]):
            start -= 1
        while end < len(rest) and _is_break_space(rest[end]):
            end += 1
        if start > 0:  # whitespace at the very start would make an empty part: drop it instead
            parts.append(rest[:start])
        rest = rest[end:]
    if rest:
        parts.append(rest)
    return parts


def is_gsm7(text: str) -> bool:
    """Say whether every character of `text` is in the GSM-7 alphabet or its extension table."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text)


def encoding(text: str) -> Encoding:
    """Return the encoding a carrier uses for `text`: "GSM-7" when it can, else "UCS-2"."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def segment_count(text: str) -> int:
    """Count the SMS segments `text` takes; an empty body (media-only MMS) counts as 1."""
    if is_gsm7(text):
        # An extension character is ESC + septet and is never split across two segments.
        costs = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return _pack(costs, GSM7_SINGLE, GSM7_CONCATENATED)
    # UCS-2 as carriers send it is UTF-16: a character beyond the BMP (most emoji) is a surrogate
    # pair of two code units, and a pair is never split across two segments.
    costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return _pack(costs, UCS2_SINGLE, UCS2_CONCATENATED)


def relay_prefix(author_name: str, text: str) -> str:
    """Prefix a relayed message with its author's name: `Jane: hello`."""
    # A name with line breaks would make the prefix look like part of the message.
    name = " ".join(author_name.split())
    if not name:
        return text
    return f"{name}: {text}"


def _pack(costs: list[int], single: int, per_segment: int) -> int:
    total = sum(costs)
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_segment:
            segments += 1
            used = 0
        used += cost
    return segments


def _is_break_space(char: str) -> bool:
    return char.isspace() and char not in _NO_BREAK_SPACES


def _last_break_space(text: str, limit: int) -> int | None:
    """Index of the last breakable whitespace within the first `limit + 1` characters, or None."""
    # Index `limit` counts too: the part before it is exactly `limit` long and the space is dropped.
    for index in range(min(limit, len(text) - 1), -1, -1):
        if _is_break_space(text[index]):
            return index
    return None


def _hard_cut(text: str, limit: int) -> int:
    """Where to cut a word longer than `limit`: at `limit`, moved back out of any emoji sequence."""
    # A simple rule rather than full UAX #29: never cut before a combining mark, variation
    # selector, skin tone or tag, never next to a zero-width joiner, never inside a flag's pair of
    # regional indicators. A "cluster" longer than the limit is cut at the limit anyway.
    cut = limit
    while cut > 0 and not _can_cut_before(text, cut):
        cut -= 1
    return cut or limit


def _can_cut_before(text: str, index: int) -> bool:
    char, previous = text[index], text[index - 1]
    if previous == ZWJ or _extends_cluster(char):
        return False
    if _is_regional_indicator(char):
        run = 0
        while index - run - 1 >= 0 and _is_regional_indicator(text[index - run - 1]):
            run += 1
        return run % 2 == 0  # an odd run before `char` means `char` completes a flag
    return True


def _extends_cluster(char: str) -> bool:
    code = ord(char)
    return (
        char == ZWJ
        or unicodedata.category(char) in ("Mn", "Mc", "Me")  # combining marks, VS, keycap
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF
