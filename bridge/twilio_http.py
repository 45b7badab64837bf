"""twilio-python's HTTP side, made fit for us: a base URL for a stand-in, a timeout, quiet logs.

`build_twilio_client(settings)` gives the REST client `bridge.twilio_client.TwilioSender` sends
through, or None when Twilio is not configured.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bridge.settings import Settings

# The adapter's log lines keep the adapter's logger name, wherever in it they are written.
logger = logging.getLogger("bridge.twilio_client")

TWILIO_API_BASE_URL = "https://api.twilio.com"
_ACCOUNT_IN_PATH = re.compile(r"/Accounts/AC[0-9a-fA-F]+")


class RedirectingHttpClient(TwilioHttpClient):
    """twilio-python's HTTP client, sending `*.twilio.com` requests to `base_url`, with a timeout.

    With `base_url` None requests go to Twilio itself. Logging names the method and the path (the
    account SID masked), never the query string, which carries phone numbers on list requests.
    """

    def __init__(self, base_url: str | None, timeout: float, pool_size: int = 10) -> None:
        super().__init__(pool_connections=True, timeout=timeout, logger=logger)
        self.base_url = base_url.rstrip("/") if base_url else None
        # twilio-python only sizes the https pool; a local stand-in speaks http. No retries here:
        # a retried POST could send the SMS twice, and the worker owns retrying.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        assert self.session is not None
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # requests reads proxies and CA bundle from the environment at every request, a walk
        # through all of os.environ that was a sixth of a send's CPU: read them once, here.
        self.session.proxies = get_environ_proxies(self.base_url or TWILIO_API_BASE_URL)
        self.session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self.session.trust_env = False

    def redirect(self, url: str) -> str:
        """Swap scheme and host of a `*.twilio.com` URL for the base URL, keeping path and query."""
        if self.base_url is None:
            return url
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host != "twilio.com" and not host.endswith(".twilio.com"):
            return url
        base = urlsplit(self.base_url)
        return urlunsplit(
            (base.scheme, base.netloc, base.path + parts.path, parts.query, parts.fragment)
        )

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request to the redirected URL, with the client's timeout unless given one."""
        return super().request(
            method,
            self.redirect(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )

    def log_request(self, kwargs: dict[str, Any]) -> None:
        """Log the method and the path only (no query string, no headers)."""
        path = _ACCOUNT_IN_PATH.sub("/Accounts/AC…", urlsplit(kwargs["url"]).path)
        self.logger.debug("twilio request %s %s", kwargs["method"], path)

    def log_response(self, status_code: int, response: Any) -> None:
        """Log the HTTP status only."""
        self.logger.debug("twilio response %s", status_code)

    def close(self) -> None:
        """Close the pooled connections."""
        if self.session is not None:
            self.session.close()


def build_twilio_client(settings: Settings) -> Client | None:
    """Build the Twilio REST client from the settings, or None when Twilio is not configured."""
    if not settings.twilio_configured:
        return None
    base_url = settings.twilio_api_base_url
    http_client = RedirectingHttpClient(
        None if base_url == TWILIO_API_BASE_URL else base_url,
        timeout=settings.twilio_timeout,
        pool_size=max(10, settings.send_concurrency),
    )
    return Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=http_client,
        # An empty mapping would make twilio-python fall back to os.environ; the settings are the
        # only source of configuration, so hand it one that names no edge and no region.
        environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
    )
