"""Webhook endpoints: registration rules, the 10-endpoint cap, rotation, enabling, deleting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bridge.db import transaction, utcnow
from bridge.errors import Conflict, NotFound, ValidationError
from bridge.models import EventDelivery
from bridge.runtime import Runtime
from bridge.webhook_endpoints import (
    MAX_ENDPOINTS,
    ROTATION_OVERLAP,
    check_url,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    signing_secrets,
    update_endpoint,
)
from tests import factories
from tests.bridge.test_events import _one_event

URL = "http://127.0.0.1:9/hooks"


@pytest.mark.parametrize(
    ("events", "param"),
    [
        ([], "events"),
        (["message.deleted"], "events[0]"),
        (["message.created", "nope"], "events[1]"),
        (["*", "message.created"], "events"),
    ],
)
def test_event_types_are_checked(runtime: Runtime, events: list[str], param: str) -> None:
    org = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session, pytest.raises(ValidationError) as bad:
        create_endpoint(session, runtime.settings, org.id, URL, events)
    assert bad.value.param == param


def test_at_most_ten_endpoints_per_organization(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    other = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        for _ in range(MAX_ENDPOINTS):
            create_endpoint(session, runtime.settings, org.id, URL, ["*"])
    with transaction(runtime.sessions) as session, pytest.raises(Conflict):
        create_endpoint(session, runtime.settings, org.id, URL, ["*"])
    with transaction(runtime.sessions) as session:
        create_endpoint(session, runtime.settings, other.id, URL, ["*"])
        rows, more = list_endpoints(session, org.id, 50, None)
    assert len(rows) == MAX_ENDPOINTS and not more


def test_production_refuses_http_and_private_addresses(runtime: Runtime) -> None:
    production = runtime.settings.model_copy(update={"env": "production"})
    for url in ("http://8.8.8.8/", "https://127.0.0.1/", "https://10.0.0.8/", "https://[::1]/"):
        with pytest.raises(ValidationError) as bad:
            check_url(url, production)
        assert bad.value.param == "url"
    assert check_url(" https://8.8.8.8/hooks ", production) == "https://8.8.8.8/hooks"
    for url in ("", "https://8.8.8.8/a b", "https://8.8.8.8/" + "a" * 2050):
        with pytest.raises(ValidationError):
            check_url(url, runtime.settings)


def test_rotation_signs_with_both_secrets_for_24_hours(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        endpoint = create_endpoint(session, runtime.settings, org.id, URL, ["*"])
        old = endpoint.secret
    now = utcnow()
    with transaction(runtime.sessions) as session:
        rotated, new = rotate_secret(session, org.id, endpoint.id, now)
    assert new != old and new.startswith("whsec_")
    assert signing_secrets(rotated, now) == [new, old]
    assert signing_secrets(rotated, now + ROTATION_OVERLAP - timedelta(seconds=1)) == [new, old]
    assert signing_secrets(rotated, now + ROTATION_OVERLAP) == [new]


def test_disabling_cancels_open_deliveries_and_enabling_clears_the_reason(
    runtime: Runtime,
) -> None:
    org = factories.committed_organization(runtime)
    endpoint, _ = _one_event(runtime, org.id)
    with transaction(runtime.sessions) as session:
        update_endpoint(session, runtime.settings, org.id, endpoint.id, {"enabled": False})
        statuses = set(session.execute(select(EventDelivery.status)).scalars())
    assert statuses == {"canceled"}
    with transaction(runtime.sessions) as session:
        row = get_endpoint(session, org.id, endpoint.id)
        row.disabled_reason, row.failing_since = "every attempt failed for 5 days", utcnow()
    with transaction(runtime.sessions) as session:
        changed = update_endpoint(
            session,
            runtime.settings,
            org.id,
            endpoint.id,
            {"enabled": True, "description": "orders app", "events": ["message.created"]},
        )
    assert changed.enabled and changed.disabled_reason is None and changed.failing_since is None
    assert changed.description == "orders app" and changed.events == ["message.created"]


def test_deleting_removes_the_endpoint_and_what_it_had(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    endpoint, _ = _one_event(runtime, org.id)
    with transaction(runtime.sessions) as session:
        delete_endpoint(session, org.id, endpoint.id)
    with runtime.sessions() as session:
        assert session.execute(select(func.count()).select_from(EventDelivery)).scalar_one() == 0
        with pytest.raises(NotFound):
            get_endpoint(session, org.id, endpoint.id)


def test_another_organizations_endpoint_is_not_found(runtime: Runtime) -> None:
    org = factories.committed_organization(runtime)
    other = factories.committed_organization(runtime)
    with transaction(runtime.sessions) as session:
        endpoint = create_endpoint(session, runtime.settings, org.id, URL, ["*"])
    with transaction(runtime.sessions) as session:
        for act in (
            lambda: get_endpoint(session, other.id, endpoint.id),
            lambda: rotate_secret(session, other.id, endpoint.id),
            lambda: delete_endpoint(session, other.id, endpoint.id),
            lambda: update_endpoint(session, runtime.settings, other.id, endpoint.id, {}),
        ):
            with pytest.raises(NotFound):
                act()
