"""Logs as one JSON object per line, phone numbers masked, secrets and message text left out.

The web app and the worker call `configure_logging(settings)` once at start. Records carry
`request_id`, `delivery_id`, `message_id` (and other ids) from `extra=` or from the fields bound
with `log_context(...)` around a request or a job. Never written: message text (fields named like
a body are dropped), secrets (the configured keys and tokens, API keys, bearer tokens, passwords in
URLs, SQL parameters) and full phone numbers (masked to their last four digits wherever they
appear, URL-encoded ones included).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

from bridge.phones import mask_phone, mask_phones_in_text
from bridge.settings import Settings

# Fields that lead the object, in this order, when present.
ID_FIELDS = ("request_id", "delivery_id", "message_id")

# `extra=` keys that may hold message text or credentials: dropped whatever their value.
_DROPPED_FIELDS = frozenset(
    {
        "body",
        "text",
        "message_text",
        "sms_body",
        "media_urls",
        "token",
        "auth_token",
        "api_key",
        "authorization",
        "password",
        "secret",
        "secret_key",
        "phone_hash_key",
        "metrics_token",
    }
)
# `extra=` keys that hold one phone number: masked even when it is not in E.164. Call sites pass
# the number itself; this formatter is the one place that masks.
_PHONE_FIELDS = frozenset({"phone", "to", "from", "from_", "sender", "recipient"})
# Masked already (`***1234`): masking again would hide the last four digits too.
_MASKED_PHONE = re.compile(r"\*\*\*[0-9]{0,4}")

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)

_API_KEY = re.compile(r"\bbrk_[A-Za-z0-9_\-]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
# Form-encoded numbers (`To=%2B14155550100`) escape the plain `+digits` pattern.
_ENCODED_PHONE = re.compile(r"%2[Bb]([0-9]{7,})")
# SQLAlchemy puts the statement's bound values (phone numbers, message text) in its error text.
_SQL_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\n|$)", re.DOTALL)
REDACTED = "[redacted]"
# What any of the patterns above (and a phone number: 7 digits in a row at least) needs to match:
# text without it is left as it is, without running each pattern over it. A worker logs a line
# per SMS sent, and its ids and statuses hold none of these.
_MAY_HIDE = re.compile(r"[0-9]{7}|://|\[parameters: |brk_|(?i:bearer|basic)")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("bridge_log_context", default=_EMPTY)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (ids such as request_id or delivery_id) to every record logged in the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> object:
    """Add `fields` to the log context until `unbind(token)` (for hooks that cannot use `with`)."""
    return _context.set({**_context.get(), **fields})


def unbind(token: object) -> None:
    """Undo one `bind`."""
    _context.reset(token)  # type: ignore[arg-type]


def current_context() -> Mapping[str, Any]:
    """The fields bound by the enclosing `log_context` or `bind`."""
    return _context.get()


class Scrubber:
    """Removes secrets and full phone numbers from free text."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(
            {s for s in secrets or [] if s and len(s) >= 8}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        if not _MAY_HIDE.search(text):
            return text
        text = _SQL_PARAMETERS.sub("[parameters hidden]", text)
        text = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        text = _API_KEY.sub("brk_" + REDACTED, text)
        text = _ENCODED_PHONE.sub(lambda m: mask_phone(m.group(1)), text)
        return mask_phones_in_text(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, ids, then the other fields."""

    def __init__(self, scrubber: Scrubber | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scrub = scrubber or Scrubber()

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(current_context())
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                fields[key] = value
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.scrub(_message(record)),
        }
        for key in ID_FIELDS:
            if fields.get(key) is not None:
                entry[key] = self._value(key, fields.pop(key))
        for key, value in fields.items():
            if key.lower() in _DROPPED_FIELDS or key in entry:
                continue
            entry[key] = self._value(key, value)
        if record.exc_info:
            entry["exception"] = self.scrub(self.formatException(record.exc_info))
        elif record.stack_info:
            entry["stack"] = self.scrub(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)

    def _value(self, key: str, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if key.lower() in _PHONE_FIELDS:
            text = str(value)
            return text if _MASKED_PHONE.fullmatch(text) else mask_phone(text)
        if isinstance(value, list | tuple):
            return [self._value(key, item) for item in value]
        return self.scrub(value if isinstance(value, str) else str(value))


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # a bad format string must not lose the line
        return str(record.msg)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def secrets_of(settings: Settings) -> list[str]:
    """The configured values that must never reach a log line."""
    values = [
        settings.twilio_auth_token,
        settings.secret_key,
        settings.phone_hash_key,
        settings.metrics_token,
    ]
    return [v for v in values if v]


def json_formatter(settings: Settings | None = None) -> JsonFormatter:
    """A formatter that also redacts the secrets of `settings`."""
    return JsonFormatter(Scrubber(secrets_of(settings) if settings else []))


def configure_logging(
    settings: Settings | None = None, stream: TextIO | None = None, level: int | str = "INFO"
) -> logging.Handler:
    """Send every log record as JSON to stderr (or `stream`); a second call replaces the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bridge_json", False):
            root.removeHandler(handler)
    new: logging.Handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    new.setFormatter(json_formatter(settings))
    new._bridge_json = True  # type: ignore[attr-defined]
    root.addHandler(new)
    root.setLevel(level)
    # twilio's HTTP client logs every request's URL, query and headers at INFO: noise, and numbers.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    return new
