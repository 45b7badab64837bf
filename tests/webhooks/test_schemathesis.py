"""A property-based run of the API against its own /openapi.json (schemathesis, over WSGI).

Every operation gets generated requests, valid ones and (separately) invalid ones, both aimed at
objects that exist and at ids that do not. No answer may be a 500, and every answer must be one the
description documents, with the body its schema says. Bounded in examples: the run takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from bridge.db import transaction
from bridge.runtime import Runtime
from bridge.settings import Settings
from tests import factories
from webhooks import create_app

POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A body over 64 KiB is refused unread (413): a rejection like the others.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 409, 413, 415, 422, 429],
            }
        }
    }
)
NEGATIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """One backend is enough here: the API code is the same on both."""
    return sqlite_url


@pytest.fixture
def fuzzed(settings: Settings, runtime: Runtime, redis_client: Any) -> Iterator[tuple[Flask, dict]]:
    """The app with no rate limit; an organization with a user, a contact, a thread, messages,
    and a second API key."""
    unlimited = Runtime(settings.model_copy(update={"api_rate_limit": 0}))
    app = create_app(runtime=unlimited)
    with transaction(unlimited.sessions) as session:
        org, key = factories.organization(session, unlimited.settings)
        user = factories.user(session, unlimited.settings, org)
        contact = factories.contact(session, unlimited.settings, org)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    thread = client.post(
        "/v1/threads", json={"resource_id": "order-1", "subscribers": [contact.id]}, headers=headers
    ).json
    client.post(f"/v1/threads/{thread['id']}/messages", json={"text": "now"}, headers=headers)
    later = client.post(
        f"/v1/threads/{thread['id']}/messages",
        json={"text": "later", "publish_to_channel_at": int(time.time()) + 3600},
        headers=headers,
    ).json
    ids = {
        "thread_id": thread["id"],
        "channel_id": later["channel_id"],
        "message_id": later["id"],
        "user_id": user.id,
        "contact_id": contact.id,
        "subscriber_id": contact.id,
        "key_id": client.post("/v1/api_keys", json={"label": "spare"}, headers=headers).json["id"],
    }
    yield app, {"headers": headers, "ids": ids}
    unlimited.close()


def _run(strategy: Any, checks: list[Any], examples: int) -> None:
    @given(case=strategy)
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(checks=checks)

    check()


@pytest.mark.slow
def test_the_api_keeps_to_its_description(fuzzed: tuple[Flask, dict]) -> None:
    app, seed = fuzzed
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 26
    for op in operations:
        names = [p.name for p in op.path_parameters]
        existing = {name: seed["ids"][name] for name in names} or None
        for path_parameters, mode, checks, examples in [
            (existing, GenerationMode.POSITIVE, POSITIVE_CHECKS, 25),
            (None, GenerationMode.POSITIVE, POSITIVE_CHECKS, 8),
            (existing, GenerationMode.NEGATIVE, NEGATIVE_CHECKS, 12),
        ]:
            if mode is GenerationMode.POSITIVE and path_parameters is None and existing is None:
                continue  # no ids to vary: the first pass covered it
            strategy = op.as_strategy(
                generation_mode=mode, headers=seed["headers"], path_parameters=path_parameters
            )
            _run(strategy, checks, examples)
