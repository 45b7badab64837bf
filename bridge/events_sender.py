"""The events adapter: POSTs one signed event to one endpoint and says what came of it (DESIGN 5.8).

Plain values in (an `OutgoingEvent`), plain values out (an `AttemptResult`); no Flask, no RQ, no
database. Signatures follow the Standard Webhooks specification through its reference library,
`standardwebhooks`, so receivers verify with the same code.

Choices and quirks this module deals with:
- The host is resolved once and the connection is made to that address (`PinnedAdapter`), with the
  `Host` header, TLS SNI and certificate check on the name: DNS cannot answer a public address to
  the check and a private one to the connect.
- In production an address that is loopback, private, link-local, shared (CGNAT), reserved or a
  cloud metadata service is refused, at registration and again here; elsewhere `http` is allowed to
  loopback only, so a developer's receiver on 127.0.0.1 works.
- Redirects are not followed: a 3xx is a failed attempt like any other non-2xx.
- `requests` timeouts are per phase (connect, each read); the total is checked too, so an answer
  after WEBHOOK_TIMEOUT counts as a timeout even when it trickled in.
- At most 1 KiB of the answer is read and kept; the rest is never downloaded.
- `standardwebhooks.Webhook.sign` replaces the timestamp's tzinfo with UTC instead of converting,
  so it is always given a UTC datetime.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook

from bridge.errors import ValidationError

logger = logging.getLogger(__name__)

MAX_RESPONSE_BODY = 1024  # bytes of the receiver's answer kept with the attempt
USER_AGENT = "sms-bridge-webhooks/1"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata and host services that sit on public-looking or special addresses; the rest
# (169.254.169.254, fd00:ec2::254, ...) are already link-local or private.
METADATA_ADDRESSES: dict[str, str] = {
    "169.254.169.254": "AWS, GCP, Azure and OpenStack instance metadata",
    "169.254.170.2": "AWS ECS task metadata",
    "fd00:ec2::254": "AWS instance metadata over IPv6",
    "100.100.100.200": "Alibaba Cloud instance metadata",
    "168.63.129.16": "Azure host services (WireServer)",
}


class UnsafeAddress(ValidationError):
    """The URL resolves to an address events are never sent to."""


def refusal_reason(address: str) -> str | None:
    """Why events may not go to this IP address in production, or None if they may."""
    ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return f"a cloud metadata address ({METADATA_ADDRESSES[str(ip)]})"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "not a public address"
    return None


def _host_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValidationError("url must be an https URL", "url")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValidationError("url's port must be a number from 1 to 65535", "url") from None
    if not host:
        raise ValidationError("url must name a host", "url")
    if parts.username or parts.password:
        raise ValidationError("url must not hold a user name or password", "url")
    return scheme, host, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeAddress(f"url's host does not resolve ({exc})", "url") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_address(url: str, production: bool) -> str:
    """Resolve the URL's host once and return the address to connect to, or refuse the URL.

    In production every address the name resolves to must be public (one private answer is
    enough to refuse); elsewhere `http` must resolve to loopback only.
    """
    scheme, host, port = _host_of(url)
    if production and scheme != "https":
        raise ValidationError("url must be an https URL", "url")
    addresses = resolve(host, port)
    if not addresses:
        raise UnsafeAddress("url's host does not resolve", "url")
    for address in addresses:
        if production:
            reason = refusal_reason(address)
            if reason:
                raise UnsafeAddress(f"url resolves to {reason}, which is refused", "url")
        elif scheme == "http" and not ipaddress.ip_address(address.split("%", 1)[0]).is_loopback:
            raise ValidationError("url must be https (http only to a loopback address)", "url")
    return addresses[0]


def check_registration(url: str, production: bool) -> None:
    """Refuse a URL events could never go to, when it is registered.

    Production resolves the host now and refuses a private address. Elsewhere an https host need
    not resolve yet (a receiver is often registered before its DNS exists): it is resolved, and
    checked, at each send like every URL.
    """
    scheme, _, _ = _host_of(url)
    if production or scheme == "http":
        check_address(url, production)


def sign(event_id: str, timestamp: datetime, body: str, secrets: Sequence[str]) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret, space-separated."""
    at = timestamp.astimezone(UTC)
    return " ".join(Webhook(secret).sign(event_id, at, body) for secret in secrets)


@dataclass(frozen=True)
class OutgoingEvent:
    """One event to POST: where, its id and JSON body, the secrets that sign it, and when."""

    url: str
    event_id: str
    body: str
    secrets: Sequence[str]
    timestamp: datetime

    def headers(self) -> dict[str, str]:
        """The Standard Webhooks headers and the content type."""
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": self.event_id,
            "webhook-timestamp": str(int(self.timestamp.timestamp())),
            "webhook-signature": sign(self.event_id, self.timestamp, self.body, self.secrets),
        }


@dataclass(frozen=True)
class AttemptResult:
    """What one POST came to: a 2xx in time (`ok`), another status, or an error without one."""

    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    response_body: str | None = None


class EventSender(Protocol):
    """What the event workers need from a sender."""

    def post(self, event: OutgoingEvent) -> AttemptResult:
        """POST the event once; never raise for anything the receiver or network does."""
        ...

    def close(self) -> None:
        """Release pooled connections."""
        ...


class PinnedAdapter(HTTPAdapter):
    """Connects to the address in the URL while TLS checks the name the request carries.

    The request's URL names the resolved IP; `request.pinned_hostname` (set by `HttpEventSender`)
    is the original host, used for SNI and the certificate check.
    """

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        hostname = getattr(request, "pinned_hostname", None)
        if hostname and host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs


def describe_error(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed POST, kept with the attempt (no URL, no headers)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"could not connect within {timeout:g} s"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake or certificate check failed"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "could not connect (connection refused or reset)"
    return f"request failed ({type(exc).__name__})"


class HttpEventSender:
    """POSTs events with `requests`: pinned address, explicit timeout, no redirects, 1 KiB read."""

    def __init__(
        self, timeout: float, production: bool, pool_size: int = 10, verify: bool | str = True
    ) -> None:
        self.timeout = timeout
        self.production = production
        self.verify = verify  # True (the system's CAs) or a CA bundle's path (tests)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or .netrc from the environment
        adapter = PinnedAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def post(self, event: OutgoingEvent) -> AttemptResult:
        """POST the event once and describe the outcome; refused addresses are never connected."""
        started = time.monotonic()
        try:
            address = check_address(event.url, self.production)
        except ValidationError as exc:
            return AttemptResult(False, None, f"refused: {exc.message}", _ms(started))
        parts = urlsplit(event.url)
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        pinned_url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = event.headers()
        headers["host"] = parts.netloc.rpartition("@")[2]
        request = requests.Request("POST", pinned_url, headers=headers, data=event.body.encode())
        prepared = self.session.prepare_request(request)
        prepared.pinned_hostname = parts.hostname  # type: ignore[attr-defined]
        try:
            response = self.session.send(
                prepared,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
                stream=True,
                verify=self.verify,
            )
            try:
                raw = response.raw.read(MAX_RESPONSE_BODY, decode_content=True) or b""
            finally:
                response.close()
        except (requests.exceptions.RequestException, OSError) as exc:
            error = describe_error(exc, self.timeout)
            logger.info("event post failed: %s", error, extra={"event_id": event.event_id})
            return AttemptResult(False, None, error, _ms(started))
        duration = _ms(started)
        body = raw[:MAX_RESPONSE_BODY].decode("utf-8", errors="replace") or None
        status = response.status_code
        if duration > self.timeout * 1000:
            return AttemptResult(
                False, status, f"answered after {self.timeout:g} s", duration, body
            )
        ok = 200 <= status < 300
        return AttemptResult(ok, status, None if ok else f"HTTP {status}", duration, body)

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
