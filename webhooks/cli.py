"""The `bridge` command: migrations, organizations, a simulated inbound SMS, the sweeper on demand.

Results go to stdout as JSON (or TwiML for `sms simulate`); messages for people go to stderr.
Exit codes: 0 done; 1 the command could not do it (a store down, a conflict, the server said no);
2 the arguments are wrong (click's usage errors, an invalid phone number or SID).
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup, ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from bridge.db import epoch, transaction
from bridge.errors import BridgeError, ConfigurationError, ValidationError
from bridge.keys import issue_api_key, revoke_any_api_key
from bridge.migrate import upgrade
from bridge.organizations import add_sender, create_organization, get_organization, sender_numbers
from bridge.phones import classify_sender, normalize_phone
from bridge.settings import Settings
from bridge.twilio_webhooks import signing_token
from webhooks import create_app
from webhooks.context import runtime

_MESSAGING_SERVICE_SID = re.compile(r"\AMG[0-9a-fA-F]{32}\Z")
SIMULATE_TIMEOUT = 15.0


def _create_app() -> Flask:
    try:
        return create_app()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


class BridgeGroup(AppGroup):
    """A click group whose commands run in the app built from the environment.

    Not Flask's `FlaskGroup`: its `--app`, `--env-file` and `--debug`, `.env` files, `FLASK_*`
    variables and plugin commands have no use here, and it builds the app just to list commands.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # A caller may bring its own app (Flask's test runner does); otherwise the environment's.
        extra.setdefault("obj", ScriptInfo(create_app=_create_app, set_debug_flag=False))
        return super().make_context(info_name, args, parent, **extra)


cli = BridgeGroup(
    name="bridge",
    help="Operate the SMS bridge (settings come from the environment, as for the web process).",
)


def emit(value: Any) -> None:
    """Print one JSON document on stdout (what scripts read)."""
    click.echo(json.dumps(value, default=str))


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn the domain's and the database's errors into clean messages and exit code 1."""
    try:
        yield
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint=_option(exc.param)) from exc
    except BridgeError as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc
    except SQLAlchemyError as exc:
        # The driver's text can hold the statement's parameters; its type says enough.
        raise click.ClickException(f"the database did not answer ({type(exc).__name__})") from exc


def _option(param: str | None) -> str | None:
    return f"--{param.replace('_', '-')}" if param else None


def _phone(region: str, value: str, hint: str) -> str:
    try:
        return normalize_phone(value, region, param=hint.lstrip("-").lower())
    except ValidationError as exc:
        raise click.BadParameter(f"{value!r}: {exc.message}", param_hint=hint) from None


def _sender(region: str, value: str, hint: str) -> str:
    # The phone-number messages speak of contacts; a sender is a number of the Twilio account.
    try:
        return normalize_phone(value, region, param="sender")
    except ValidationError:
        raise click.BadParameter(
            f"{value!r} is not a sender number: give a phone number of your Twilio account in "
            f"E.164 (+ and the country code) or in the national format of {region}. Short codes "
            "and alphanumeric sender ids send through a Messaging Service (--messaging-service-sid "
            "of org create).",
            param_hint=hint,
        ) from None


def _settings() -> Settings:
    return runtime().settings


# --- db -----------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations (the Procfile's release phase runs this)."""
    with store_errors():
        upgrade(runtime().engine)
    click.echo("database schema is up to date", err=True)


# --- org ----------------------------------------------------------------------------------------


@cli.group()
def org() -> None:
    """Organizations, their sender numbers and API keys."""


@org.command("create")
@click.argument("name")
@click.option(
    "--sender",
    "senders",
    multiple=True,
    metavar="+1...",
    help="A sender number (E.164); repeat for a pool.",
)
@click.option(
    "--messaging-service-sid", metavar="MG...", help="Send through this Twilio Messaging Service."
)
def org_create(name: str, senders: tuple[str, ...], messaging_service_sid: str | None) -> None:
    """Create an organization and print its id and API key (shown this once) as JSON."""
    region = _settings().default_region
    numbers = [_sender(region, sender, "--sender") for sender in senders]
    if messaging_service_sid is not None and not _MESSAGING_SERVICE_SID.match(
        messaging_service_sid
    ):
        raise click.BadParameter(
            f"{messaging_service_sid!r} is not a Messaging Service SID (MG and 32 hex digits)",
            param_hint="--messaging-service-sid",
        )
    if not name.strip():
        raise click.BadParameter("must not be empty", param_hint="NAME")
    with store_errors(), transaction(runtime().sessions) as session:
        created = create_organization(
            session, _settings(), name, numbers, messaging_service_sid=messaging_service_sid
        )
    emit({"id": created.organization.id, "api_key": created.api_key})


@org.command("add-sender")
@click.argument("organization_id")
@click.argument("phone")
def org_add_sender(organization_id: str, phone: str) -> None:
    """Add a sender number to an organization's pool and print its senders as JSON."""
    number = _sender(_settings().default_region, phone, "PHONE")
    with store_errors(), transaction(runtime().sessions) as session:
        get_organization(session, organization_id)
        add_sender(session, _settings(), organization_id, number)
        numbers = sender_numbers(session, organization_id)
    emit({"id": organization_id, "senders": numbers})


@org.command("create-key")
@click.argument("organization_id")
@click.option("--label", default=None, help="What the key is for (e.g. where it is deployed).")
def org_create_key(organization_id: str, label: str | None) -> None:
    """Create another API key for an organization; print its id and the key (shown this once)."""
    with store_errors(), transaction(runtime().sessions) as session:
        get_organization(session, organization_id)
        new = issue_api_key(session, organization_id, label)
    emit({"id": new.row.id, "api_key": new.api_key})


@org.command("revoke-key")
@click.argument("key_id")
def org_revoke_key(key_id: str) -> None:
    """Revoke an API key at once, even an organization's last; print it and when (epoch seconds)."""
    with store_errors(), transaction(runtime().sessions) as session:
        key = revoke_any_api_key(session, key_id)
    emit(
        {"id": key.id, "organization_id": key.organization_id, "revoked_at": epoch(key.revoked_at)}
    )


# --- sms ----------------------------------------------------------------------------------------


@cli.group()
def sms() -> None:
    """Try the SMS paths without a phone."""


@sms.command("simulate")
@click.option("--from", "from_", required=True, metavar="+1...", help="The contact's number.")
@click.option("--to", required=True, metavar="+1...", help="The organization's sender number.")
@click.option("--body", required=True, help="The SMS text.")
@click.option(
    "--media", multiple=True, metavar="URL", help="A media URL (MMS); repeat for several."
)
@click.option(
    "--url", "base_url", metavar="BASE", help="The running server (default: PUBLIC_BASE_URL)."
)
def sms_simulate(
    from_: str, to: str, body: str, media: tuple[str, ...], base_url: str | None
) -> None:
    """Post a correctly signed inbound SMS to a running server and print its TwiML answer."""
    settings = _settings()
    sender = _simulated_from(from_, settings.default_region)
    recipient = _phone(settings.default_region, to, "--to")
    for url in media:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--media")
    params = inbound_params(settings, sender, recipient, body, list(media))
    # The server checks the signature against PUBLIC_BASE_URL, whatever address we reach it by.
    signed_url = settings.public_base_url + "/twilio/sms"
    post_url = (base_url or settings.public_base_url).rstrip("/") + "/twilio/sms"
    signature = sign(settings, signed_url, params)
    status, answer = post_form(post_url, params, {"X-Twilio-Signature": signature})
    if status == 403:
        raise click.ClickException(refused_signature(settings, signed_url, post_url))
    if not 200 <= status < 300:
        click.echo(answer, err=True)
        raise click.ClickException(f"the server answered {status}")
    click.echo(answer)


def refused_signature(settings: Settings, signed_url: str, post_url: str) -> str:
    """Why a server answers 403 to `sms simulate`, and how to make it accept the SMS."""
    secret = "TWILIO_AUTH_TOKEN" if settings.twilio_auth_token else "SECRET_KEY"
    lines = [
        "the server answered 403: it did not accept the request's Twilio signature.",
        f"This command signed the SMS for {signed_url} with {secret}; the server checks the",
        "signature against its own PUBLIC_BASE_URL and its TWILIO_AUTH_TOKEN (SECRET_KEY when",
        "that is unset). Run this command with the server's settings, e.g.",
        f"  PUBLIC_BASE_URL=http://localhost:5001 {secret}=... bridge sms simulate ...",
    ]
    if not post_url.startswith(settings.public_base_url + "/"):
        lines.append(
            f"(--url only says where to post: {post_url}; the signature still follows "
            f"PUBLIC_BASE_URL, {settings.public_base_url})"
        )
    return "\n".join(lines)


def _simulated_from(value: str, region: str) -> str:
    # Short codes and alphanumeric senders are legitimate `From`s (stored unmatched): pass them on.
    kind = classify_sender(value, region)
    if kind == "e164":
        return normalize_phone(value, region)
    if kind in ("short_code", "alphanumeric"):
        return value.strip()
    return _phone(region, value, "--from")


def sign(settings: Settings, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for this POST."""
    from twilio.request_validator import RequestValidator

    return str(RequestValidator(signing_token(settings)).compute_signature(url, params))


def inbound_params(
    settings: Settings, from_: str, to: str, body: str, media: list[str]
) -> dict[str, str]:
    """The form fields of an inbound SMS webhook, shaped like Twilio's."""
    sid = "SM" + secrets.token_hex(16)
    params = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media)),
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": to,
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": settings.twilio_account_sid or "AC" + "0" * 32,
        "From": from_,
        "ApiVersion": "2010-04-01",
    }
    for index, url in enumerate(media):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = mimetypes.guess_type(url)[0] or "image/jpeg"
    return params


def post_form(url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    """POST a form and return (status, body); an unreachable server is a clean error."""
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=SIMULATE_TIMEOUT) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"cannot reach {url}: {reason}") from exc


# --- sweep --------------------------------------------------------------------------------------


@cli.command()
def sweep() -> None:
    """Run the sweeper once (what the worker does every SWEEP_INTERVAL) and print its counts."""
    from workers.enqueue import sweep_now  # the one command that needs the worker side

    with store_errors():
        counts = sweep_now(runtime())
    emit(_plain(counts))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "_asdict"):
        return value._asdict()
    return value


if __name__ == "__main__":
    cli()
