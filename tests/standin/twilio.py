"""A local Twilio stand-in: a small threaded HTTP server speaking the Messages API.

It answers what twilio-python and the bridge use, the way Twilio answers it:

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json        create (201, or Twilio's error)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json        list (To, From, DateSent[<>])
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json  fetch

with HTTP basic auth (account SID + auth token), Twilio's magic test numbers, injected latency and
faults, recorded requests, and signed status callbacks. Used in-process by tests
(`with TwilioStandIn(sid, token).start() as twilio: ...`) and as a separate process by end-to-end
tests and benchmarks:

    python -m tests.standin.twilio --port 8099 --account-sid AC... --auth-token ...

which prints its base URL on one line and serves until SIGINT or SIGTERM. A process is driven over
HTTP through `/_standin/...` (no auth): `GET requests`, `GET messages`, `POST clear`,
`POST latency {"seconds": x}`, `POST fail {"count": n, "status": 429, "code": 20429}` (or
`{"seconds": s, "status": 503}`), `POST status {"sid": ..., "status": ..., "error_code": ...}`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
MAX_BODY = 1600
MAX_MEDIA = 10

# Twilio's magic test numbers (https://www.twilio.com/docs/iam/test-credentials), with the error
# each one provokes and Twilio's own wording. The stand-in honours them with any credentials.
MAGIC_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: "
        "{from_} via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' "
        "number: {to}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM: dict[str, tuple[int, str]] = {
    "+15005550001": (
        21212,
        "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
        "sender ID.",
    ),
    "+15005550007": (
        21606,
        "The From phone number {from_} is not a valid, SMS-capable inbound phone number or short "
        "code for your account.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}

# The Twilio error code that goes with an injected HTTP status when the caller names none.
DEFAULT_FAULT_CODES = {429: 20429, 500: 20500, 502: 20502, 503: 20503}
_FAULT_MESSAGES = {
    429: "Too Many Requests",
    500: "An internal server error has occurred",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_MESSAGE_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_CHANNEL_ADDRESS = re.compile(r"^[a-z]+:.+$")  # whatsapp:+1..., messenger:...
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def count_segments(body: str) -> int:
    """Count the SMS segments Twilio bills for `body` (GSM-7 160/153, otherwise UCS-2 70/67)."""
    if not body:
        return 1
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENSION for c in body):
        units = sum(2 if c in _GSM7_EXTENSION else 1 for c in body)
        single, multi = 160, 153
    else:
        units = sum(2 if ord(c) > 0xFFFF else 1 for c in body)
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def most_within(times: Iterable[float], seconds: float) -> int:
    """The most of `times` (request timestamps) that fall within any `seconds` (ends included).

    A sender held to `rate` per second has at most `rate * seconds + 1` requests in any window.
    """
    ordered = sorted(times)
    most = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] < at - seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def rfc2822(moment: datetime) -> str:
    """Format a UTC datetime the way Twilio's JSON does: `Thu, 24 Aug 2023 05:01:45 +0000`."""
    return format_datetime(moment.astimezone(UTC))


def twilio_error(status: int, code: int, message: str, **extra: Any) -> dict[str, Any]:
    """Build Twilio's error JSON (`code`, `message`, `more_info`, `status`)."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
        **extra,
    }


@dataclass(frozen=True)
class RecordedRequest:
    """One create request as the stand-in received it."""

    received_at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    form: dict[str, list[str]]  # parsed form body; repeated fields (MediaUrl) keep every value
    headers: dict[str, str]
    auth: tuple[str, str] | None  # (username, password) from basic auth, as sent
    auth_ok: bool
    status: int  # the HTTP status answered
    sid: str | None  # the created message's sid, None when an error was answered
    error_code: int | None

    def first(self, name: str) -> str | None:
        """The first value of form field `name`, or None."""
        values = self.form.get(name)
        return values[0] if values else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (without the password) for the control endpoint."""
        return {
            "received_at": self.received_at,
            "method": self.method,
            "path": self.path,
            "form": self.form,
            "headers": self.headers,
            "auth_user": self.auth[0] if self.auth else None,
            "auth_ok": self.auth_ok,
            "status": self.status,
            "sid": self.sid,
            "error_code": self.error_code,
        }


@dataclass(frozen=True)
class SentCallback:
    """One status callback the stand-in posted."""

    sid: str
    status: str
    url: str
    params: dict[str, str]
    http_status: int | None  # None when the connection failed
    error: str | None = None


@dataclass
class _Message:
    resource: dict[str, Any]
    sent_at: datetime | None  # whole seconds, UTC, like Twilio's dates; None while queued
    status_callback: str | None
    form: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Response:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # hundreds of concurrent clients in benchmarks: no SYN drops

    def __init__(self, address: tuple[str, int], standin: TwilioStandIn) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout fired while latency was injected) is expected.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Twilio does; twilio-python pools connections
    disable_nagle_algorithm = True  # headers and body go in separate writes
    server_version = "TwilioStandIn/1.0"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection lets its thread go after a minute
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: benchmarks make thousands of requests

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.standin._handle(method, self.path, self.headers, body)
        data = json.dumps(response.payload).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class TwilioStandIn:
    """A Twilio Messages API on 127.0.0.1, with fault injection, recording and status callbacks."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auto_callbacks: Sequence[str] = (),
        callback_delay: float = 0.02,
        callback_timeout: float = 5.0,
        queued_without_date_sent: bool = False,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.auto_callbacks = tuple(auto_callbacks)
        self.callback_delay = callback_delay
        self.callback_timeout = callback_timeout
        # Like Twilio: a message still queued has no date_sent (set when a callback says "sent"),
        # so a DateSent filter does not find it.
        self.queued_without_date_sent = queued_without_date_sent
        self._validator = RequestValidator(auth_token)
        self._lock = threading.Lock()
        self._callbacks_changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._messages: dict[str, _Message] = {}
        self._callbacks: list[SentCallback] = []
        self._latency = 0.0
        self._fail_next: list[tuple[int, int]] = []  # (status, code), one per coming create
        self._fail_until = 0.0
        self._fail_for: tuple[int, int] = (503, 20503)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen and serve in a background thread; returns self."""
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="standin-callback")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twilio-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and drop pending callbacks."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            open_connections = list(server.connections)
        for connection in open_connections:  # keep-alive connections would otherwise linger
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Where the stand-in listens, e.g. `http://127.0.0.1:50123`."""
        return f"http://{self.host}:{self.port}"

    @property
    def messages_url(self) -> str:
        """The Messages list/create URL for this stand-in's account."""
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    # -- fault injection ---------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every Messages API answer by `seconds`."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, n: int = 1, status: int = 429, code: int | None = None) -> None:
        """Answer the next `n` creates with `status` and Twilio `code` (20429 for 429 if unset)."""
        code = DEFAULT_FAULT_CODES.get(status, status) if code is None else code
        with self._lock:
            self._fail_next.extend([(status, code)] * n)

    def fail_for(self, seconds: float, status: int = 503, code: int | None = None) -> None:
        """Answer every Messages API request with `status` for the next `seconds` (an outage)."""
        code = DEFAULT_FAULT_CODES.get(status, status) if code is None else code
        with self._lock:
            self._fail_until = time.monotonic() + seconds
            self._fail_for = (status, code)

    # -- recording ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every create request received, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message created, as Twilio's resource JSON, oldest first (copies)."""
        with self._lock:
            return [dict(m.resource) for m in self._messages.values()]

    @property
    def callbacks(self) -> list[SentCallback]:
        """Every status callback posted so far, oldest first (a copy)."""
        with self._lock:
            return list(self._callbacks)

    def sent_to(self, phone: str) -> list[dict[str, Any]]:
        """The messages created for `phone`, oldest first."""
        return [m for m in self.messages if m["to"] == phone]

    def message(self, sid: str) -> dict[str, Any]:
        """One created message's resource JSON; KeyError when unknown."""
        with self._lock:
            return dict(self._messages[sid].resource)

    def clear(self) -> None:
        """Forget recorded requests, messages and callbacks, and every injected fault."""
        with self._lock:
            self._requests.clear()
            self._messages.clear()
            self._callbacks.clear()
            self._fail_next.clear()
            self._fail_until = 0.0
            self._latency = 0.0

    def wait_for_callbacks(self, count: int, timeout: float = 5.0) -> list[SentCallback]:
        """Block until at least `count` callbacks were posted (or `timeout`); returns them."""
        deadline = time.monotonic() + timeout
        with self._callbacks_changed:
            while len(self._callbacks) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._callbacks_changed.wait(left)
            return list(self._callbacks)

    # -- status callbacks --------------------------------------------------------------------

    def send_status(self, sid: str, status: str, error_code: int | None = None) -> int:
        """POST a signed status callback for `sid` to its StatusCallback; returns the HTTP status.

        Raises KeyError for an unknown sid, ValueError when the message has no StatusCallback, and
        OSError (urllib's URLError) when the callback URL cannot be reached.
        """
        with self._lock:
            message = self._messages[sid]
            resource = message.resource
            resource["status"] = status
            resource["date_updated"] = rfc2822(datetime.now(UTC))
            if message.sent_at is None and status in ("sent", "delivered", "undelivered"):
                message.sent_at = datetime.now(UTC).replace(microsecond=0)
                resource["date_sent"] = rfc2822(message.sent_at)
            if error_code is not None:
                resource["error_code"] = error_code
            url = message.status_callback
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": resource["account_sid"],
                "To": resource["to"],
                "ApiVersion": API_VERSION,
            }
            if resource["from"] is not None:
                params["From"] = resource["from"]
            if resource["messaging_service_sid"] is not None:
                params["MessagingServiceSid"] = resource["messaging_service_sid"]
            if error_code is not None:
                params["ErrorCode"] = str(error_code)
        if not url:
            raise ValueError(f"message {sid} has no StatusCallback")
        request = urllib.request.Request(
            url,
            data=urlencode(params).encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": self._validator.compute_signature(url, params),
                "User-Agent": "TwilioProxy/1.1",
                "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.callback_timeout) as answer:
                http_status: int = answer.status
        except urllib.error.HTTPError as exc:
            http_status = exc.code
            exc.close()
        except OSError as exc:
            self._record_callback(SentCallback(sid, status, url, params, None, repr(exc)))
            raise
        self._record_callback(SentCallback(sid, status, url, params, http_status))
        return http_status

    def _record_callback(self, callback: SentCallback) -> None:
        with self._callbacks_changed:
            self._callbacks.append(callback)
            self._callbacks_changed.notify_all()

    def _post_auto_callbacks(self, sid: str) -> None:
        time.sleep(self.callback_delay)
        for status in self.auto_callbacks:
            if self._server is None:
                return
            # A failed callback is recorded in .callbacks; Twilio does not retry them either.
            with contextlib.suppress(Exception):
                self.send_status(sid, status)

    # -- HTTP --------------------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: Any, body: bytes) -> _Response:
        received_at = time.monotonic()
        url = urlsplit(target)
        if url.path.startswith("/_standin/"):
            return self._control(method, url.path, body)
        query = parse_qs(url.query, keep_blank_values=True)
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True) if body else {}
        with self._lock:
            latency = self._latency
        if latency:
            time.sleep(latency)
        auth = _basic_auth(headers.get("Authorization"))
        auth_ok = auth is not None and _same(auth, (self.account_sid, self.auth_token))
        is_create = method == "POST" and _MESSAGES_PATH.match(url.path) is not None
        response, sid = self._answer(method, url.path, query, form, auth_ok)
        if is_create:
            payload = response.payload if isinstance(response.payload, dict) else {}
            record = RecordedRequest(
                received_at=received_at,
                method=method,
                path=url.path,
                form=form,
                headers={k: v for k, v in headers.items() if k.lower() != "authorization"},
                auth=auth,
                auth_ok=auth_ok,
                status=response.status,
                sid=sid,
                error_code=payload.get("code") if sid is None else None,
            )
            with self._lock:
                self._requests.append(record)
        return response

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        auth_ok: bool,
    ) -> tuple[_Response, str | None]:
        if not auth_ok:
            return _Response(
                401,
                twilio_error(
                    401, 20003, "Authenticate", detail="Your AccountSid or AuthToken was incorrect."
                ),
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            ), None
        collection = _MESSAGES_PATH.match(path)
        single = _MESSAGE_PATH.match(path)
        match = collection or single
        if match is None or match.group(1) != self.account_sid:
            return _not_found(path), None
        if method not in ("GET", "POST") or (single and method != "GET"):
            return _Response(405, twilio_error(405, 20004, "Method not allowed")), None
        fault = self._take_fault(is_create=collection is not None and method == "POST")
        if fault is not None:
            status, code = fault
            message = _FAULT_MESSAGES.get(status, "Injected failure")
            return _Response(status, twilio_error(status, code, message)), None
        if single:
            with self._lock:
                found = self._messages.get(single.group(2))
                resource = dict(found.resource) if found else None
            return (_Response(200, resource) if resource else _not_found(path)), None
        if method == "GET":
            return self._list(path, query), None
        return self._create(form)

    def _take_fault(self, *, is_create: bool) -> tuple[int, int] | None:
        with self._lock:
            if time.monotonic() < self._fail_until:
                return self._fail_for
            if is_create and self._fail_next:
                return self._fail_next.pop(0)
        return None

    def _create(self, form: dict[str, list[str]]) -> tuple[_Response, str | None]:
        def first(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        to, from_ = first("To"), first("From")
        service_sid, body = first("MessagingServiceSid"), first("Body")
        media = form.get("MediaUrl", [])
        callback = first("StatusCallback")

        def error(code: int, message: str) -> tuple[_Response, None]:
            return _Response(400, twilio_error(400, code, message)), None

        if not to:
            return error(21604, "A 'To' phone number is required.")
        if not from_ and not service_sid:
            return error(21603, "A 'From' phone number is required.")
        if service_sid and not _MESSAGING_SERVICE_SID.match(service_sid):
            return error(21701, f"The Messaging Service Sid {service_sid} is invalid.")
        if from_ in MAGIC_FROM:
            code, text = MAGIC_FROM[from_]
            return error(code, text.format(to=to, from_=from_))
        if to in MAGIC_TO:
            code, text = MAGIC_TO[to]
            return error(code, text.format(to=to, from_=from_))
        if not (_E164.match(to) or _CHANNEL_ADDRESS.match(to)):
            return error(21211, f"The 'To' number {to} is not a valid phone number.")
        if not body and not media:
            return error(21602, "Message body is required.")
        if body and len(body) > MAX_BODY:
            return error(21617, "The concatenated message body exceeds the 1600 character limit.")
        if len(media) > MAX_MEDIA:
            return error(21623, "Number of media files exceeds allowed limit.")
        if any(not _is_http_url(url) for url in media):
            return error(21620, "Invalid media URL(s).")
        if callback is not None and not _is_http_url(callback):
            return error(21609, "Invalid StatusCallback.")

        now = datetime.now(UTC).replace(microsecond=0)
        # Twilio gives messages with media an MM sid, plain SMS an SM sid.
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        stamp = rfc2822(now)
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body or "",
            "date_created": stamp,
            "date_sent": None if self.queued_without_date_sent else stamp,
            "date_updated": stamp,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": service_sid,
            "num_media": str(len(media)),
            "num_segments": str(count_segments(body or "")),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": to,
            "uri": f"{base}.json",
        }
        with self._lock:
            sent_at = None if self.queued_without_date_sent else now
            self._messages[sid] = _Message(dict(resource), sent_at, callback, form)
        if self.auto_callbacks and callback and self._executor is not None:
            with contextlib.suppress(RuntimeError):  # executor shut down while stopping
                self._executor.submit(self._post_auto_callbacks, sid)
        return _Response(201, resource), sid

    def _list(self, path: str, query: dict[str, list[str]]) -> _Response:
        def first(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        try:
            page_size = min(1000, max(1, int(first("PageSize") or 50)))
            page = max(0, int(first("Page") or 0))
            filters = [
                _date_filter(first(name), compare)
                for name, compare in (
                    ("DateSent", lambda a, b: a == b),
                    ("DateSent>", lambda a, b: a >= b),
                    ("DateSent<", lambda a, b: a <= b),
                )
            ]
        except ValueError as exc:
            return _Response(400, twilio_error(400, 20001, str(exc)))
        to, from_ = first("To"), first("From")
        with self._lock:
            candidates = [m for m in self._messages.values()]
        matching = [
            dict(m.resource)
            for m in reversed(candidates)  # Twilio lists newest first
            if (to is None or m.resource["to"] == to)
            and (from_ is None or m.resource["from"] == from_)
            and all(f(m.sent_at) for f in filters)
        ]
        chunk = matching[page * page_size : (page + 1) * page_size]
        kept = [
            (name, value)
            for name, values in query.items()
            if name not in ("Page", "PageSize", "PageToken")
            for value in values
        ]

        def page_uri(number: int) -> str:
            return f"{path}?" + urlencode([*kept, ("PageSize", page_size), ("Page", number)])

        has_next = (page + 1) * page_size < len(matching)
        return _Response(
            200,
            {
                "end": page * page_size + max(len(chunk) - 1, 0),
                "first_page_uri": page_uri(0),
                "messages": chunk,
                "next_page_uri": page_uri(page + 1) + "&PageToken=PA" + secrets.token_hex(16)
                if has_next
                else None,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                "start": page * page_size,
                "uri": page_uri(page),
            },
        )

    def _control(self, method: str, path: str, body: bytes) -> _Response:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return _Response(400, {"error": "the body must be JSON"})
        action = path.removeprefix("/_standin/")
        if method == "GET" and action == "requests":
            return _Response(200, {"requests": [r.to_json() for r in self.requests]})
        if method == "GET" and action == "messages":
            return _Response(200, {"messages": self.messages})
        if method == "GET" and action == "callbacks":
            callbacks = [c.__dict__ for c in self.callbacks]
            return _Response(200, {"callbacks": callbacks})
        if method != "POST":
            return _Response(404, {"error": f"no such control endpoint: {method} {path}"})
        if action == "clear":
            self.clear()
        elif action == "latency":
            self.set_latency(float(data.get("seconds", 0)))
        elif action == "fail":
            status = int(data.get("status", 429))
            code = int(data["code"]) if data.get("code") is not None else None
            if "seconds" in data:
                self.fail_for(float(data["seconds"]), status=status, code=code)
            else:
                self.fail_next(int(data.get("count", 1)), status=status, code=code)
        elif action == "status":
            try:
                http_status = self.send_status(
                    str(data["sid"]), str(data["status"]), data.get("error_code")
                )
            except (KeyError, ValueError, OSError) as exc:
                return _Response(400, {"error": repr(exc)})
            return _Response(200, {"http_status": http_status})
        else:
            return _Response(404, {"error": f"no such control endpoint: {method} {path}"})
        return _Response(200, {"ok": True})


def _not_found(path: str) -> _Response:
    return _Response(404, twilio_error(404, 20404, f"The requested resource {path} was not found"))


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _same(given: tuple[str, str], expected: tuple[str, str]) -> bool:
    user_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
    return hmac.compare_digest(given[1].encode(), expected[1].encode()) and user_ok


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _date_filter(
    value: str | None, compare: Callable[[Any, Any], bool]
) -> Callable[[datetime | None], bool]:
    """Read a DateSent filter: `YYYY-MM-DD` compares dates, a full ISO datetime compares seconds."""
    if value is None:
        return lambda _: True
    value = value.strip()
    if len(value) == 10:
        day = date.fromisoformat(value)
        return lambda sent_at: sent_at is not None and compare(sent_at.date(), day)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC).replace(microsecond=0)
    return lambda sent_at: sent_at is not None and compare(sent_at, moment)


def main(argv: Iterable[str] | None = None) -> int:
    """Run the stand-in as a process until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.standin.twilio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"))
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    parser.add_argument(
        "--auto-callbacks",
        default="",
        help="comma-separated statuses to post after each create, e.g. sent,delivered",
    )
    parser.add_argument("--callback-delay", type=float, default=0.02)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(None if argv is None else list(argv))
    if not args.account_sid or not args.auth_token:
        parser.error("--account-sid and --auth-token are required (or TWILIO_* variables)")
    statuses = [s.strip() for s in args.auto_callbacks.split(",") if s.strip()]
    standin = TwilioStandIn(
        args.account_sid,
        args.auth_token,
        args.host,
        args.port,
        auto_callbacks=statuses,
        callback_delay=args.callback_delay,
    )
    standin.set_latency(args.latency)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with standin.start():
        print(standin.base_url, flush=True)
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
