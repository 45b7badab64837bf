"""CPU per SMS of the worker's side of inbound SMS: matching, storing, events (not the relays).

    .venv/bin/python -m bench.inbound_worker [--sms 1000] [--senders 100] [--profile FILE]

Stores `--sms` SMS from `--senders` contacts (each in a channel with a partner, through a thread
that posted there, round robin) as the webhook leaves them (`received`), then times
`workers.inbound.process_waiting` over all of them with the relays left out: the process's CPU
time and the wall time per SMS, and the SQL statements it ran. Not one of `make bench`'s figures:
a developer's measure of the worker's own cost, which the machine's load moves least.
"""

from __future__ import annotations

import argparse
import cProfile
import time
from datetime import timedelta

from bench import _stack
from bridge import inbound
from bridge.actors import Actor
from bridge.db import transaction
from bridge.inbound import record_inbound_sms
from bridge.messages import Draft, post_message
from bridge.migrate import upgrade
from bridge.models import Contact
from bridge.organizations import create_organization, find_or_create_contact
from bridge.runtime import Runtime
from bridge.settings import load_settings
from bridge.threads import create_thread
from tests.factories import statements as statements_of
from tests.fixtures.twilio import payloads
from tests.services import RedisServer
from workers import inbound as worker

SENDER = "+16285550100"


def seed(runtime: Runtime, senders: int) -> tuple[str, list[Contact]]:
    """An organization and `senders` contacts, each in a channel (and thread) with a partner."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        org_id = create_organization(session, settings, "Bench", [SENDER]).organization.id
        actor = Actor.organization(org_id)
        contacts = []
        for i in range(senders):
            contact, _ = find_or_create_contact(session, settings, org_id, f"+1415330{i:04d}")
            partner, _ = find_or_create_contact(session, settings, org_id, f"+1415340{i:04d}")
            members = [contact.id, partner.id]
            thread, _ = create_thread(session, settings, actor, f"r-{i}", subscribers=members)
            post_message(session, settings, actor, thread.id, Draft.of("Your order shipped"))
            contacts.append(contact)
    return org_id, contacts


def store(runtime: Runtime, contacts: list[Contact], count: int) -> None:
    """`count` SMS from the contacts in turn, stored `received` as the webhook leaves them."""
    inbound.INLINE_AFTER = timedelta(days=1)  # the webhook never matches them itself here
    with transaction(runtime.sessions) as session:
        for i in range(count):
            payload = payloads.inbound(contacts[i % len(contacts)].phone, SENDER, f"reply {i}")
            record_inbound_sms(session, runtime.settings, payload, defer=True)


def measure(runtime: Runtime, count: int, profile: str | None) -> None:
    worker._relay = lambda *_: None  # type: ignore[assignment]  # sending is not measured here
    profiler = cProfile.Profile() if profile else None
    with statements_of(runtime.engine) as statements:
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        done = worker.process_waiting(runtime)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert done == count, f"processed {done} of {count}"
    print(
        f"{count} SMS: CPU {cpu / count * 1000:.2f} ms/SMS, wall {wall / count * 1000:.2f} ms/SMS,"
        f" {len(statements) / count:.2f} SQL statements/SMS"
    )


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="bench.inbound_worker", description=description)
    parser.add_argument("--sms", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--profile", help="write a cProfile of the processing to this file")
    args = parser.parse_args(argv)
    with _stack.scratch_database("inbound_worker") as url, RedisServer() as server:
        env = _stack.environment(url, server.url, QUIET_HOURS="")
        with Runtime(load_settings(env)) as runtime:
            upgrade(runtime.engine)
            _, contacts = seed(runtime, args.senders)
            store(runtime, contacts, args.sms)
            measure(runtime, args.sms, args.profile)
            runtime.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
