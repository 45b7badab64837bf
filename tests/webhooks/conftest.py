"""Fixtures for the web process: the app built on the test's runtime, and its test client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from flask import Flask
from werkzeug.serving import make_server

from bridge.db import transaction
from bridge.runtime import Runtime
from tests import factories
from tests.factories import JsonClient, JsonResponse
from webhooks import create_app


@pytest.fixture
def app(runtime: Runtime) -> Iterator[Flask]:
    """The app on the test's runtime (its database is emptied before each test)."""
    app = create_app(runtime=runtime)
    app.config["TESTING"] = True
    yield app


@contextmanager
def serving(app: Flask, threaded: bool = True) -> Iterator[str]:
    """The app served over real HTTP by werkzeug on a free loopback port: its base URL.

    `threaded`: one thread per request; otherwise the requests are answered one at a time.
    """
    server = make_server("127.0.0.1", 0, app, threaded=threaded)
    thread = threading.Thread(  # shutdown() waits one poll: 20 ms, not the default 0.5 s
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def server_url(app: Flask) -> Iterator[str]:
    """The app served over real HTTP by werkzeug on a free port, one thread per request."""
    with serving(app) as url:
        yield url


@pytest.fixture
def client(app: Flask) -> JsonClient:
    """A test client of the app (its responses' `json` typed for the tests to index)."""
    return JsonClient(app)


@dataclass
class ApiOrg:
    """An organization with an API key, calling the REST API through the test client."""

    client: JsonClient
    organization_id: str
    key: str

    def headers(self, as_user: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if as_user:
            headers["X-Subscriber-Id"] = as_user
        return headers

    def get(self, path: str, as_user: str | None = None, **kwargs: Any) -> JsonResponse:
        return self.client.get(path, headers=self.headers(as_user), **kwargs)

    def post(
        self, path: str, json: Any = None, as_user: str | None = None, **kw: Any
    ) -> JsonResponse:
        return self.client.post(path, json=json, headers=self.headers(as_user), **kw)

    def patch(
        self, path: str, json: Any = None, as_user: str | None = None, **kw: Any
    ) -> JsonResponse:
        return self.client.patch(path, json=json, headers=self.headers(as_user), **kw)

    def delete(self, path: str, as_user: str | None = None, **kwargs: Any) -> JsonResponse:
        return self.client.delete(path, headers=self.headers(as_user), **kwargs)


def _api_org(client: JsonClient, runtime: Runtime, name: str) -> ApiOrg:
    with transaction(runtime.sessions) as session:
        org, key = factories.organization(session, runtime.settings, name)
    return ApiOrg(client, org.id, key)


@pytest.fixture
def api(client: JsonClient, runtime: Runtime, redis_client: redis.Redis) -> ApiOrg:
    """An organization calling the API (Redis flushed, so its rate-limit window starts empty)."""
    return _api_org(client, runtime, "Acme Logistics")


@pytest.fixture
def other_api(client: JsonClient, runtime: Runtime, redis_client: redis.Redis) -> ApiOrg:
    """A second organization calling the same API."""
    return _api_org(client, runtime, "Other Org")
