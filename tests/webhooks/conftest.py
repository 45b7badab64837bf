"""Fixtures for the web process: the app built on the test's runtime, and its test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge.runtime import Runtime
from webhooks import create_app


@pytest.fixture
def app(runtime: Runtime) -> Iterator[Flask]:
    """The app on the test's runtime (its database is emptied before each test)."""
    app = create_app(runtime=runtime)
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app."""
    return app.test_client()
