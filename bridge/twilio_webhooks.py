"""Twilio's webhooks, the provider side: form parameters, request signatures, TwiML answers.

Plain values in (the POST parameters as pairs or a mapping, the signed URL, the signature), no
Flask: the web views and the worker that drains payloads kept while the database was down both
call these. The domain side is `bridge.inbound` (inbound SMS) and `bridge.deliveries` (status
callbacks). Twilio's quirks this module absorbs:

- a parameter name may repeat, and the signature covers every value (`_MultiParams`);
- the signature is over the URL Twilio was given, with or without an explicit port;
- NumMedia is not trusted to size a loop beyond Twilio's own limit of ten media;
- a body may hold NUL or lone surrogates, which no database stores (`storable`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse

from bridge.settings import Settings
from bridge.twilio_client import MAX_MEDIA

# PostgreSQL refuses NUL in text and nothing can encode a lone surrogate as UTF-8: either would
# make the SMS unstorable, and Twilio's retries would fail the same way, so the SMS would be lost.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What XML 1.0 cannot hold, escaped or not: TwiML keeps none of it.
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Params = Mapping[str, "str | Sequence[str]"]


class _MultiParams:
    """Repeated POST parameters in the shape twilio's RequestValidator reads (`getall`)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def getall(self, name: str) -> list[str]:
        return self._values[name]

    def lists(self) -> Iterator[tuple[str, list[str]]]:
        return iter(self._values.items())


def signing_token(settings: Settings) -> str:
    """The secret webhooks are signed with: the Twilio auth token, or SECRET_KEY in development.

    Without Twilio credentials nothing real calls us, but `bridge sms simulate` signs with this same
    token so the webhook runs exactly the checks it runs in production.
    """
    return settings.twilio_auth_token or settings.secret_key


def is_valid_signature(
    settings: Settings,
    url: str,
    pairs: Iterable[tuple[str, str]],
    signature: str | None,
    signature_settings: str | None = None,
) -> bool:
    """Whether `signature` signs `url` and every POST parameter received (repeated names included).

    twilio's validator tries the URL with and without an explicit port (Twilio signs either way).
    """
    if not signature:
        return False
    algorithm = get_signature_algorithm(signature_settings)
    validator = RequestValidator(signing_token(settings))
    return bool(validator.validate(url, _MultiParams(pairs), signature, algorithm))


def form_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str | list[str]]:
    """POST parameters as stored: one value as a string, a repeated name as a list of values."""
    return {name: v[0] if len(v) == 1 else v for name, v in _MultiParams(pairs).lists()}


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD, so that any database stores it."""
    return _UNSTORABLE.sub("\ufffd", text)


def storable_params(params: Params) -> dict[str, str | list[str]]:
    """Every parameter name and value made `storable`."""
    return {
        storable(name): storable(value) if isinstance(value, str) else [storable(v) for v in value]
        for name, value in params.items()
    }


def first_param(params: Params, name: str) -> str | None:
    """The first value of a parameter, or None."""
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    return value[0] if value else None


def media_urls_from(params: Params) -> list[str]:
    """The `MediaUrl0..N` of an MMS, as many as `NumMedia` says (at most ten)."""
    try:
        count = int(first_param(params, "NumMedia") or 0)
    except ValueError:
        count = 0
    # NumMedia beyond Twilio's limit is not trusted to size a loop.
    urls = (first_param(params, f"MediaUrl{i}") for i in range(max(0, min(count, MAX_MEDIA))))
    return [url for url in urls if url]


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold (C0 controls but tab, LF and CR, lone
    surrogates, U+FFFE and U+FFFF): escaping cannot carry them, the document would not parse."""
    return _NOT_IN_XML.sub("", text)


def twiml(message: str | None = None) -> str:
    """A TwiML answer: an empty `<Response/>`, or one `<Message>`, always well-formed XML.

    The text may come from anywhere (a HELP text stored before the API refused control
    characters, an organization's name): what XML forbids is left out, not sent to Twilio.
    """
    response = MessagingResponse()
    if message:
        response.message(xml_safe(message))
    return str(response)
