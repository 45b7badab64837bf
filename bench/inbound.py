"""Benchmark the inbound SMS webhook: throughput against a bare view, latency, relay, matching.

    .venv/bin/python -m bench.inbound [--quick]

Measured in one run, on PostgreSQL when one answers (else SQLite), with the Procfile's processes:
gunicorn with the web config and WEB_CONCURRENCY workers, one `python -m workers`, and the Twilio
stand-in in a process of its own (50 ms a request). The load generator runs on the same machine.

1. Throughput of `POST /twilio/sms` (every step of DESIGN 5.5, `--channels` channels in the
   database), divided by that of a bare Flask view that checks the same signature with
   twilio-python's `RequestValidator` and answers the same TwiML, under the same server config.
2. p99 latency of the whole path at half its maximum rate (open loop: measured from when each
   request was due, so a slow answer cannot hide the ones queued behind it).
3. From each of those requests being due to its relay (the SMS to the other contact of the
   channel) reaching the stand-in: p99. The relays' sender is not rate limited here
   (SEND_RATE_PER_SENDER is Twilio's business, not this path's).
4. Matching one SMS (phone hash -> contact and channels -> the chosen one, for a contact in two
   channels) at `--big` channels, against one raw indexed SELECT of the contact's channels on the
   same psycopg connection.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import redis
from flask import Flask, Response, abort, request
from sqlalchemy import Engine, insert
from twilio.request_validator import RequestValidator

from bench import _stack
from bench._report import Figure, figure
from bridge.actors import Actor
from bridge.channels import get_or_create_channel
from bridge.db import make_engine, transaction, utcnow
from bridge.inbound_match import choose, match_senders
from bridge.messages import Draft, post_message
from bridge.migrate import upgrade
from bridge.models import Channel, ChannelPhoneHash, Contact
from bridge.organizations import create_organization, find_or_create_contact
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.threads import create_thread
from bridge.twilio_webhooks import twiml
from tests.services import RedisServer, free_port

SENDER = "+16285550100"
TARGETS = 40  # contacts in two channels each (alone, and with a partner): the matching figure
WEB_CONCURRENCY = "2"  # the Procfile's default


def bare_app() -> Flask:
    """The ceiling: a Flask view that checks the same signature and answers the same empty TwiML."""
    import os

    app = Flask(__name__)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    base = os.environ["PUBLIC_BASE_URL"]
    answer = twiml()

    @app.post("/twilio/sms")
    def sms() -> Response:
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validator.validate(base + request.full_path.rstrip("?"), request.form, signature):
            abort(403)
        return Response(answer, mimetype="text/xml")

    return app


def add_filler_channels(engine: Engine, organization_id: str, start: int, count: int) -> None:
    """`count` channels of other phones, with their hash index rows, inserted in bulk."""
    now = utcnow()

    def channels() -> Iterator[tuple[object, ...]]:
        for i in range(start, start + count):
            digest = hashlib.sha256(f"filler-{i}".encode()).hexdigest()
            yield (f"chnl_x{i:012d}", organization_id, digest, "", now, now)

    def hashes() -> Iterator[tuple[object, ...]]:
        for i in range(start, start + count):
            yield (
                f"chnl_x{i:012d}",
                hashlib.sha256(f"phone-{i}".encode()).hexdigest(),
                organization_id,
            )

    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            columns = "id, organization_id, subscriber_hash, name, created_at, updated_at"
            with cursor.copy(f"COPY channels ({columns}) FROM STDIN") as copy:
                for row in channels():
                    copy.write_row(row)
            copy_hashes = (
                "COPY channel_phone_hashes (channel_id, phone_hash, organization_id) FROM STDIN"
            )
            with cursor.copy(copy_hashes) as copy:  # type: ignore[attr-defined]
                for row in hashes():
                    copy.write_row(row)
            raw.commit()
            cursor.execute("ANALYZE channels")
            cursor.execute("ANALYZE channel_phone_hashes")
            raw.commit()
        finally:
            raw.close()
        return
    keys = ["id", "organization_id", "subscriber_hash", "name", "created_at", "updated_at"]
    with engine.begin() as conn:
        conn.execute(
            insert(Channel.__table__), [dict(zip(keys, r, strict=True)) for r in channels()]
        )
        conn.execute(
            insert(ChannelPhoneHash.__table__),
            [
                dict(zip(["channel_id", "phone_hash", "organization_id"], r, strict=True))
                for r in hashes()
            ],
        )


def seed_targets(runtime: Runtime, organization_id: str) -> list[Contact]:
    """TARGETS contacts, each in two channels (alone, and with a partner), each with a message."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        actor = Actor.organization(organization_id)
        contacts = []
        for i in range(TARGETS):
            contact, _ = find_or_create_contact(
                session, settings, organization_id, f"+1415310{i:04d}", f"T{i}"
            )
            partner, _ = find_or_create_contact(
                session, settings, organization_id, f"+1415320{i:04d}", f"P{i}"
            )
            for resource, members in [
                (f"solo-{i}", [contact.id]),
                (f"pair-{i}", [contact.id, partner.id]),
            ]:
                thread, _ = create_thread(session, settings, actor, resource, subscribers=members)
                post_message(session, settings, actor, thread.id, Draft.of("Your order shipped"))
            contacts.append(contact)
    return contacts


def seed_relayers(runtime: Runtime, organization_id: str, pairs: int) -> list[Contact]:
    """`pairs` contacts each in one channel with a partner: each SMS of theirs is relayed."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        relayers = []
        for i in range(pairs):
            contact, _ = find_or_create_contact(
                session, settings, organization_id, f"+1415330{i:04d}", f"R{i}"
            )
            partner, _ = find_or_create_contact(
                session, settings, organization_id, f"+1415340{i:04d}", f"Q{i}"
            )
            get_or_create_channel(session, organization_id, [contact.id, partner.id])
            relayers.append(contact)
    return relayers


def matching_seconds(
    runtime: Runtime, organization_id: str, contacts: list[Contact], rounds: int
) -> tuple[float, float]:
    """Medians of the matching step and of one raw indexed SELECT of the contact's channels."""
    matched, raw = [], []
    with runtime.sessions() as session:
        dbapi = session.connection().connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        placeholder = "%s" if runtime.engine.dialect.name == "postgresql" else "?"
        query = (
            "SELECT channel_id FROM channel_phone_hashes "
            f"WHERE organization_id = {placeholder} AND phone_hash = {placeholder}"
        )
        for i in range(rounds):
            contact = contacts[i % len(contacts)]
            started = time.perf_counter()
            found = match_senders(session, organization_id, [contact.phone_hash])
            match = choose(found.get(contact.phone_hash, []), SENDER)
            assert match.channel_id is not None
            matched.append(time.perf_counter() - started)
            started = time.perf_counter()
            cursor.execute(query, (organization_id, contact.phone_hash))
            assert len(cursor.fetchall()) == 2
            raw.append(time.perf_counter() - started)
        cursor.close()
    return statistics.median(matched), statistics.median(raw)


def signed_requests(
    base_url: str, contacts: list[Contact], count: int, first: int = 0
) -> list[tuple[bytes, str]]:
    """Bodies and signatures of `count` inbound SMS (`reply <n>`), each with its own MessageSid."""
    validator = RequestValidator(_stack.AUTH_TOKEN)
    url = base_url + "/twilio/sms"
    made = []
    for i in range(first, first + count):
        sid = "SM" + secrets.token_hex(16)
        params = {
            "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0",
            "ToCity": "SAN FRANCISCO", "FromZip": "94107", "SmsSid": sid, "FromState": "CA",
            "SmsStatus": "received", "FromCity": "SAN FRANCISCO", "Body": f"reply {i}",
            "FromCountry": "US", "To": SENDER, "ToZip": "94105", "NumSegments": "1",
            "MessageSid": sid, "AccountSid": _stack.ACCOUNT_SID,
            "From": contacts[i % len(contacts)].phone, "ApiVersion": "2010-04-01",
        }  # fmt: skip
        made.append((urlencode(params).encode(), validator.compute_signature(url, params)))
    return made


def post(port: int, body: bytes, signature: str) -> int:
    """One POST /twilio/sms; returns the HTTP status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        }
        connection.request("POST", "/twilio/sms", body, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def max_rate(port: int, requests: list[tuple[bytes, str]], concurrency: int = 8) -> float:
    """Requests per second with `concurrency` clients sending back to back."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(lambda r: post(port, *r), requests))
    elapsed = time.perf_counter() - started
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed (e.g. HTTP {bad[0]})")
    return len(requests) / elapsed


def paced(port: int, requests: list[tuple[bytes, str]], rate: float) -> tuple[list[float], float]:
    """Send at `rate` per second (open loop): each request's latency from when it was due, and
    the monotonic time the first was due (request i was due `i / rate` later)."""
    start = time.monotonic() + 0.2
    lock = threading.Lock()
    latencies: list[float] = []

    def send(index: int) -> None:
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        status = post(port, *requests[index])
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        with lock:
            latencies.append(time.monotonic() - due)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(send, range(len(requests))))
    return latencies, start


def relay_latencies(
    standin: _stack.StandIn, first: int, count: int, start: float, rate: float
) -> list[float]:
    """For requests `first`.. of a paced run: when the stand-in got each relay, from when due."""
    wanted = set(range(first, first + count))
    arrived: dict[int, float] = {}

    def collect() -> bool:
        for r in standin.requests():
            body = (r["form"].get("Body") or [""])[0]
            number = body.rpartition("reply ")[2]
            if number.isdigit() and int(number) in wanted:
                arrived.setdefault(int(number), r["received_at"])
        return len(arrived) >= count

    _stack.wait_until(collect, 120, "every relay at the stand-in", every=1.0)
    return [arrived[i] - (start + (i - first) / rate) for i in sorted(arrived)]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(quick: bool = False) -> list[Figure]:
    """Measure the inbound figures; `quick` uses small sizes (to try the harness, not to report)."""
    channels = 10_000 if quick else 100_000
    big = 20_000 if quick else 1_000_000
    count = 300 if quick else 1500
    pairs = 100 if quick else 500
    with _stack.scratch_database("inbound") as url, RedisServer() as server:
        engine = make_engine(url)
        upgrade(engine)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with _stack.standin(0.05) as standin:
            env = _stack.environment(
                url,
                server.url,
                PUBLIC_BASE_URL=base_url,
                TWILIO_API_BASE_URL=standin.base_url,
                SEND_RATE_PER_SENDER=1_000_000,
                PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="bench-inbound-metrics-"),
            )
            with Runtime(load_settings(env)) as runtime:
                with transaction(runtime.sessions) as session:
                    org_id = create_organization(
                        session, runtime.settings, "Bench", [SENDER]
                    ).organization.id
                targets = seed_targets(runtime, org_id)
                relayers = seed_relayers(runtime, org_id, pairs)
                add_filler_channels(engine, org_id, 0, channels)
                warm = signed_requests(base_url, relayers, 100, first=1_000_000)
                full = signed_requests(base_url, relayers, count, first=2_000_000)
                slow = signed_requests(base_url, relayers, count, first=3_000_000)
                with _stack.workers(env), _stack.gunicorn("webhooks.wsgi:app", port, env):
                    max_rate(port, warm)
                    whole = max_rate(port, full)
                    # The latencies at half load start from a drained system, not from the
                    # backlog of relays the maximum-rate run left to the worker.
                    connection = redis.Redis.from_url(server.url)
                    _stack.wait_until(lambda: _stack.idle(connection), 600, "the workers to drain")
                    latencies, start = paced(port, slow, whole / 2)
                    relays = relay_latencies(standin, 3_000_000, count, start, whole / 2)
                bare_port = free_port()
                bare_env = env | {"PUBLIC_BASE_URL": f"http://127.0.0.1:{bare_port}"}
                bare_warm = signed_requests(bare_env["PUBLIC_BASE_URL"], relayers, 100)
                bare_full = signed_requests(bare_env["PUBLIC_BASE_URL"], relayers, count)
                with _stack.gunicorn("bench.inbound:bare_app()", bare_port, bare_env):
                    max_rate(bare_port, bare_warm)
                    bare = max_rate(bare_port, bare_full)

                add_filler_channels(engine, org_id, channels, big - channels)
                matched, raw = matching_seconds(runtime, org_id, targets, 400)
        engine.dispose()
    p99 = percentile(latencies, 0.99)
    relay_p99 = percentile(relays, 0.99)
    half = f"{whole / 2:,.0f} req/s, half the maximum, open loop"
    return [
        figure(
            "inbound throughput, whole path",
            f"bare Flask view, same signature check and TwiML, same gunicorn ({bare:,.0f} req/s)",
            whole,
            "req/s",
            whole / bare,
            ">= 0.5",
        ),
        figure(f"inbound p99 at {half}", "", p99 * 1000, "ms", None, "<= 25"),
        figure(
            f"inbound SMS to its relay at Twilio, p99 at {half}",
            "",
            relay_p99,
            "s",
            None,
            "<= 1",
        ),
        figure(
            f"matching one SMS at {big:,} channels",
            f"one raw indexed SELECT of the contact's channels, same driver ({raw * 1e6:.0f} us)",
            matched * 1e6,
            "us",
            matched / raw,
            "<= 3",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inbound benchmark and print its figures."""
    from bench._report import table

    parser = argparse.ArgumentParser(prog="bench.inbound", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    args = parser.parse_args(argv)
    print(table(run(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
