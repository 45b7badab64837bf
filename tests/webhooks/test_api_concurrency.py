"""Requests that race, served by a real threaded HTTP server: find-or-create stays one object."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from bridge.db import transaction
from bridge.models import Contact, Thread, ThreadSubscriber
from bridge.runtime import Runtime
from tests import factories
from tests.webhooks.conftest import ApiOrg


def _post(
    url: str, key: str, body: dict[str, Any], as_user: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if as_user:
        headers["X-Subscriber-Id"] = as_user
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _race(
    url: str, key: str, body: dict[str, Any], as_user: str | None = None
) -> list[tuple[int, dict[str, Any]]]:
    start = threading.Barrier(2)

    def send() -> tuple[int, dict[str, Any]]:
        start.wait()
        return _post(url, key, body, as_user)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: send(), range(2)))


def test_two_requests_creating_the_same_contact_at_once_make_one(
    server_url: str, api: ApiOrg, runtime: Runtime
) -> None:
    phones = [factories.phone() for _ in range(5)]
    for phone in phones:
        results = _race(f"{server_url}/v1/contacts", api.key, {"phone": phone, "name": "Racer"})
        assert sorted(status for status, _ in results) == [200, 201], results
        assert results[0][1]["id"] == results[1][1]["id"]
    with runtime.sessions() as session:
        counts = session.execute(select(Contact.phone, func.count()).group_by(Contact.phone)).all()
    assert sorted(counts) == sorted((p, 1) for p in phones)


def test_two_requests_creating_the_same_thread_at_once_make_one(
    server_url: str, api: ApiOrg, runtime: Runtime
) -> None:
    for i in range(5):
        results = _race(f"{server_url}/v1/threads", api.key, {"resource_id": f"race-{i}"})
        assert sorted(status for status, _ in results) == [200, 201], results
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Thread)) == 5


def test_a_new_user_posting_twice_at_once_is_subscribed_once(
    server_url: str, api: ApiOrg, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        org = session.get_one(factories.Organization, api.organization_id)
        users = [factories.user(session, runtime.settings, org, f"Racer {i}").id for i in range(5)]
    assert _post(f"{server_url}/v1/threads", api.key, {"resource_id": "busy"})[0] == 201
    for user_id in users:
        results = _race(
            f"{server_url}/v1/threads/thrd_busy/messages", api.key, {"text": "hi"}, user_id
        )
        assert [status for status, _ in results] == [201, 201], results
    with runtime.sessions() as session:
        rows = session.scalars(
            select(ThreadSubscriber.subscriber_id).where(ThreadSubscriber.thread_id == "thrd_busy")
        ).all()
    assert sorted(rows) == sorted([api.organization_id, *users])
