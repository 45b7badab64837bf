"""The bridge as its operators run it: real processes over stores of its own, for fault tests.

A `System` holds a PostgreSQL cluster and a redis-server of its own (never the machine's), the
Twilio stand-in as a separate process, and the Procfile's `web` (gunicorn) and `worker` lines
started, killed and restarted as the test likes. Every process writes its log to one folder, which
the log scan reads at the end. The test process seeds and counts through a `Runtime` of its own on
the same stores, with the same settings.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select, text

from bridge.channels import get_or_create_channel
from bridge.db import Base, transaction
from bridge.migrate import upgrade
from bridge.models import Delivery, InboundSms
from bridge.organizations import create_organization, find_or_create_contact
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from tests.e2e.processes import (
    Process,
    answers,
    environment,
    http,
    kill_tree,
    procfile,
    wait_for,
)
from tests.fixtures.twilio import payloads
from tests.services import OwnPostgres, RedisServer, free_port

ACCOUNT_SID = "AC" + "5e1f" * 8


@dataclass
class Org:
    id: str
    key: str
    senders: list[str]


@dataclass
class Tally:
    """What the stand-in received for a set of recipients, and what the database says of them."""

    recipients: int
    sent: int  # recipients with at least one SMS at the stand-in
    duplicated: int  # SMS beyond the first per recipient
    lost: int  # recipients with none
    stored: int  # deliveries the database holds as settled, with a SID the stand-in made
    db_statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipients": self.recipients,
            "sent": self.sent,
            "stored": self.stored,
            "duplicated": self.duplicated,
            "lost": self.lost,
        }


class StandIn:
    """The Twilio stand-in as a process of its own, driven over HTTP."""

    def __init__(self, auth_token: str, logs: Path) -> None:
        self.port = free_port()
        self.log = (logs / "standin.log").open("wb")
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.standin.twilio",
                "--port",
                str(self.port),
                "--account-sid",
                ACCOUNT_SID,
                "--auth-token",
                auth_token,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=environment(),
        )
        assert self.popen.stdout is not None
        self.url = self.popen.stdout.readline().strip()
        assert self.url.startswith("http"), "the stand-in did not start"

    def control(self, action: str, body: dict[str, Any] | None = None) -> Any:
        method = "GET" if action in ("requests", "messages", "callbacks") else "POST"
        status, answer = http(method, f"{self.url}/_standin/{action}", body or {}, timeout=60)
        assert status == 200, answer
        return answer

    def messages(self) -> list[dict[str, Any]]:
        return list(self.control("messages")["messages"])

    def requests(self) -> list[dict[str, Any]]:
        return list(self.control("requests")["requests"])

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)
        if self.popen.stdout:
            self.popen.stdout.close()
        self.log.close()


class System:
    """Stores, stand-in and processes of one test session; `reset` empties them between tests."""

    def __init__(self, tmp: Path, postgres: OwnPostgres) -> None:
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.postgres = postgres
        self.redis_server = RedisServer().start()
        self.secrets = {
            "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
            "SECRET_KEY": "rel-secret-" + secrets.token_hex(16),
            "PHONE_HASH_KEY": "rel-phone-hash-" + secrets.token_hex(16),
            "METRICS_TOKEN": "rel-metrics-" + secrets.token_hex(16),
        }
        self.standin = StandIn(self.secrets["TWILIO_AUTH_TOKEN"], self.logs)
        self.web_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.processes: list[Process] = []
        self._names = itertools.count(1)
        self.api_keys: list[str] = []
        self.phones: set[str] = set()
        self.texts: set[str] = set()
        (tmp / "metrics").mkdir(exist_ok=True)
        self.runtime = Runtime(self.settings())
        upgrade(self.runtime.engine)

    # -- settings and processes --------------------------------------------------------------

    def env(self, **overrides: object) -> dict[str, str]:
        values: dict[str, str] = {
            # Not production: it refuses the plain-http loopback URLs everything here uses.
            "BRIDGE_ENV": "test",
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis_server.url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_API_BASE_URL": self.standin.url,
            "TWILIO_TIMEOUT": "5",
            "PUBLIC_BASE_URL": self.base,
            "PORT": str(self.web_port),
            "WEB_CONCURRENCY": "2",
            "SEND_RATE_PER_SENDER": "1000",
            "SEND_RETRY_BASE": "0.2",
            "SEND_STALE_AFTER": "2",
            "SEND_CONCURRENCY": "8",
            "SWEEP_INTERVAL": "0.5",
            "QUIET_HOURS": "",
            "BRIDGE_INSTANCE_DIR": str(self.tmp / "instance"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "metrics"),
            **self.secrets,
        }
        values.update({k: str(v) for k, v in overrides.items()})
        return environment(**values)

    def settings(self, **overrides: object) -> Settings:
        return load_settings(self.env(**overrides))

    def start(self, kind: str, wait: bool = True, **overrides: object) -> Process:
        """Start the Procfile's `web` or `worker` line; `wait` for it to be serving."""
        env = self.env(**overrides)
        name = f"{kind}-{next(self._names)}"
        process = Process(name, procfile()[kind], env, self.logs)
        self.processes.append(process)
        if wait:
            self.ready(process)
        return process

    def ready(self, *processes: Process) -> None:
        """Wait until these web processes answer /readyz and these workers have registered."""
        for process in processes:
            if process.name.startswith("web"):
                url = f"http://127.0.0.1:{process.env['PORT']}/readyz"

                def answering(p: Process = process, u: str = url) -> bool:
                    return p.popen.poll() is not None or answers(u) == 200

                wait_for(f"{process.name} to answer", answering, timeout=60)
            else:

                def registered(p: Process = process) -> bool:
                    return p.popen.poll() is not None or self.worker_count() > 0

                wait_for(f"{process.name} to register", registered, timeout=60)
            assert process.popen.poll() is None, process.output()[-3000:]

    def worker_count(self) -> int:
        from rq import Worker

        with contextlib.suppress(redis.RedisError):
            return len(Worker.all(connection=self.runtime.redis))
        return 0

    def kill(self, process: Process) -> None:
        """SIGKILL a process and everything it started, as an out-of-memory killer would."""
        kill_tree(process.popen.pid, signal.SIGKILL)
        process.popen.wait(10)

    def stop_processes(self, grace: float = 3) -> None:
        """SIGTERM every process; whatever has not ended after `grace` seconds is killed."""
        for process in self.processes:
            if process.popen.poll() is None:
                kill_tree(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_tree(process.popen.pid, signal.SIGKILL)
            process.kill()
        self.processes.clear()

    def restart_redis(self) -> None:
        """Stop Redis and start it again on the same port, its data gone (no persistence)."""
        self.redis_server.stop()
        self.redis_server.start()

    def reset(self) -> None:
        """Stop every bridge process, empty the database and Redis, and clear the stand-in."""
        self.stop_processes()
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with self.runtime.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        self.runtime.redis.flushall()
        self.standin.control("clear")

    def close(self) -> None:
        self.stop_processes()
        self.runtime.close()
        self.standin.stop()
        self.redis_server.stop()

    # -- data ----------------------------------------------------------------------------------

    def organization(self, senders: int = 1, name: str = "Reliable Parcels") -> Org:
        numbers = [f"+1628{next(_numbers):07d}" for _ in range(senders)]
        with transaction(self.runtime.sessions) as session:
            made = create_organization(session, self.runtime.settings, name, numbers)
        self.api_keys.append(made.api_key)
        self.phones.update(numbers)
        return Org(made.organization.id, made.api_key, numbers)

    def channel(self, org: Org, size: int) -> tuple[str, list[str]]:
        """A channel of `org` with `size` new contacts; its id and their phones."""
        phones = [f"+1415{next(_numbers):07d}" for _ in range(size)]
        self.phones.update(phones)
        with transaction(self.runtime.sessions) as session:
            ids = [
                find_or_create_contact(
                    session, self.runtime.settings, org.id, phone, name=f"Contact {i}"
                )[0].id
                for i, phone in enumerate(phones)
            ]
            channel, _ = get_or_create_channel(session, org.id, ids)
        return channel.id, phones

    def publish(self, org: Org, channel_id: str, text_: str, base: str | None = None) -> str:
        """Post a message to a channel through the REST API, as an application does."""
        self.texts.add(text_)
        status, body = http(
            "POST",
            f"{base or self.base}/v1/channels/{channel_id}/messages",
            {"text": text_},
            {"Authorization": f"Bearer {org.key}"},
            timeout=60,
        )
        assert status == 201, body
        return str(body["id"])

    def inbound(
        self, from_: str, to: str, body: str, sid: str | None = None, base: str | None = None
    ) -> tuple[int, str]:
        """POST a signed inbound SMS to /twilio/sms (Twilio's retry: the same `sid` again)."""
        self.texts.add(body)
        params = payloads.inbound(from_, to, body)
        if sid is not None:
            params.update(MessageSid=sid, SmsSid=sid, SmsMessageSid=sid)
        data, headers = payloads.signed(
            self.secrets["TWILIO_AUTH_TOKEN"], self.base, "/twilio/sms", params
        )
        status, answer = post_form(f"{base or self.base}/twilio/sms", data, headers)
        return status, answer

    # -- counting ------------------------------------------------------------------------------

    def tally(self, message_id: str, phones: Iterable[str], body: str) -> Tally:
        """Count one message's SMS (`body`) at the stand-in and its deliveries in the database."""
        with self.runtime.sessions() as session:
            rows = session.execute(
                select(Delivery.to_phone, Delivery.status, Delivery.twilio_sid).where(
                    Delivery.message_id == message_id
                )
            ).all()
        created = self.standin.messages()
        at_standin = Counter(m["to"] for m in created if m["body"] == body)
        wanted = list(phones)
        standin_sids = {m["sid"] for m in created if m["body"] == body}
        return Tally(
            recipients=len(wanted),
            sent=sum(1 for p in wanted if at_standin[p] >= 1),
            duplicated=sum(max(0, at_standin[p] - 1) for p in wanted),
            lost=sum(1 for p in wanted if at_standin[p] == 0),
            stored=sum(
                1
                for row in rows
                if row.status not in ("pending", "sending", "unknown")
                and row.twilio_sid in standin_sids
            ),
            db_statuses=dict(Counter(row.status for row in rows)),
        )

    def open_deliveries(self, message_ids: Iterable[str]) -> int:
        """Deliveries of these messages not yet settled (pending, sending, unknown)."""
        with self.runtime.sessions() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(
                        Delivery.message_id.in_(list(message_ids)),
                        Delivery.status.in_(("pending", "sending", "unknown")),
                    )
                )
                or 0
            )

    def inbound_counts(self) -> Counter[str]:
        """How many inbound SMS records each MessageSid has."""
        with self.runtime.sessions() as session:
            return Counter(session.execute(select(InboundSms.message_sid)).scalars())

    def wait_settled(self, message_ids: Iterable[str], timeout: float) -> None:
        ids = list(message_ids)
        wait_for(
            "every delivery to be settled",
            lambda: self.open_deliveries(ids) == 0,
            timeout=timeout,
            interval=0.25,
        )


_numbers = itertools.count(2_000_000)


def post_form(url: str, data: str, headers: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """POST a form body; the status and the text answered."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 2)
