"""Requests that race, served by a real threaded HTTP server: find-or-create stays one object."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from bridge.models import Contact, Thread
from bridge.runtime import Runtime
from tests import factories
from tests.webhooks.conftest import ApiOrg


@pytest.fixture
def server_url(app: Flask) -> Iterator[str]:
    """The app served over HTTP by werkzeug, one thread per request."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def _post(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _race(url: str, key: str, body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    start = threading.Barrier(2)

    def send() -> tuple[int, dict[str, Any]]:
        start.wait()
        return _post(url, key, body)

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
