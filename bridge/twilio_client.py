"""The Twilio adapter: sends SMS through twilio-python and turns every failure into a send error.

Plain values in (an `OutgoingSms`), plain values out (a `SendResult` or a `SendError`); no Flask, no
RQ. `build_sender(settings)` gives a `TwilioSender` when Twilio is configured and an `OutboxSender`
(a local, clearly labelled log of SMS that were NOT sent) when it is not.

Quirks of twilio-python 9.x this module deals with:
- Timeouts and connection failures are not wrapped: they surface as `requests` exceptions.
- A failed *list* page raises a bare `TwilioException("Unable to fetch page", response)`, not a
  `TwilioRestException`: the status and Twilio's code hide in the `Response` in its args.
- RFC 9457 answers raise `TwilioServiceException`, a sibling of `TwilioRestException`.
- `Client` reads TWILIO_EDGE / TWILIO_REGION from `os.environ` unless given a non-empty mapping.
- Its HTTP client logs full URLs, query strings included (phone numbers, for a list), at INFO
  (`bridge.twilio_http` replaces that client).
- `serialize.iso8601_datetime` formats a datetime's wall clock as if it were UTC.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.response import Response
from twilio.rest import Client

from bridge.errors import PermanentSendError, SendError, TransientSendError
from bridge.settings import Settings
from bridge.twilio_http import RedirectingHttpClient, build_twilio_client

logger = logging.getLogger(__name__)

OUTBOX_NOTE = "NOT SENT: Twilio is not configured"

# Twilio error codes worth retrying, whatever HTTP status came with them (DESIGN 5.4).
TRANSIENT_CODES: dict[int, str] = {
    20429: "Twilio is rate limiting this account (too many requests)",
    20500: "Twilio had an internal error",
    20503: "Twilio is temporarily unavailable",
    # Per sender: more messages queued than Twilio keeps (4 hours' worth at the sender's rate).
    21611: "The sender has too many messages queued at Twilio",
    30001: "Twilio's queue overflowed",
    30003: "The recipient's handset is unreachable (off or out of coverage)",
    30008: "Unknown delivery error at the carrier",
}

# Twilio error codes where retrying cannot help. The reasons are ours: Twilio's own messages often
# quote the phone number, and reasons end up in delivery records and logs.
PERMANENT_CODES: dict[int, str] = {
    20003: "Twilio rejected the credentials (check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)",
    20404: "Twilio does not know this resource (is TWILIO_ACCOUNT_SID right?)",
    21211: "The recipient's phone number is not valid",
    21212: "The sender's phone number is not valid",
    21408: "The account may not send SMS to the recipient's region",
    21602: "The message has no body and no media",
    21603: "The message has no sender ('From' or Messaging Service)",
    21604: "The message has no recipient ('To')",
    21606: "The sender number is not an SMS-capable number of this account",
    21609: "The StatusCallback URL is not valid",
    21610: "The recipient has unsubscribed (replied STOP)",
    21612: "The recipient cannot be reached from this sender by SMS",
    21614: "The recipient's number is not a mobile number",
    21617: "The message body exceeds 1,600 characters",
    21620: "A media URL is not valid",
    21623: "The message has more media than allowed",
    21701: "The Messaging Service SID is not valid",
    30006: "The recipient is a landline or its carrier cannot be reached",
    30007: "The carrier filtered the message",
}

# Code 21610 means the recipient sent STOP: the caller also opts the contact out.
UNSUBSCRIBED_CODE = 21610
# The source of such an opt-out, as the opt-out row and its event keep it.
UNSUBSCRIBED_SOURCE = f"twilio-{UNSUBSCRIBED_CODE}"

# Twilio takes at most ten media per MMS, and sends us at most ten on an inbound one.
MAX_MEDIA = 10

# HTTP statuses worth retrying when the code is in neither table; every 5xx is too.
TRANSIENT_STATUSES = frozenset({408, 425, 429})

# Keep phone numbers out of reasons built from Twilio's free text: mask to the last four digits.
_PHONE_LIKE = re.compile(r"\+?\d[\d ().-]{5,}\d")

# How many recent messages `find_sent` reads; To, From and the date narrow the list well before.
_FIND_LIMIT = 200


def mask_phone_numbers(text: str) -> str:
    """Replace every phone-number-like run of digits in `text` by its last four digits."""

    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "***" + digits[-4:]

    return _PHONE_LIKE.sub(mask, text)


def classify_error(exc: BaseException) -> SendError:
    """Turn a twilio-python or `requests` failure into a transient or permanent send error."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        # For an answer without a Twilio code (a proxy's HTML 502) twilio-python puts the HTTP
        # status in `code`; Twilio's own codes have five digits.
        code = exc.code if exc.code is not None and exc.code >= 10000 else None
        return _classify_answer(exc.status, code, _twilio_text(exc))
    if isinstance(exc, TwilioException):
        response = next((a for a in exc.args if isinstance(a, Response)), None)
        if response is not None:
            code, text = _read_error_body(response)
            return _classify_answer(response.status_code, code, text)
        # No answer from Twilio to judge by: retrying a bounded number of times is the safe side.
        return TransientSendError(f"Twilio client error ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TransientSendError("Could not connect to Twilio before the timeout")
    if isinstance(exc, requests.exceptions.Timeout):
        # The request may have reached Twilio: the SMS may have gone (see TwilioSender.find_sent).
        return TransientSendError(
            "Twilio did not answer before the timeout (the SMS may have gone)", may_have_sent=True
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return TransientSendError("Could not connect to Twilio (connection failed)")
    if isinstance(exc, requests.exceptions.RequestException | OSError):
        return TransientSendError(f"Network error talking to Twilio ({type(exc).__name__})")
    return TransientSendError(f"Unexpected error sending to Twilio ({type(exc).__name__})")


def _classify_answer(status: int | None, code: int | None, text: str) -> SendError:
    if code is not None and code in TRANSIENT_CODES:
        return TransientSendError(_reason(status, code, TRANSIENT_CODES[code]), code, status)
    if code is not None and code in PERMANENT_CODES:
        return PermanentSendError(_reason(status, code, PERMANENT_CODES[code]), code, status)
    reason = _reason(status, code, mask_phone_numbers(text) or "Twilio refused the request")
    if status is None or status >= 500 or status in TRANSIENT_STATUSES:
        return TransientSendError(reason, code, status)
    return PermanentSendError(reason, code, status)


def _reason(status: int | None, code: int | None, text: str) -> str:
    where = f"HTTP {status}" if status is not None else "no HTTP status"
    return f"{text} (Twilio error {code}, {where})" if code else f"{text} ({where})"


def _twilio_text(exc: TwilioRestException | TwilioServiceException) -> str:
    if isinstance(exc, TwilioServiceException):
        return ": ".join(part for part in (exc.title, exc.detail) if part)
    # twilio-python prefixes Twilio's message with its own ("Unable to create record: ...").
    return str(exc.msg).partition(": ")[2] or str(exc.msg)


def _read_error_body(response: Response) -> tuple[int | None, str]:
    try:
        payload = json.loads(response.text)
    except ValueError:
        return None, ""
    if not isinstance(payload, dict):
        return None, ""
    code = payload.get("code")
    text = payload.get("message") or payload.get("title") or ""
    return (code if isinstance(code, int) else None), str(text)


@dataclass(frozen=True)
class OutgoingSms:
    """One SMS (or MMS) to send: recipient, sender number or Messaging Service, text and media."""

    to: str
    body: str
    from_: str | None = None
    messaging_service_sid: str | None = None
    media_urls: Sequence[str] = ()
    status_callback: str | None = None
    validity_period: int | None = None

    def __post_init__(self) -> None:
        if not self.from_ and not self.messaging_service_sid:
            raise ValueError("an SMS needs from_ or messaging_service_sid")
        if not self.body and not self.media_urls:
            raise ValueError("an SMS needs a body or media")
        object.__setattr__(self, "media_urls", tuple(self.media_urls))


@dataclass(frozen=True)
class SendResult:
    """What Twilio answered to an accepted send."""

    sid: str
    status: str
    num_segments: int | None


@dataclass(frozen=True)
class SentQuery:
    """What tells whether an SMS went: To, From or the Messaging Service, since when, the body.

    A body of None matches any body; `exclude_sids` skips SMS already recorded for other
    deliveries.
    """

    to: str
    from_: str | None
    since: datetime
    body: str | None = None
    messaging_service_sid: str | None = None
    exclude_sids: Collection[str] = ()

    def __post_init__(self) -> None:
        if self.since.tzinfo is None:
            raise ValueError("since must be timezone-aware")

    def is_service(self, messaging_service_sid: str | None) -> bool:
        """Whether an SMS sent through `messaging_service_sid` fits the query."""
        return self.messaging_service_sid in (None, messaging_service_sid)

    def is_body(self, body: str | None) -> bool:
        """Whether an SMS with `body` fits; a trial account prefixes "Sent from your Twilio..."."""
        return self.body is None or (body or "").endswith(self.body)


class Sender(Protocol):
    """What the delivery code needs from a sender: send, and find out whether an SMS went."""

    def send(self, sms: OutgoingSms) -> SendResult:
        """Send one SMS, or raise a `SendError`."""
        ...

    def find_sent(self, query: SentQuery) -> str | None:
        """The sid of an SMS that went as `query` describes, or None."""
        ...

    def close(self) -> None:
        """Release connections or files."""
        ...


class TwilioSender:
    """Sends SMS through Twilio's Messages API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def send(self, sms: OutgoingSms) -> SendResult:
        """Create the message at Twilio; raise `TransientSendError` or `PermanentSendError`."""
        try:
            message = self.client.messages.create(
                to=sms.to,
                from_=sms.from_ or values.unset,
                messaging_service_sid=sms.messaging_service_sid or values.unset,
                body=sms.body or values.unset,
                media_url=list(sms.media_urls) or values.unset,
                status_callback=sms.status_callback or values.unset,
                validity_period=(
                    values.unset if sms.validity_period is None else sms.validity_period
                ),
            )
        except (TwilioException, requests.exceptions.RequestException) as exc:
            error = classify_error(exc)
            logger.warning(
                "twilio send failed: %s",
                error.reason,
                extra={"twilio_code": error.code, "retryable": error.retryable},
            )
            raise error from exc
        sid = str(message.sid)
        # DEBUG, not INFO: the SID is saved with the delivery and reported in its delivery.updated
        # event, and a line per SMS sent was ~9% of a fan-out's time holding the GIL (formatted,
        # scrubbed and written under the handler's lock by 32 send threads). Failures stay WARNING.
        logger.debug(
            "twilio send accepted", extra={"twilio_sid": sid, "twilio_status": message.status}
        )
        segments = message.num_segments
        return SendResult(
            sid=sid,
            status=str(message.status),
            num_segments=int(segments) if segments not in (None, "") else None,
        )

    def find_sent(self, query: SentQuery) -> str | None:
        """Ask Twilio's Messages list whether the SMS went; return its sid (the oldest match)."""
        # Twilio's dates have whole seconds.
        since = query.since.astimezone(UTC).replace(microsecond=0)
        try:
            # No DateSent filter: a message Twilio still holds queued has no date_sent yet, and
            # would read as never sent (and be sent twice). Twilio lists newest first, so one
            # bounded page covers the recent past; the creation date is checked below.
            found = self.client.messages.list(
                to=query.to,
                from_=query.from_ or values.unset,
                limit=_FIND_LIMIT,
                page_size=_FIND_LIMIT,
            )
        except (TwilioException, requests.exceptions.RequestException) as exc:
            raise classify_error(exc) from exc
        matches = [
            m
            for m in found
            if m.sid not in query.exclude_sids
            and str(m.direction or "").startswith("outbound")
            and m.date_created is not None
            and m.date_created >= since
            and query.is_service(m.messaging_service_sid)
            and query.is_body(m.body)
        ]
        if not matches:
            return None
        # Twilio lists newest first, its dates in whole seconds: among equals the last is oldest.
        oldest = min(reversed(matches), key=lambda m: m.date_created or since)
        return str(oldest.sid)

    def close(self) -> None:
        """Close the Twilio client's pooled connections."""
        http_client = self.client.http_client
        if isinstance(http_client, RedirectingHttpClient):
            http_client.close()


class OutboxSender:
    """Writes each SMS as one JSON line to a local outbox log, labelled as NOT sent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def send(self, sms: OutgoingSms) -> SendResult:
        """Append the SMS to the outbox log and return a fake `SMoutbox...` sid."""
        sid = "SMoutbox" + uuid.uuid4().hex[:26]  # 34 characters, like a real sid
        line = {
            "note": OUTBOX_NOTE,
            "sid": sid,
            "at": datetime.now(UTC).isoformat(),
            "to": sms.to,
            "from": sms.from_,
            "messaging_service_sid": sms.messaging_service_sid,
            "body": sms.body,
            "media_urls": list(sms.media_urls),
            "status_callback": sms.status_callback,
            "validity_period": sms.validity_period,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a", encoding="utf-8") as outbox:
            outbox.write(json.dumps(line, ensure_ascii=False) + "\n")
        logger.info("sms written to the outbox, not sent", extra={"twilio_sid": sid})
        return SendResult(sid=sid, status="queued", num_segments=None)

    def find_sent(self, query: SentQuery) -> str | None:
        """Look for the SMS in the outbox log, as `TwilioSender.find_sent` does at Twilio."""
        if not self.path.exists():
            return None
        with self._lock, self.path.open(encoding="utf-8") as outbox:
            lines = [json.loads(raw) for raw in outbox if raw.strip()]
        for line in lines:
            if (
                line["to"] == query.to
                and (query.from_ is None or line["from"] == query.from_)
                and query.is_service(line["messaging_service_sid"])
                and query.is_body(line["body"])
                and datetime.fromisoformat(line["at"]) >= query.since
                and line["sid"] not in query.exclude_sids
            ):
                return str(line["sid"])
        return None

    def close(self) -> None:
        """Nothing to release: each send opens and closes the file."""


def build_sender(settings: Settings) -> TwilioSender | OutboxSender:
    """Build the sender the settings call for: Twilio when configured, else the local outbox."""
    client = build_twilio_client(settings)
    if client is None:
        logger.warning("Twilio is not configured: SMS go to the outbox log and are NOT sent")
        return OutboxSender(settings.outbox_path)
    return TwilioSender(client)
