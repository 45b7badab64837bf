"""The events API: endpoints with their secret shown once, rotation, attempts, the log, resend."""

from __future__ import annotations

from typing import Any

import pytest
from rq import Queue
from standardwebhooks import Webhook

from bridge.db import transaction, utcnow
from bridge.event_dispatch import dispatch_events
from bridge.event_sending import claim_due, record_attempt
from bridge.events import record_event
from bridge.events_sender import AttemptResult
from bridge.runtime import Runtime
from tests.factories import JsonClient
from tests.webhooks.conftest import ApiOrg
from workers import queues
from workers.enqueue import take_waiting_events

URL = "http://127.0.0.1:9/hooks"


def create(api: ApiOrg, **fields: object) -> dict[str, Any]:
    response = api.post("/v1/webhook_endpoints", {"url": URL, "events": ["*"], **fields})
    assert response.status_code == 201, response.json
    made = response.json
    assert isinstance(made, dict)
    return made


def test_create_shows_the_secret_once(api: ApiOrg) -> None:
    made = create(api, description="Orders app", events=["message.created"])
    assert made["object"] == "webhook_endpoint" and made["id"].startswith("we_")
    assert made["events"] == ["message.created"] and made["enabled"] is True
    assert made["description"] == "Orders app" and made["disabled_reason"] is None
    Webhook(made["secret"])  # a secret the reference library takes
    shown = api.get(f"/v1/webhook_endpoints/{made['id']}").json
    assert "secret" not in shown
    listed = api.get("/v1/webhook_endpoints").json
    assert listed["object"] == "list" and [e["id"] for e in listed["data"]] == [made["id"]]
    assert "secret" not in listed["data"][0]


def test_rotate_gives_a_new_secret(api: ApiOrg) -> None:
    made = create(api)
    rotated = api.post(f"/v1/webhook_endpoints/{made['id']}/rotate_secret")
    assert rotated.status_code == 200
    assert rotated.json["secret"].startswith("whsec_") and rotated.json["secret"] != made["secret"]


def test_patch_and_delete(api: ApiOrg) -> None:
    made = create(api)
    changed = api.patch(
        f"/v1/webhook_endpoints/{made['id']}",
        {"enabled": False, "events": ["contact.opted_out"], "description": None},
    )
    assert changed.status_code == 200
    assert changed.json["enabled"] is False and changed.json["events"] == ["contact.opted_out"]
    gone = api.delete(f"/v1/webhook_endpoints/{made['id']}")
    assert gone.json == {"object": "webhook_endpoint", "id": made["id"], "deleted": True}
    assert api.get(f"/v1/webhook_endpoints/{made['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://127.0.0.1/x", "events": ["*"]}, "url"),
        ({"url": "http://8.8.8.8/x", "events": ["*"]}, "url"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["message.deleted"]}, "events[0]"),
        ({"url": URL, "events": ["*", "message.created"]}, "events"),
        ({"url": URL}, "events"),
        ({"events": ["*"]}, "url"),
        ({"url": URL, "events": ["*"], "enabled": "yes"}, "enabled"),
        ({"url": URL, "events": ["*"], "secret": "whsec_mine"}, "secret"),
        ({"url": URL, "events": ["*"], "description": "x" * 501}, "description"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: ApiOrg, body: dict[str, object], param: str
) -> None:
    response = api.post("/v1/webhook_endpoints", body)
    assert response.status_code == 422, response.json
    assert response.json["error"]["param"] == param


def test_patching_a_required_field_to_null_is_a_422(api: ApiOrg) -> None:
    made = create(api)
    for field in ("url", "events", "enabled"):
        response = api.patch(f"/v1/webhook_endpoints/{made['id']}", {field: None})
        assert response.status_code == 422 and response.json["error"]["param"] == field


def test_the_eleventh_endpoint_is_a_409(api: ApiOrg) -> None:
    for _ in range(10):
        create(api)
    response = api.post("/v1/webhook_endpoints", {"url": URL, "events": ["*"]})
    assert response.status_code == 409


def _event_with_attempt(runtime: Runtime, org_id: str, endpoint_id: str) -> str:
    with transaction(runtime.sessions) as session:
        event = record_event(session, org_id, "contact.opted_out", {"object": "contact"})
    with transaction(runtime.sessions) as session:
        dispatch_events(session, [event.id], utcnow())
    (claimed,) = claim_due(runtime.sessions, runtime.settings, endpoint_id)
    failed = AttemptResult(False, 500, "HTTP 500", 40, "oops")
    record_attempt(runtime.sessions, claimed, failed, utcnow())
    return event.id


def test_events_attempts_and_resend(api: ApiOrg, runtime: Runtime) -> None:
    made = create(api)
    event_id = _event_with_attempt(runtime, api.organization_id, made["id"])
    with transaction(runtime.sessions) as session:
        opted_in = record_event(
            session, api.organization_id, "contact.opted_in", {"object": "contact"}
        ).id
    listed = api.get("/v1/events").json
    assert [e["id"] for e in listed["data"]] == [opted_in, event_id]
    filtered = api.get("/v1/events?type=contact.opted_out").json
    assert [e["id"] for e in filtered["data"]] == [event_id]
    page = api.get(f"/v1/events?limit=1&before={opted_in}").json
    assert [e["id"] for e in page["data"]] == [event_id] and page["has_more"] is False
    assert api.get("/v1/events?type=nope").json["error"]["param"] == "type"
    event = api.get(f"/v1/events/{event_id}").json
    assert event["object"] == "event" and event["data"] == {"object": {"object": "contact"}}

    attempts = api.get(f"/v1/webhook_endpoints/{made['id']}/attempts").json
    (attempt,) = attempts["data"]
    assert attempt["event_id"] == event_id and attempt["status_code"] == 500
    assert attempt["response_body"] == "oops" and attempt["next_retry_at"] is not None

    resent = api.post(f"/v1/events/{event_id}/resend")
    assert resent.status_code == 202 and resent.json["id"] == event_id
    jobs = Queue(queues.EVENTS, connection=runtime.redis).get_jobs()
    # The app queues the dispatch of events its runtime's commits record (one job for both
    # commits' events, which wait in order for it), then the resend's drain.
    assert [(j.func_name, j.args) for j in jobs] == [
        ("workers.events.dispatch", ()),
        ("workers.events.deliver_events", (made["id"],)),
    ]
    assert take_waiting_events(runtime.redis) == [event_id, opted_in]


def test_another_organizations_endpoints_and_events_are_404(
    api: ApiOrg, other_api: ApiOrg, runtime: Runtime, client: JsonClient
) -> None:
    made = create(api)
    event_id = _event_with_attempt(runtime, api.organization_id, made["id"])
    endpoint = f"/v1/webhook_endpoints/{made['id']}"
    for response in (
        other_api.get(endpoint),
        other_api.patch(endpoint, {"enabled": False}),
        other_api.delete(endpoint),
        other_api.post(f"{endpoint}/rotate_secret"),
        other_api.get(f"{endpoint}/attempts"),
        other_api.get(f"/v1/events/{event_id}"),
        other_api.post(f"/v1/events/{event_id}/resend"),
    ):
        assert response.status_code == 404, response.json
        assert response.json["error"]["type"] == "not_found"
    assert other_api.get("/v1/events").json["data"] == []
    assert other_api.get("/v1/webhook_endpoints").json["data"] == []
    assert client.get("/v1/events").status_code == 401


def test_the_openapi_document_describes_the_events_api_with_examples(client: JsonClient) -> None:
    spec = client.get("/openapi.json").json
    paths = spec["paths"]
    assert set(paths["/v1/webhook_endpoints/{endpoint_id}"]) == {"get", "patch", "delete"}
    assert "post" in paths["/v1/events/{event_id}/resend"]
    schemas = spec["components"]["schemas"]
    for name in ("WebhookEndpoint", "WebhookEndpointWithSecret", "WebhookAttempt", "Event"):
        assert schemas[name]["examples"], name
    assert schemas["WebhookEndpointCreate"]["examples"]
