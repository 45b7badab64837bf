"""Fixtures for the console: the app on the test's runtime, and a dispatcher signed in to it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from bridge.actors import Actor
from bridge.db import transaction, utcnow
from bridge.messages import Draft, post_message
from bridge.models import Contact, Organization
from bridge.runtime import Runtime
from bridge.settings import Settings
from bridge.threads import create_thread
from tests import factories
from webhooks import create_app

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: TestResponse) -> str:
    """The CSRF token a console page carries in its forms."""
    match = _TOKEN.search(page.get_data(as_text=True))
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


@pytest.fixture
def app(runtime: Runtime, redis_client: redis.Redis) -> Iterator[Flask]:
    """The app on the test's runtime, with an empty Redis for its sessions."""
    yield create_app(runtime=runtime)


@dataclass
class Dispatcher:
    """A browser-like client of the console for one organization."""

    client: FlaskClient
    organization: Organization
    key: str

    def sign_in(self, key: str | None = None) -> TestResponse:
        page = self.client.get("/console/sign-in")
        return self.client.post(
            "/console/sign-in",
            data={"api_key": self.key if key is None else key, "csrf_token": csrf_token(page)},
        )

    def post(self, path: str, data: dict[str, str] | None = None, from_page: str = "/console/"):
        token = csrf_token(self.client.get(from_page))
        return self.client.post(path, data={**(data or {}), "csrf_token": token})

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.client.get(path, **kwargs)


def dispatcher(app: Flask, runtime: Runtime, name: str = "Acme Logistics") -> Dispatcher:
    with transaction(runtime.sessions) as session:
        org, key = factories.organization(session, runtime.settings, name)
    return Dispatcher(app.test_client(), org, key)


@pytest.fixture
def desk(app: Flask, runtime: Runtime) -> Dispatcher:
    """A dispatcher of one organization, signed in as the organization."""
    d = dispatcher(app, runtime)
    assert d.sign_in().status_code == 303
    return d


@dataclass
class Conversation:
    channel_id: str
    thread_id: str
    contacts: list[Contact]


def conversation(
    session: Session,
    settings: Settings,
    org: Organization,
    resource_id: str,
    names: tuple[str, ...] = ("Ann Ames",),
    messages: int = 1,
    replies: int = 1,
) -> Conversation:
    """A thread with contacts, `messages` from the organization and `replies` from a contact."""
    contacts = [factories.contact(session, settings, org, n) for n in names]
    actor = Actor.organization(org.id)
    thread, _ = create_thread(
        session,
        settings,
        actor,
        resource_id,
        name=resource_id,
        subscribers=[c.id for c in contacts],
    )
    channel_id = ""
    for i in range(messages):
        posted = post_message(
            session, settings, actor, thread.id, Draft.of(f"Update {i} on {resource_id}")
        )
        channel_id = posted.message.channel_id or ""
    for i in range(replies):
        factories.contact_reply(session, org, contacts[0].id, channel_id, f"Reply {i}\nmore")
    return Conversation(channel_id, thread.id, contacts)


def scheduled(session: Session, settings: Settings, org: Organization, thread_id: str, text: str):
    """A message from the organization to be published in an hour."""
    later = int((utcnow() + timedelta(hours=1)).timestamp())
    actor = Actor.organization(org.id)
    return post_message(
        session, settings, actor, thread_id, Draft.of(text, publish_to_channel_at=later)
    ).message


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test: fixtures tell a failure by it (for screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
