"""The `bridge` command: output scripts can read, exit codes they can trust, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import inspect, select, update
from sqlalchemy.orm import Session

from bridge.db import make_engine, utcnow
from bridge.keys import authenticate
from bridge.messages import Draft, post_message
from bridge.models import ApiKey, InboundSms, Message, Organization
from bridge.organizations import sender_numbers
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from bridge.threads import create_thread
from tests import factories
from webhooks import create_app
from webhooks.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(cli, list(args))


def test_org_create_prints_its_id_and_a_working_api_key(app: Flask, session: Session) -> None:
    result = run(
        app,
        "org",
        "create",
        "Acme Logistics",
        "--sender",
        "+14155550100",
        "--sender",
        "(628) 555-0199",
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"id", "api_key"}
    org = authenticate(session, printed["api_key"])
    assert org is not None and org.id == printed["id"] and org.name == "Acme Logistics"
    assert sender_numbers(session, org.id) == ["+14155550100", "+16285550199"]


def test_org_create_keeps_a_messaging_service_sid(app: Flask, session: Session) -> None:
    sid = "MG" + "ab" * 16
    result = run(app, "org", "create", "Acme", "--messaging-service-sid", sid)
    assert result.exit_code == 0, result.output
    org = session.get_one(Organization, json.loads(result.stdout)["id"])
    assert org.messaging_service_sid == sid


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["org", "create", "Acme", "--sender", "+1555"], ["--sender", "'+1555'"]),
        (["org", "create", "Acme", "--sender", "hello"], ["--sender", "'hello'"]),
        (
            ["org", "create", "Acme", "--messaging-service-sid", "MG123"],
            ["--messaging-service-sid", "MG123"],
        ),
        (["org", "create", "  "], ["NAME"]),
        (["org", "create"], ["NAME"]),
        (["org", "add-sender", "org_x", "+1 nope"], ["PHONE", "'+1 nope'"]),
        (
            ["sms", "simulate", "--from", "+14155550123", "--to", "555", "--body", "x"],
            ["--to", "'555'"],
        ),
        (
            ["sms", "simulate", "--from", "+1 222", "--to", "+14155550100", "--body", "x"],
            ["--from", "'+1 222'"],
        ),
        (["sms", "simulate", "--from", "+14155550123", "--to", "+14155550100"], ["--body"]),
    ],
)
def test_bad_arguments_exit_2_and_name_what_is_wrong(
    app: Flask, session: Session, args: list[str], named: list[str]
) -> None:
    result = run(app, *args)
    assert result.exit_code == 2, result.output
    for word in named:
        assert word in result.output
    assert result.stdout == "" or "Usage" in result.stdout
    assert session.execute(select(Organization)).first() is None


def test_add_sender_adds_to_the_pool_and_refuses_an_unknown_organization(
    app: Flask, session: Session, settings: Settings
) -> None:
    org, _ = factories.organization(session, settings)
    session.commit()
    result = run(app, "org", "add-sender", org.id, "+16285550142")
    assert result.exit_code == 0, result.output
    assert "+16285550142" in json.loads(result.stdout)["senders"]

    missing = run(app, "org", "add-sender", "org_000000000000000000000000", "+16285550143")
    assert missing.exit_code == 1
    assert "no such organization" in missing.output


def test_a_sender_of_another_organization_is_a_conflict_exit_1(
    app: Flask, session: Session, settings: Settings
) -> None:
    first = run(app, "org", "create", "First", "--sender", "+16285550150")
    assert first.exit_code == 0
    second = run(app, "org", "create", "Second", "--sender", "+16285550150")
    assert second.exit_code == 1
    assert "another organization" in second.output
    assert len(session.execute(select(Organization)).all()) == 1


def test_org_create_key_and_revoke_key(app: Flask, session: Session, settings: Settings) -> None:
    org, first = factories.organization(session, settings)
    session.commit()
    created = run(app, "org", "create-key", org.id, "--label", "deploy 2")
    assert created.exit_code == 0, created.output
    printed = json.loads(created.stdout)
    assert set(printed) == {"id", "api_key"}
    found = authenticate(session, printed["api_key"])
    assert found is not None and found.id == org.id
    assert session.get_one(ApiKey, printed["id"]).label == "deploy 2"
    default = session.scalars(select(ApiKey.id).where(ApiKey.label == "default")).one()
    session.commit()  # SQLite: an open transaction would hold the write lock the command needs

    # The operator may revoke any key, the last one too (the API refuses that one).
    for key_id in [printed["id"], default]:
        revoked = run(app, "org", "revoke-key", key_id)
        assert revoked.exit_code == 0, revoked.output
        assert json.loads(revoked.stdout)["id"] == key_id
    session.expire_all()
    assert authenticate(session, printed["api_key"]) is None
    assert authenticate(session, first) is None
    session.commit()

    for args in (["revoke-key", "key_nope"], ["create-key", "org_nope"]):
        missing = run(app, "org", *args)
        assert missing.exit_code == 1
        assert "no such" in missing.output


def test_db_upgrade_creates_the_schema_in_an_empty_database(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    with Runtime(load_settings({}, database_url=url, redis_url=redis_url)) as rt:
        result = run(create_app(runtime=rt), "db", "upgrade")
        assert result.exit_code == 0, result.output
        again = run(create_app(runtime=rt), "db", "upgrade")
        assert again.exit_code == 0
    engine = make_engine(url)
    assert {"organizations", "deliveries", "inbound_sms", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_db_upgrade_says_the_database_is_unreachable_and_exits_1(
    tmp_path: Path, redis_url: str
) -> None:
    from tests.services import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    with Runtime(load_settings({}, database_url=url, redis_url=redis_url)) as rt:
        result = run(create_app(runtime=rt), "db", "upgrade")
    assert result.exit_code == 1
    assert "database did not answer" in result.output


def test_sweep_publishes_what_is_due_and_prints_its_counts(
    app: Flask, session: Session, settings: Settings, redis_client: object
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    contact = factories.contact(session, settings, org)
    thread, _ = create_thread(session, settings, actor, "order-7", subscribers=[contact.id])
    posted = post_message(
        session,
        settings,
        actor,
        thread.id,
        Draft.of("Pickup tomorrow", publish_to_channel_at=int(utcnow().timestamp()) + 60),
    )
    session.commit()
    session.execute(
        update(Message)
        .where(Message.id == posted.message.id)
        .values(publish_to_channel_at=utcnow() - timedelta(minutes=1))
        .execution_options(synchronize_session=False)
    )
    session.commit()

    result = run(app, "sweep")

    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["published"] == 1
    assert all(isinstance(value, int) for value in counts.values())
    assert json.loads(run(app, "sweep").stdout)["published"] == 0


def test_sms_simulate_posts_a_signed_sms_and_prints_the_twiml(
    app: Flask, server_url: str, session: Session, settings: Settings, redis_client: object
) -> None:
    org, _ = factories.organization(session, settings)
    session.commit()
    [number] = sender_numbers(session, org.id)
    session.commit()  # SQLite: an open transaction would hold the write lock the server needs

    result = run(
        app,
        "sms",
        "simulate",
        "--from",
        "+14155550123",
        "--to",
        number,
        "--body",
        "HELP",
        "--url",
        server_url,
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<?xml")
    assert "<Message>" in result.stdout and "Acme Logistics" in result.stdout
    [record] = session.execute(select(InboundSms)).scalars()
    assert record.from_phone == "+14155550123"


def test_sms_simulate_from_an_unknown_number_is_kept_unmatched(
    app: Flask, server_url: str, session: Session, settings: Settings, redis_client: object
) -> None:
    org, _ = factories.organization(session, settings)
    session.commit()
    [number] = sender_numbers(session, org.id)
    session.commit()  # SQLite: an open transaction would hold the write lock the server needs
    media = "https://example.com/photo.jpg"
    result = run(
        app,
        "sms",
        "simulate",
        "--from",
        "+14155550124",
        "--to",
        number,
        "--body",
        "hi",
        "--media",
        media,
        "--url",
        server_url,
    )
    assert result.exit_code == 0, result.output
    assert "<Response" in result.stdout
    factories.run_inbound_jobs(app.extensions["bridge"])  # the worker's part: matching
    [record] = session.execute(select(InboundSms)).scalars()
    assert record.status == "unmatched"


def test_sms_simulate_signed_with_the_wrong_key_is_refused_exit_1(
    settings: Settings, server_url: str, runtime: Runtime
) -> None:
    # The test server checks webhooks with its TWILIO_AUTH_TOKEN (its PUBLIC_BASE_URL is public).
    wrong = create_app(
        runtime=Runtime(
            settings.model_copy(update={"twilio_auth_token": "not-the-servers-token-0123"})
        )
    )
    result = run(
        wrong,
        "sms",
        "simulate",
        "--from",
        "+14155550123",
        "--to",
        "+14155550100",
        "--body",
        "x",
        "--url",
        server_url,
    )
    assert result.exit_code == 1
    assert "403" in result.output
    assert "signed the SMS for https://bridge.example.com/twilio/sms with TWILIO_AUTH_TOKEN" in (
        result.output
    )


def test_sms_simulate_against_a_server_with_another_public_base_url_says_why_it_got_403(
    settings: Settings, server_url: str, runtime: Runtime, session: Session
) -> None:
    # The server checks signatures for https://bridge.example.com; the CLI signs for another URL.
    elsewhere = settings.model_copy(update={"public_base_url": "http://localhost:5001"})
    result = run(
        create_app(runtime=Runtime(elsewhere)),
        "sms", "simulate", "--from", "+14155550123", "--to", "+14155550100", "--body", "x",
        "--url", server_url,
    )  # fmt: skip
    assert result.exit_code == 1
    assert (
        "Error: the server answered 403: it did not accept the request's Twilio signature."
        in result.stderr.splitlines()
    )
    assert "signed the SMS for http://localhost:5001/twilio/sms" in result.stderr
    assert "against its own PUBLIC_BASE_URL" in result.stderr
    assert f"--url only says where to post: {server_url}/twilio/sms" in result.stderr
    assert "Traceback" not in result.output
    assert session.execute(select(InboundSms)).first() is None


def test_the_help_shows_the_bridges_options_not_flasks() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "bridge"), "--help"],
        env=os.environ | {"BRIDGE_ENV": "production"},  # the help needs no settings at all
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for flask_option in ["--env-file", "--app", "--debug", "--version", "-A", "-e"]:
        assert flask_option not in done.stdout
    assert done.stdout.startswith("Usage: bridge [OPTIONS] COMMAND [ARGS]...")
    for command in ["db", "org", "sms", "sweep"]:
        assert f"  {command} " in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["org", "create", "Acme", "--sender", "555"],  # a short code
        ["org", "create", "Acme", "--sender", "+1555"],
        ["org", "create", "Acme", "--sender", "MyShop"],  # an alphanumeric sender id
        ["org", "add-sender", "org_x", "12345"],
    ],
)
def test_a_wrong_sender_says_what_a_sender_must_be(
    app: Flask, session: Session, args: list[str]
) -> None:
    result = run(app, *args)
    assert result.exit_code == 2, result.output
    assert "is not a sender number: give a phone number of your Twilio account" in result.output
    assert "contact" not in result.output
    assert "Messaging Service" in result.output


def test_sms_simulate_to_a_server_that_is_not_there_exits_1(app: Flask) -> None:
    from tests.services import free_port

    result = run(
        app, "sms", "simulate", "--from", "+14155550123", "--to", "+14155550100", "--body", "x",
        "--url", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "cannot reach" in result.output


def test_the_console_script_exits_2_on_an_invalid_phone_and_0_on_success(
    sqlite_url: str, redis_url: str
) -> None:
    bridge = str(Path(sys.executable).parent / "bridge")
    env = {**os.environ, "DATABASE_URL": sqlite_url, "REDIS_URL": redis_url}
    bad = subprocess.run(
        [bridge, "org", "create", "Acme", "--sender", "+1555"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "'+1555'" in bad.stderr and bad.stdout == ""

    good = subprocess.run(
        [bridge, "org", "create", "Acme CLI", "--sender", "+16285550177"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["id"].startswith("org_")
