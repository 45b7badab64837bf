"""Plain factory functions for test data, and the small helpers test modules share."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import redis
from flask import Flask, Response
from flask.testing import FlaskClient
from pydantic import BaseModel
from rq import Queue
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from bridge.actors import Actor
from bridge.channels import get_or_create_channel
from bridge.db import transaction, utcnow
from bridge.ids import kind_of, new_id
from bridge.inbound_store import Reply, store_replies
from bridge.messages import Draft, Posted, post_channel_message, post_message
from bridge.models import Channel, Contact, Delivery, Organization, Thread, User
from bridge.organizations import (
    create_organization,
    create_user,
    find_or_create_contact,
    sender_numbers,
)
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.threads import create_thread
from tests.fixtures.twilio import payloads
from workers import context, queues
from workers.enqueue import enqueue_posted
from workers.worker import Worker

# The `work` fixture of tests/workers: runs the queued and scheduled jobs (an optional timeout).
Work = Callable[..., None]

# The tests' PUBLIC_BASE_URL: Twilio signs the webhook URLs under it.
BASE_URL = "https://bridge.example.com"

_numbers = itertools.count(1000)

T = TypeVar("T")


def known(value: T | None) -> T:
    """`value`, asserted not None: typed optional (a nullable column, a lookup), set here."""
    assert value is not None
    return value


@contextmanager
def statements(engine: Engine | Connection) -> Iterator[list[str]]:
    """Every SQL statement `engine` runs inside the block, in order."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def phone() -> str:
    """A fresh valid US mobile-looking number in E.164 (+1 415 555 xxxx style but valid)."""
    return f"+1415{next(_numbers) + 2000000:07d}"


def sender() -> str:
    """A fresh valid sender number."""
    return f"+1628{next(_numbers) + 3000000:07d}"


def organization(
    session: Session, settings: Settings, name: str = "Acme Logistics", senders: int = 1
) -> tuple[Organization, str]:
    """An organization with `senders` numbers (or a Messaging Service); returns it and its key."""
    # An organization needs something to send from: without numbers, a Messaging Service.
    service = None if senders else "MG" + "0" * 32
    made = create_organization(
        session, settings, name, [sender() for _ in range(senders)], messaging_service_sid=service
    )
    return made.organization, made.api_key


def user(session: Session, settings: Settings, org: Organization, name: str = "Uma User") -> User:
    """A user of `org`."""
    email = f"{name.split()[0].lower()}@example.com"
    return create_user(session, settings, org.id, name, email=email)


def contact(
    session: Session, settings: Settings, org: Organization, name: str = "Cora Contact"
) -> Contact:
    """A new contact of `org` with a fresh number."""
    made, _ = find_or_create_contact(session, settings, org.id, phone(), name=name)
    return made


def org_actor(org: Organization) -> Actor:
    """The organization acting through its API key."""
    return Actor.organization(org.id)


def phones(n: int) -> list[str]:
    """`n` fresh contact numbers."""
    return [phone() for _ in range(n)]


def committed_organization(runtime: Runtime) -> Organization:
    """An organization with one sender number, committed."""
    with transaction(runtime.sessions) as session:
        org, _ = organization(session, runtime.settings)
    return org


def committed_user(runtime: Runtime, organization_id: str, name: str = "Uma User") -> str:
    """The id of a new user of the organization, committed."""
    with transaction(runtime.sessions) as session:
        org = session.get_one(Organization, organization_id)
        return user(session, runtime.settings, org, name).id


def thread_channel(
    session: Session, settings: Settings, org: Organization, contacts: list[Contact], resource: str
) -> tuple[Thread, Channel]:
    """A thread about `resource` with these contacts, and the channel its first message made."""
    actor = org_actor(org)
    thread, _ = create_thread(
        session, settings, actor, resource, subscribers=[c.id for c in contacts]
    )
    posted = post_message(session, settings, actor, thread.id, Draft.of(f"About {resource}"))
    channel = session.get_one(Channel, posted.message.channel_id)
    return thread, channel


def crowded_thread(
    session: Session,
    settings: Settings,
    org: Organization,
    users: int,
    contacts: int,
    resource: str,
) -> tuple[Thread, list[str]]:
    """A thread about `resource` whose subscribers are the organization, `users` new users and
    `contacts` new contacts: it, and the users' then the contacts' ids."""
    ids = [user(session, settings, org, f"User {i}").id for i in range(users)]
    ids += [contact(session, settings, org, f"Contact {i}").id for i in range(contacts)]
    thread, _ = create_thread(
        session, settings, org_actor(org), resource, name="Order", subscribers=ids
    )
    return thread, ids


def message_rows(
    organization_id: str,
    thread_id: str,
    authors: list[str],
    count: int,
    channel_id: str | None = None,
) -> list[dict[str, Any]]:
    """`count` text messages of the thread by `authors` in turn, a second apart and the last a
    second ago, as rows for one `insert(Message)`; published to `channel_id` when given.

    Written straight to the table: for measuring the reading side, not the posting."""
    now = utcnow()
    seq = time.time_ns() // 1000
    rows: list[dict[str, Any]] = []
    for i in range(count):
        author = authors[i % len(authors)]
        created = now - timedelta(seconds=count - i)
        rows.append(
            {
                "id": new_id("msg"),
                "organization_id": organization_id,
                "thread_id": thread_id,
                "channel_id": channel_id,
                "subscriber_id": author,
                "author_type": kind_of(author),
                "text": f"message {i}",
                "type": "text",
                "media_urls": [],
                "reactions": [],
                "created_at": created,
                "published_at": created if channel_id else None,
                "publish_seq": seq + i if channel_id else None,
            }
        )
    return rows


def two_channels(
    session: Session,
    settings: Settings,
    org: Organization,
    who: Contact,
    resources: tuple[str, str],
) -> tuple[Channel, Channel]:
    """`who` alone in a thread about the first resource, then with a new contact in a thread about
    the second (published last): the two threads' channels, the one `who` alone first."""
    _, alone = thread_channel(session, settings, org, [who], resources[0])
    _, shared = thread_channel(
        session, settings, org, [who, contact(session, settings, org)], resources[1]
    )
    return alone, shared


def numbers_by_channel(session: Session, contact_id: str) -> dict[str, str]:
    """The number each of the contact's channels texts it from: channel id -> its deliveries'
    from_phone."""
    return {
        known(d.channel_id): known(d.from_phone)
        for d in session.scalars(select(Delivery).where(Delivery.subscriber_id == contact_id))
    }


def contact_reply(
    session: Session, org: Organization, contact_id: str, channel_id: str, text: str, **more: Any
) -> Posted:
    """A contact's SMS stored as its message in the channel and relayed, as inbound SMS are."""
    [posted] = store_replies(session, org, [Reply(contact_id, channel_id, text, **more)])
    return posted


def channel_of(
    session: Session, settings: Settings, org: Organization, numbers: list[str]
) -> tuple[str, list[Contact]]:
    """A channel of `org` with one contact per phone number; its id and the contacts."""
    contacts = [
        find_or_create_contact(session, settings, org.id, number, name=f"Contact {i}")[0]
        for i, number in enumerate(numbers)
    ]
    channel, _ = get_or_create_channel(session, org.id, [c.id for c in contacts])
    return channel.id, contacts


def deliveries(runtime: Runtime, message_id: str) -> list[Delivery]:
    """The message's deliveries, by recipient and part."""
    with runtime.sessions() as session:
        return list(
            session.execute(
                select(Delivery)
                .where(Delivery.message_id == message_id)
                .order_by(Delivery.subscriber_id, Delivery.part)
            ).scalars()
        )


def fast_stale(runtime: Runtime) -> Runtime:
    """The same runtime with SEND_STALE_AFTER of a fraction of a second."""
    runtime.settings = runtime.settings.model_copy(update={"send_stale_after": 0.3})
    return runtime


def post_to_channel(
    runtime: Runtime, org: Organization, channel_id: str, text: str, **fields: Any
) -> str:
    """Post to the channel as the organization, commit, enqueue; the message's id."""
    with transaction(runtime.sessions) as session:
        posted = post_channel_message(
            session, runtime.settings, org_actor(org), channel_id, Draft.of(text, **fields)
        )
    enqueue_posted(runtime.redis, posted)
    return posted.message.id


@dataclass(frozen=True)
class Conversation:
    """Jane and Omar in a thread (and its channel) of an organization, and the number they text."""

    org: Organization
    jane: Contact
    omar: Contact
    thread: Thread
    channel: Channel
    to: str  # the organization's number, which the contacts text


def conversation_in(
    session: Session,
    settings: Settings,
    resource_id: str = "order-1",
    names: tuple[str, str] = ("Jane Doe", "Omar Other"),
) -> Conversation:
    """A new organization with one number, and a thread about `resource_id` with two contacts of
    these names; its first message made their channel. Not committed."""
    org, _ = organization(session, settings)
    jane, omar = (contact(session, settings, org, name) for name in names)
    thread, channel = thread_channel(session, settings, org, [jane, omar], resource_id)
    return Conversation(org, jane, omar, thread, channel, sender_numbers(session, org.id)[0])


def conversation(
    runtime: Runtime,
    settings: Settings,
    resource_id: str = "order-1",
    names: tuple[str, str] = ("Jane Doe", "Omar Other"),
) -> Conversation:
    """`conversation_in`, committed."""
    with transaction(runtime.sessions) as session:
        return conversation_in(session, settings, resource_id, names)


class JsonResponse(TestResponse, Response):
    """A test client's response whose `json` is typed `Any`, so tests index the parsed body.

    werkzeug types `json` as `Any | None`, None when the body is not JSON: here reading `json`
    off a body that is not JSON fails the test there, naming the body's type.
    """

    # TestResponse's (Flask's is "text/html"): the app sets the type. mypy needs it said here,
    # the two bases' definitions being incompatible.
    default_mimetype = None

    @property
    def json(self) -> Any:
        assert self.is_json, f"the body is {self.mimetype!r}, not JSON"
        return self.get_json()


class JsonClient(FlaskClient):
    """A Flask test client of `app` whose responses are `JsonResponse`."""

    def __init__(self, app: Flask, use_cookies: bool = True) -> None:
        super().__init__(app, JsonResponse, use_cookies=use_cookies)

    def open(self, *args: Any, **kwargs: Any) -> JsonResponse:
        response = super().open(*args, **kwargs)
        assert isinstance(response, JsonResponse)
        return response

    # werkzeug's get, post, ... call open: typed here for what open returns.
    def get(self, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.open(*args, method="GET", **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.open(*args, method="POST", **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.open(*args, method="PUT", **kwargs)

    def patch(self, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.open(*args, method="PATCH", **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.open(*args, method="DELETE", **kwargs)


def with_twilio(settings: Settings, auth_token: str) -> Settings:
    """Settings with Twilio credentials: webhooks are then signed with `auth_token`."""
    return settings.model_copy(
        update={"twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": auth_token}
    )


def post_signed(
    client: FlaskClient,
    auth_token: str,
    path: str,
    payload: dict[str, str] | list[tuple[str, str]],
    **headers: str,
) -> TestResponse:
    """POST a Twilio webhook signed with `auth_token`, as Twilio would.

    An inbound SMS is then matched as the worker would, right after the answer: the jobs the
    webhook queued on `inbound` run in a real RQ worker (`run_inbound_jobs`).
    """
    body, signed = payloads.signed(auth_token, BASE_URL, path, payload)
    answer = client.post(path, data=body, headers={**signed, **headers})
    if path == "/twilio/sms":
        run_inbound_jobs(client.application.extensions["bridge"])
    return answer


def run_inbound_jobs(runtime: Runtime) -> int:
    """Run the inbound SMS jobs waiting in Redis in an RQ worker, in burst mode; how many ran."""
    queue = Queue(queues.INBOUND, connection=runtime.redis)
    try:
        waiting = queue.count
    except redis.ConnectionError:
        return 0  # Redis is down (outage tests): nothing was queued there
    if waiting:
        previous = context.installed()
        context.install(runtime)
        try:
            Worker([queue], connection=runtime.redis).work(burst=True, logging_level="WARNING")
        finally:
            if previous is None:
                context.uninstall()
            else:
                context.install(previous)
    return waiting


def as_json(response: BaseModel) -> dict[str, Any]:
    """A response model as the API sends it: its JSON, read back."""
    body: dict[str, Any] = json.loads(response.model_dump_json(by_alias=True))
    return body
