"""Property-based runs of the API against its own /openapi.json (schemathesis, over WSGI).

The first run aims generated requests at objects that exist and at ids that do not, operation by
operation. The second is `st run --checks all` in process: schemathesis's own engine, every check
and every phase (examples, coverage, fuzzing, stateful, the last following the description's
links), must find nothing: the description accepts exactly what the server accepts. Bounded in
examples, both take seconds.
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
from schemathesis.core.result import Err, Ok
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_for

from bridge.db import transaction
from bridge.events import contact_object, record_event
from bridge.runtime import Runtime
from bridge.settings import Settings
from tests import factories
from tests.factories import JsonClient
from tests.webhooks import schemathesis_hooks
from tests.webhooks.conftest import serving
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
    client = JsonClient(app)
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
    endpoint = client.post(
        "/v1/webhook_endpoints",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]},
        headers=headers,
    ).json
    with transaction(unlimited.sessions) as session:
        event = record_event(session, org.id, "contact.opted_out", contact_object(session, contact))
    ids = {
        "endpoint_id": endpoint["id"],
        "event_id": event.id,
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
    results = list(schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)]
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == 36
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


# What `st run --checks all` runs. object_level_authorization runs too but needs a second identity
# to compare with; tests/webhooks/test_api_isolation.py probes every operation across organizations.
ALL_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
    "positive_data_acceptance", "missing_required_header", "unsupported_method",
    "allow_header_conformance", "use_after_free", "ensure_resource_availability", "ignored_auth",
    "object_level_authorization",
}  # fmt: skip


def _run_all_checks(
    base_url: str, headers: dict[str, str], examples: int = 20, steps: int = 20
) -> dict[str, Any]:
    """`st run --checks all` against the app: what it found, and how far it reached."""
    schemathesis_hooks.register()  # `format: phone`: valid numbers, as the description means
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261201,
            "cache": {"enabled": False},  # no state kept between runs, none left in the tree
            "workers": 1,
            "headers": headers,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": examples, "database": "none"},
            "phases": {"stateful": {"max-steps": steps}},
        }
    )
    project = config.projects.override
    project.checks.update(included_check_names=["all"])
    project.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    found: dict[str, Any] = {
        "failures": [], "errors": [], "checks": set(), "operations": set(), "links": set()
    }  # fmt: skip
    for event in engine_for(schema).execute():
        if isinstance(event, events.PhaseStarted) and event.payload is not None:
            found["transitions"] = event.payload.transitions_total
        elif isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    found["checks"].add(check.name)
                    if check.status != Status.SUCCESS and check.failure_info is not None:
                        failure = check.failure_info.failure
                        found["failures"].append(
                            f"{failure.title} ({check.name}) in {failure.operation}: "
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
            for node in event.recorder.cases.values():
                found["operations"].add(node.value.operation.label)
                if node.transition is not None and node.is_transition_applied:
                    found["links"].add(node.transition.id)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found["errors"].append(str(getattr(event, "info", event)))
    return found


@pytest.mark.slow
def test_every_check_and_every_phase_find_nothing(fuzzed: tuple[Flask, dict]) -> None:
    app, seed = fuzzed
    # Over real HTTP, as `st run` talks to a server: schemathesis's engine passes socket options
    # (max_redirects) that its in-process WSGI transport does not take.
    with serving(app, threaded=False) as base_url:
        found = _run_all_checks(base_url, seed["headers"])
    assert found["errors"] == []
    assert found["failures"] == [], "\n\n".join(found["failures"])
    assert len(found["operations"]) == 36  # every operation: 23, 10 of events out, 3 of keys
    assert found["checks"] >= ALL_CHECKS
    # The stateful phase follows the declared links from what it creates to what it can do next.
    assert len(found["links"]) >= 25, sorted(found["links"])
