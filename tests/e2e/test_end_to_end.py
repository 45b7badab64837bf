"""The whole service as it runs on a platform: the Procfile's release, web and worker lines as real
processes over real PostgreSQL and Redis, sending to the Twilio stand-in, driven by the CLI and the
API. One conversation goes out, a reply comes in and is relayed, statuses come back; then the
processes stop on SIGTERM, and nothing they logged holds a phone number, a message text or a secret.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import BIN, Process, answers, environment, http, procfile, wait_for
from tests.services import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    postgres_admin_url,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ACCOUNT_SID = "AC" + "e2e0" * 8
SENDER = "+16285550147"
ANN = "+14155550161"
BOB = "+14155550162"
OUTBOUND_TEXT = "Your parcel 7 leaves the depot at noon"
REPLY_TEXT = "Please leave it with the neighbour"


@dataclass
class Stack:
    env: dict[str, str]
    base: str
    standin: str
    logs: Path
    secrets: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    cli_stderr: list[str] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        """Run `bridge ...` as an operator would; its stderr joins the logs under test."""
        done = subprocess.run(
            [str(BIN / "bridge"), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        self.cli_stderr.append(done.stderr)
        assert done.returncode == 0, f"bridge {args[0]} exited {done.returncode}: {done.stderr}"
        return done.stdout

    def api(self, method: str, path: str, body: Any = None, key: str = "") -> tuple[int, Any]:
        return http(method, self.base + path, body, {"Authorization": f"Bearer {key}"})

    def standin_messages(self) -> list[dict[str, Any]]:
        return list(http("GET", self.standin + "/_standin/messages")[1]["messages"])


def _database() -> Iterator[str]:
    admin = postgres_admin_url()
    if admin is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but PostgreSQL does not answer")
        pytest.skip("PostgreSQL is not reachable (set DATABASE_TEST_URL)")
    name = f"bridge_e2e_{os.getpid()}"
    yield create_postgres_database(admin, name)
    drop_postgres_database(admin, name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Release, then web (gunicorn, two workers) and worker, with the stand-in as Twilio."""
    tmp = tmp_path_factory.mktemp("e2e")
    logs = tmp / "logs"
    logs.mkdir()
    database = _database()
    database_url = next(database)
    redis = RedisServer().start()
    values = {
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "SECRET_KEY": "e2e-secret-" + secrets.token_hex(12),
        "PHONE_HASH_KEY": "e2e-phone-hash-" + secrets.token_hex(12),
        "METRICS_TOKEN": "e2e-metrics-" + secrets.token_hex(12),
    }
    standin_port, web_port = free_port(), free_port()
    standin = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standin.twilio",
            "--port",
            str(standin_port),
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            values["TWILIO_AUTH_TOKEN"],
            "--auto-callbacks",
            "sent,delivered",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment(),
    )
    assert standin.stdout is not None
    standin_url = standin.stdout.readline().strip()
    base = f"http://127.0.0.1:{web_port}"
    env = environment(
        # Production's secrets and PostgreSQL, but over loopback http, which production refuses.
        BRIDGE_ENV="test",
        DATABASE_URL=database_url,
        REDIS_URL=redis.url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_API_BASE_URL=standin_url,
        PUBLIC_BASE_URL=base,
        PORT=str(web_port),
        WEB_CONCURRENCY="2",
        SEND_RATE_PER_SENDER="20",
        SWEEP_INTERVAL="1",
        QUIET_HOURS="",
        BRIDGE_INSTANCE_DIR=str(tmp / "instance"),
        # One folder for web and worker, as on one machine: /metrics then shows the worker's sends.
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
        **values,
    )
    (tmp / "metrics").mkdir()
    lines = procfile()
    stack = Stack(env, base, standin_url, logs, values)
    try:
        release = Process("release", lines["release"], env, logs)
        assert release.popen.wait(60) == 0, release.output()
        release.kill()
        stack.processes["release"] = release
        stack.processes["web"] = Process("web", lines["web"], env, logs)
        stack.processes["worker"] = Process("worker", lines["worker"], env, logs)
        wait_for("the web process to be ready", lambda: answers(base + "/readyz") == 200)
        yield stack
    finally:
        for process in stack.processes.values():
            process.kill()
        standin.terminate()
        standin.wait(10)
        standin.stdout.close()
        redis.stop()
        next(database, None)


def _at_least(count: int, items: list[Any]) -> list[Any] | None:
    return items if len(items) >= count else None


def _sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(re.escape(f"{name}{{{wanted}}}") + r" (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_a_conversation_goes_out_comes_back_and_is_relayed(stack: Stack) -> None:
    # An organization, from the CLI.
    created = json.loads(stack.cli("org", "create", "Acme Parcels", "--sender", SENDER))
    key = created["api_key"]

    # A thread about a parcel with two contacts, through the API; a message to both.
    status, thread = stack.api(
        "POST",
        "/v1/threads",
        {
            "resource_id": "parcel-7",
            "name": "Parcel 7",
            "subscribers": [
                {"type": "contact", "phone": ANN, "name": "Ann Ames"},
                {"type": "contact", "phone": BOB, "name": "Bob Burr"},
            ],
        },
        key,
    )
    assert status == 201, thread
    ann = next(s["id"] for s in thread["subscribers"] if s.get("phone") == ANN)
    status, message = stack.api(
        "POST", f"/v1/threads/{thread['id']}/messages", {"text": OUTBOUND_TEXT}, key
    )
    assert status == 201, message

    # Two SMS at Twilio, one per contact, from the organization's number.
    sent = wait_for(
        "two SMS at the stand-in",
        lambda: _at_least(2, [m for m in stack.standin_messages() if m["body"] == OUTBOUND_TEXT]),
    )
    assert sorted(m["to"] for m in sent) == [ANN, BOB]
    assert {m["from"] for m in sent} == {SENDER}

    # Status callbacks bring both deliveries to `delivered`.
    def deliveries(message_id: str) -> list[dict[str, Any]]:
        return list(stack.api("GET", f"/v1/messages/{message_id}/deliveries", key=key)[1]["data"])

    wait_for(
        "the outbound deliveries to be delivered",
        lambda: [d["status"] for d in deliveries(message["id"])] == ["delivered", "delivered"],
    )

    # Ann answers by SMS (simulated, signed like Twilio).
    twiml = stack.cli(
        "sms", "simulate", "--from", ANN, "--to", SENDER, "--body", REPLY_TEXT, "--url", stack.base
    )
    assert "<Response" in twiml

    # The reply is in the thread and in the channel, authored by Ann...
    status, thread = stack.api("GET", f"/v1/threads/{thread['id']}", key=key)
    reply = next(m for m in thread["recent_messages"] if m["text"] == REPLY_TEXT)
    assert reply["subscriber_id"] == ann
    status, channel = stack.api(
        "GET", f"/v1/channels/{reply.get('channel_id') or message['channel_id']}", key=key
    )
    assert status == 200, channel
    assert REPLY_TEXT in [m["text"] for m in channel["recent_messages"]]

    # ...and relayed to Bob only, with Ann's name in front, then delivered too.
    relayed = wait_for(
        "the reply relayed to Bob",
        lambda: [m for m in stack.standin_messages() if REPLY_TEXT in m["body"]],
    )
    assert [(m["to"], m["from"]) for m in relayed] == [(BOB, SENDER)]
    assert relayed[0]["body"].startswith("Ann")
    wait_for(
        "the relayed delivery to be delivered",
        lambda: [d["status"] for d in deliveries(reply["id"])] == ["delivered"],
    )

    # The operator's view agrees, summed across gunicorn's workers and the RQ worker.
    status, text = http(
        "GET",
        stack.base + "/metrics",
        headers={"Authorization": f"Bearer {stack.secrets['METRICS_TOKEN']}"},
    )
    assert status == 200
    assert _sample(text, "bridge_deliveries", state="delivered") == 3
    assert _sample(text, "bridge_inbound_sms_total", outcome="matched") == 1
    assert _sample(text, "bridge_sends_total", result="sent") == 3
    assert http("GET", stack.base + "/metrics")[0] == 401


def test_the_processes_stop_on_sigterm(stack: Stack) -> None:
    web, worker = stack.processes["web"], stack.processes["worker"]
    assert web.popen.poll() is None and worker.popen.poll() is None, "a process died during the run"
    assert web.terminate() == 0, web.output()[-2000:]
    assert worker.terminate() == 0, worker.output()[-2000:]
    assert answers(stack.base + "/healthz") is None


def test_no_log_line_holds_a_phone_number_a_message_text_or_a_secret(stack: Stack) -> None:
    for process in stack.processes.values():
        if process.popen.poll() is None:
            process.terminate()
    outputs = {name: p.output() for name, p in stack.processes.items()}
    outputs["cli"] = "\n".join(stack.cli_stderr)
    assert '"request_id"' in outputs["web"], "the web process logged no request"
    assert outputs["worker"], "the worker logged nothing"
    forbidden = {
        **{f"phone {n}": n for n in (SENDER, ANN, BOB)},
        **{f"national {n}": n[2:] for n in (SENDER, ANN, BOB)},
        "outbound text": OUTBOUND_TEXT,
        "reply text": REPLY_TEXT,
        "reply words": "neighbour",
        **stack.secrets,
        "api key": "brk_",
    }
    for name, output in outputs.items():
        for what, value in forbidden.items():
            if what == "api key":
                assert not re.search(r"brk_(?!\[redacted\])", output), f"{name} logged an API key"
            else:
                assert value not in output, f"{name} logged the {what}"
    # Web and worker write one JSON object per line.
    for name in ("web", "worker"):
        for line in outputs[name].splitlines():
            if line.strip():
                assert isinstance(json.loads(line), dict), f"{name}: {line[:200]}"
