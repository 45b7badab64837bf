"""Benchmark the inbound SMS webhook: throughput against a bare Flask view, latency, matching.

    .venv/bin/python -m bench.inbound [--channels 100000] [--requests 1500] [--big 1000000]

1. Throughput of `POST /twilio/sms` (signature, dedupe, matching among `--channels` channels,
   store, enqueue the relay) under gunicorn with the Procfile's server config, divided by that of a
   bare Flask view answering the same TwiML under the same config: the share of the ceiling reached.
2. p50 and p99 latency of the whole path at half its maximum rate (open loop: measured from when
   each request was due, so a slow answer cannot hide the ones queued behind it).
3. Matching time (phone hash -> channels -> the chosen one) at 1,000 and at `--big` channels, as a
   ratio: the lookup rides an index, so it should stay near 1.

It uses a scratch PostgreSQL database (created on DATABASE_TEST_URL's server, dropped after) or a
SQLite file when no PostgreSQL answers, and a redis-server of its own. Loopback only; the load
generator runs on the same machine, so the absolute rates are the machine's, the ratios the point.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, Response
from sqlalchemy import Engine, insert
from twilio.request_validator import RequestValidator

from bridge.actors import Actor
from bridge.db import make_engine, transaction, utcnow
from bridge.inbound import choose_channel, match_contact
from bridge.messages import post_message
from bridge.migrate import upgrade
from bridge.models import Channel, ChannelPhoneHash, Contact
from bridge.organizations import create_organization, find_or_create_contact
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.threads import create_thread
from bridge.twilio_webhooks import twiml
from tests.services import (
    RedisServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    postgres_admin_url,
)

AUTH_TOKEN = "bench-auth-token-inbound"
HASH_KEY = "bench-phone-hash-key-0123456789"
SENDER = "+16285550100"
TARGETS = 40  # contacts who reply, each in a channel with one other contact
ROOT = Path(__file__).resolve().parent.parent
WEB_CONCURRENCY = "2"  # the Procfile's default


def bare_app() -> Flask:
    """The ceiling: a Flask view that answers the same empty TwiML and does nothing else."""
    app = Flask(__name__)
    answer = twiml()

    @app.post("/twilio/sms")
    def sms() -> Response:
        return Response(answer, mimetype="text/xml")

    return app


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped after), else a SQLite file."""
    admin = postgres_admin_url()
    if admin is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.sqlite3"
        return
    name = f"bridge_bench_inbound_{os.getpid()}"
    url = create_postgres_database(admin, name)
    try:
        yield url
    finally:
        drop_postgres_database(admin, name)


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
            with cursor.copy(f"COPY channels ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
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


def seed_targets(runtime: Runtime) -> tuple[str, list[Contact]]:
    """An organization with TARGETS contacts, each in two channels (alone, and with a partner)."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        org = create_organization(session, settings, "Bench", [SENDER]).organization
        actor = Actor.organization(org.id)
        contacts = []
        for i in range(TARGETS):
            contact, _ = find_or_create_contact(
                session, settings, org.id, f"+1415310{i:04d}", f"T{i}"
            )
            partner, _ = find_or_create_contact(
                session, settings, org.id, f"+1415320{i:04d}", f"P{i}"
            )
            for resource, members in [
                (f"solo-{i}", [contact.id]),
                (f"pair-{i}", [contact.id, partner.id]),
            ]:
                thread, _ = create_thread(session, settings, actor, resource, subscribers=members)
                post_message(session, settings, actor, thread.id, "Your order shipped")
            contacts.append(contact)
    return org.id, contacts


def matching_seconds(
    runtime: Runtime, organization_id: str, contacts: list[Contact], rounds: int
) -> float:
    """Median time of the matching step (hash -> contact and channels -> the chosen one)."""
    times = []
    with runtime.sessions() as session:
        for i in range(rounds):
            contact = contacts[i % len(contacts)]
            started = time.perf_counter()
            found, channels = match_contact(session, organization_id, contact.phone_hash)
            assert found is not None
            choose_channel(session, found, SENDER, channels)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def signed_requests(base_url: str, contacts: list[Contact], count: int) -> list[tuple[bytes, str]]:
    """Bodies and signatures of `count` inbound SMS, each with its own MessageSid."""
    validator = RequestValidator(AUTH_TOKEN)
    url = base_url + "/twilio/sms"
    made = []
    for i in range(count):
        sid = "SM" + secrets.token_hex(16)
        params = {
            "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0",
            "ToCity": "SAN FRANCISCO", "FromZip": "94107", "SmsSid": sid, "FromState": "CA",
            "SmsStatus": "received", "FromCity": "SAN FRANCISCO", "Body": f"reply {i}",
            "FromCountry": "US", "To": SENDER, "ToZip": "94105", "NumSegments": "1",
            "MessageSid": sid, "AccountSid": "AC" + "0" * 32,
            "From": contacts[i % len(contacts)].phone, "ApiVersion": "2010-04-01",
        }  # fmt: skip
        made.append((urlencode(params).encode(), validator.compute_signature(url, params)))
    return made


@contextmanager
def gunicorn(target: str, port: int, environ: dict[str, str]) -> Iterator[None]:
    """Gunicorn serving `target` with the Procfile's config on a loopback port."""
    command = [
        sys.executable, "-m", "gunicorn", target,
        "--config", str(ROOT / "webhooks" / "gunicorn_conf.py"),
        "--bind", f"127.0.0.1:{port}", "--workers", WEB_CONCURRENCY,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **environ}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                post(port, b"", "")
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"gunicorn {target} did not start") from None
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(15)


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


def paced_latencies(port: int, requests: list[tuple[bytes, str]], rate: float) -> list[float]:
    """Latency of each request sent at `rate` per second, from when it was due (open loop)."""
    start = time.perf_counter() + 0.2
    lock = threading.Lock()
    latencies: list[float] = []

    def send(index: int) -> None:
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        status = post(port, *requests[index])
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        with lock:
            latencies.append(time.perf_counter() - due)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(send, range(len(requests))))
    return latencies


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inbound benchmark and print its ratios."""
    parser = argparse.ArgumentParser(prog="bench.inbound", description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    with scratch_database() as database_url, RedisServer() as redis_server:
        engine = make_engine(database_url)
        upgrade(engine)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        environ = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "PUBLIC_BASE_URL": base_url,
            "PHONE_HASH_KEY": HASH_KEY,
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="bench-inbound-metrics-"),
        }
        settings = load_settings(environ)
        with Runtime(settings) as runtime:
            organization_id, contacts = seed_targets(runtime)

            # 3 (first half). Matching at 1,000 channels.
            add_filler_channels(engine, organization_id, 0, 1000)
            small = matching_seconds(runtime, organization_id, contacts, 400)

            # 1, 2. The whole path with --channels channels in the database.
            add_filler_channels(engine, organization_id, 1000, args.channels - 1000)
            warm = signed_requests(base_url, contacts, 100)
            full = signed_requests(base_url, contacts, args.requests)
            paced = signed_requests(base_url, contacts, args.requests)
            with gunicorn("webhooks.wsgi:app", port, environ):
                max_rate(port, warm)
                whole = max_rate(port, full)
                latencies = paced_latencies(port, paced, whole / 2)
            bare_port = free_port()
            with gunicorn("bench.inbound:bare_app()", bare_port, environ):
                max_rate(bare_port, warm)
                bare = max_rate(bare_port, full)

            # 3 (second half). Matching at --big channels.
            print(f"seeding up to {args.big:,} channels ...", flush=True)
            seeded = time.perf_counter()
            add_filler_channels(engine, organization_id, args.channels, args.big - args.channels)
            print(f"  seeded in {time.perf_counter() - seeded:.0f} s", flush=True)
            big = matching_seconds(runtime, organization_id, contacts, 400)
        engine.dispose()

    print(f"whole path ({args.channels:,} channels): {whole:,.0f} req/s")
    print(f"bare Flask view, same server config:  {bare:,.0f} req/s")
    print(f"  throughput ratio whole/bare: {whole / bare:.2f}")
    p50, p99 = (percentile(latencies, q) * 1000 for q in (0.5, 0.99))
    print(
        f"latency at {whole / 2:,.0f} req/s (half the maximum): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    print(f"matching: {small * 1e6:.0f} us at 1,000 channels, {big * 1e6:.0f} us at {args.big:,}")
    print(f"  matching ratio big/small: {big / small:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
